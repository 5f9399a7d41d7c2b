"""A level's trainings in worker processes (``parallel_branches=N``).

Once a level's masks and start states are drawn, its branches (ticket, controls, instability copy)
are independent trainings. :class:`BranchPool` trains them in ``N`` worker processes, started once
per experiment (``spawn``: safe with CUDA and OpenMP), each loading the data itself and running the
same :class:`lth.training.round.RoundTrainer` as a sequential run, with the same number of torch
threads per network (``trainer.torch_threads``): the results are bit-identical to
``parallel_branches=1`` (tested). Every worker draws its own progress bar, one line each.

Signals: SIGINT from a terminal reaches every process of the group; each worker saves its round
(``SaveOnSignal``) and stops. A SIGTERM sent to the parent alone (a scheduler, ``kill``) is forwarded
to the workers. The parent waits until each has saved, then raises one :class:`Interrupted`.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
import signal
import time

from lth.signals import SIGNALS, Interrupted

log = logging.getLogger("lth")

_worker: dict = {}  # this worker's Lottery, slot, and a signal received outside a training


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


AUTO_MIN_ITERATIONS = 1000  # shorter trainings: starting the workers costs more than it saves


def parallel_workers(cfg) -> int:
    """``parallel_branches``: an integer, or ``auto`` (the default): the usable CPU cores divided by
    ``trainer.torch_threads``, so that every worker has its torch threads on cores of its own (on a
    GPU, each worker also needs a core to drive it), for trainings of at least 1,000 iterations
    (below that, 1: a worker takes seconds to start). 1 under DDP (several devices per network)."""
    devices = cfg.trainer.get("devices", 1)
    if devices not in (1, "1") or "ddp" in str(cfg.trainer.get("strategy", "auto")):
        return 1
    if multiprocessing.current_process().daemon:  # e.g. a launcher's worker: it may not start processes
        return 1
    value = cfg.get("parallel_branches", "auto")
    if value in (None, "auto"):
        if int(cfg.train.iterations) - int(cfg.get("rewind_iteration", 0)) < AUTO_MIN_ITERATIONS:
            return 1
        return max(1, usable_cores() // max(1, int(cfg.trainer.get("torch_threads", 1))))
    return max(1, int(value))


def _note(signum, frame):
    _worker.setdefault("signal", signum)


def _init(lottery_class, cfg, folder, extra_callbacks, threads: int, slots, log_level: int) -> None:
    """A worker's start: its own ``lottery_class`` (the parent's, passed by reference: this module does not
    import lth.lottery.plan, which imports it) on the same experiment folder."""
    for s in SIGNALS:  # outside a training a signal is noted; SaveOnSignal takes over during one
        signal.signal(s, _note)
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    logging.getLogger("lth").setLevel(log_level)
    from lth.identity import register_resolvers
    from lth.quiet import quiet

    register_resolvers()
    quiet()
    lot = lottery_class(cfg, folder)
    lot.extra_callbacks = list(extra_callbacks)
    lot.trainer.alone = False
    lot.setup_data()
    with slots.get_lock():
        _worker.update(lot=lot, slot=slots.value)
        slots.value += 1


def _ready() -> None:
    """A no-op task: submitted once per worker at the start, so that they start beside the dense round."""
    time.sleep(0.2)  # long enough that each worker takes one


def _train(training, progress, beside: bool = False) -> dict:
    """One training in a worker; its row. ``beside``: its evaluation may take a core of its own (it trains
    in the level's last, partial wave, beside fewer trainings than there are workers)."""
    from lth.progress import LotteryProgressBar

    if "signal" in _worker:
        raise Interrupted(_worker["signal"], f"before round {training.level} {training.branch}")
    lot = _worker["lot"]
    lot.trainer.alone = beside  # eval_beside_training=auto then evaluates in a thread (lth.training.round)
    lot.trainer.progress_bar = lambda t: LotteryProgressBar(progress, t.level, lot.rounds + 1, t.branch,
                                                            t.mask.weights_remaining(), process_position=_worker["slot"])
    return lot.trainer.train(training)


def last_wave_beside(trainings: int, workers: int) -> list[bool]:
    """Which of ``trainings`` (in submission order, on ``workers`` processes of one torch thread) evaluate
    beside their training: those of the last, partial wave, when it leaves a free core for each (three
    trainings on two workers: the third, which otherwise trains while a core idles). Results are the same."""
    last = trainings % workers
    return [last > 0 and i >= trainings - last and workers - last >= last for i in range(trainings)]


class BranchPool:
    """``workers`` processes that train :class:`lth.training.round.Training` s, started at the first use."""

    def __init__(self, lot, workers: int):
        self.lot = lot
        self.workers = workers
        self.executor: cf.ProcessPoolExecutor | None = None

    def warm_up(self) -> list[cf.Future]:
        """Start the workers now (they load torch and the data while the parent trains level 0)."""
        return [self._start().submit(_ready) for _ in range(self.workers)] if self.workers > 1 else []

    def _start(self) -> cf.ProcessPoolExecutor:
        if self.executor is None:
            ctx = multiprocessing.get_context("spawn")
            threads = int(self.lot.cfg.trainer.get("torch_threads", 1))
            self.executor = cf.ProcessPoolExecutor(
                self.workers, mp_context=ctx, initializer=_init,
                initargs=(type(self.lot), self.lot.cfg, self.lot.dir, self.lot.extra_callbacks, threads,
                          ctx.Value("i", 0), logging.getLogger("lth").getEffectiveLevel()))
        return self.executor

    def train(self, trainings: list) -> list[dict]:
        """The rows of ``trainings`` (in their order), trained concurrently."""
        executor = self._start()
        progress = self.lot.progress
        futures = []
        for t, beside in zip(trainings, last_wave_beside(len(trainings), self.workers)):
            progress.training_started(t.level, t.branch, t.mask.weights_remaining())
            futures.append(executor.submit(_train, t, progress, beside))
        try:
            pending = set(futures)
            while pending:  # a timeout, so that a signal's handler runs in the parent promptly
                done, pending = cf.wait(pending, timeout=0.5, return_when=cf.FIRST_EXCEPTION)
                for f, t in zip(futures, trainings):
                    if f in done and f.exception() is None and (t.level, t.branch) in progress.running:
                        row = f.result()
                        progress.training_finished(row.get("train_time_s"), t.level, t.branch)
                if any(f.exception() is not None for f in done):
                    break
        except Interrupted as exc:
            self._stop_all(futures, exc.signum)
            raise self._interrupted(futures, exc.signum) from None
        failed = [f.exception() for f in futures if f.done() and f.exception() is not None]
        if failed:
            first = failed[0]
            self._stop_all(futures, first.signum if isinstance(first, Interrupted) else signal.SIGTERM)
            if isinstance(first, Interrupted):
                raise self._interrupted(futures, first.signum)
            raise first
        return [f.result() for f in futures]

    def _stop_all(self, futures, signum: int) -> None:
        """SIGTERM to every worker (each saves its round), then wait for all of them."""
        for process in list((self.executor._processes or {}).values()):
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 600
        while not all(f.done() for f in futures) and time.monotonic() < deadline:
            cf.wait(futures, timeout=0.5)

    @staticmethod
    def _interrupted(futures, signum: int) -> Interrupted:
        where = [str(f.exception().where) for f in futures if f.done() and isinstance(f.exception(), Interrupted)]
        return Interrupted(signum, "; ".join(w for w in where if w))

    def close(self) -> None:
        if self.executor is not None:
            processes = list((self.executor._processes or {}).values())
            self.executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:
                process.join(timeout=30)
                if process.is_alive():
                    process.terminate()
            self.executor = None
