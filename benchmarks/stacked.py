"""Stacked training throughput (issue 23): N networks of one shape as one stacked model.

    python -m benchmarks.stacked --device cuda --sizes 1,10,16,64     # on a GPU
    python -m benchmarks.stacked --sizes 1,4 --steps 200               # on the CPU
    python -m benchmarks.stacked --seeds 5                             # + a seed sweep, stacked or not

Measures lth's real stacked path (``StackedModule`` in the Trainer of ``RoundTrainer.make_trainer``
with the callbacks of a stacked round, fed by ``StackedStream``, every network with its own data
order and a random mask keeping ~10%) in **network-steps per second** (N x optimizer steps per
second), beside lth's single-network step (``benchmarks.run.lth_step``, mask variant) in steps
per second, measured in the same process with interleaved repetitions (median). On CUDA the
stacked step is replayed from a CUDA graph; ``--eager`` also times it without.

``--seeds N``: the wall time of N seed trials of one experiment (``--seed-overrides``, default the
quick start on digits, 2 rounds), trained as one stack per level (``lth.lottery.seeds``, what
``hydra/launcher=lth_seeds`` runs) against one experiment after another (each with its level's
branches stacked, as ``stack_networks=true`` alone), each including its outputs; min over
interleaved repetitions.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.run import MODELS, Data, StepTimer, compose, lth_step, make_model, quiet_lightning, sparse_mask, \
    trainer_name
from lth.data.stream import BatchStream
from lth.training.schedule import LRSchedule


class RandomDataModule:
    """``Data`` behind the one method ``StackedStream`` uses."""

    augment = None

    def __init__(self, data: Data):
        self.data = data

    def train_stream(self, batch_size: int, seed: int, end: int) -> BatchStream:
        return BatchStream(self.data.x, self.data.y, batch_size, seed, end)


def stacked_step(name: str, data: Data, device, n: int, steps: int, warmup: int, tmp: Path,
                 cuda_graph: bool = True) -> tuple[float, float, dict]:
    """(network-steps per wall second, per CPU second, graph stats) of ``n`` stacked networks."""
    from lth.training.interrupt import SaveOnSignal
    from lth.training.lean_trainer import RoundCheckpoint
    from lth.training.round import RoundTrainer, steps_per_call
    from lth.training.stacked import StackedModule
    from lth.training.stacked_eval import StackedEvaluation
    from lth.training.stacked_round import StackedStream

    models = [make_model(name, seed=i) for i in range(n)]
    masks = [sparse_mask(m, seed=i) for i, m in enumerate(models)]
    for m, k in zip(models, masks):
        k.apply_(m)
    module = StackedModule(models, masks, MODELS[name][3], LRSchedule(), 0, steps, shared_data=n == 1,
                           cuda_graph=cuda_graph)
    cfg = compose(["logger=none", f"trainer={trainer_name(device)}", "trainer.enable_progress_bar=false",
                   "eval_every=100000"])
    timer = StepTimer(warmup, steps, device)
    evaluation = StackedEvaluation({"val": (data.x[:10], data.y[:10]), "test": (data.x[:10], data.y[:10])},
                                   every=10**9, end_iteration=10**9, batch_size=1000, n=n)
    callbacks = [evaluation, SaveOnSignal(tmp / "ckpt" / "last.ckpt", "during the benchmark"),
                 RoundCheckpoint(dirpath=str(tmp / "ckpt"), filename="last", every_n_train_steps=10**9,
                                 save_top_k=-1, save_last=False, enable_version_counter=False), timer]
    trainer = RoundTrainer(cfg, None).make_trainer(tmp / "stack", steps, callbacks)
    group = steps_per_call(int(cfg.trainer.steps_per_call), warmup, steps)
    stream = StackedStream(RandomDataModule(data), data.batch, list(range(n)) if n > 1 else [0], steps,
                           position=lambda: module.iteration, length=steps, group=group)
    trainer.fit(module, train_dataloaders=stream)
    module.steps.verify()  # pruned weights of every network are still exactly 0
    wall, cpu = timer.rate()
    stats = {"captures": getattr(module.steps, "captures", 0), "eager_steps": getattr(module.steps, "eager_steps", 0),
             "capture_failed": getattr(module.steps, "failed", None)}
    return n * wall, n * cpu, stats


def measure(name: str, device, sizes: list[int], steps: int, warmup: int, reps: int, eager: bool,
            tmp: Path) -> dict:
    """Median rates over ``reps`` interleaved repetitions: ``single`` (steps/s) and
    ``stacked[n]`` / ``stacked_eager[n]`` (network-steps/s)."""
    data = Data(name, device)
    runs: dict[str, list[float]] = {"single": []}
    kinds = [("stacked", True)] + ([("stacked_eager", False)] if eager and device.type == "cuda" else [])
    for kind, _ in kinds:
        for n in sizes:
            runs[f"{kind}:{n}"] = []
    stats = {}
    for rep in range(reps):
        order = ["single", *[(k, g, n) for k, g in kinds for n in sizes]]
        for item in order if rep % 2 == 0 else order[::-1]:
            if item == "single":
                runs["single"].append(lth_step(name, data, device, steps + warmup, warmup, "mask",
                                               tmp / f"single-{rep}")[0])
                continue
            kind, graph, n = item
            rate, _, st = stacked_step(name, data, device, n, steps + warmup, warmup, tmp / f"{kind}-{n}-{rep}", graph)
            runs[f"{kind}:{n}"].append(rate)
            stats[f"{kind}:{n}"] = st
    return {"median": {k: statistics.median(v) for k, v in runs.items()}, "runs": runs, "stats": stats}


SEED_OVERRIDES = "experiment=quickstart,train.iterations=300,eval_every=50,prune.rounds=2,logger=none"


def seed_sweep(device, seeds: int, overrides: list[str], reps: int, tmp: Path) -> dict:
    """Wall seconds (min over ``reps`` interleaved repetitions) of ``seeds`` trials of one experiment:
    ``separate`` (one experiment after another) and ``stacked`` (their levels as stacks, then each
    experiment's outputs, as ``hydra/launcher=lth_seeds``)."""
    from lth.lottery import Lottery
    from lth.lottery.seeds import train_trials

    cfgs = [compose([*overrides, f"trainer={trainer_name(device)}", "trainer.enable_progress_bar=false",
                     "stack_networks=true", f"seed={s}"]) for s in range(seeds)]
    times: dict[str, list[float]] = {"separate": [], "stacked": []}
    for rep in range(reps):
        for kind in ("separate", "stacked") if rep % 2 == 0 else ("stacked", "separate"):
            folders = [tmp / f"seeds-{kind}-{rep}" / f"seed{s}" for s in range(seeds)]
            t0 = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):  # each experiment's summary table
                if kind == "stacked":
                    train_trials(list(zip(cfgs, folders)))
                for c, f in zip(cfgs, folders):
                    Lottery(c, f).run()
            times[kind].append(time.perf_counter() - t0)
    return {k: min(v) for k, v in times.items()}


def format_stacked(name: str, result: dict, sizes: list[int]) -> str:
    med = result["median"]
    single = med["single"]
    lines = [f"stacked training, {name}: network-steps/s (median), against lth's one network {single:,.0f} steps/s",
             f"| {'networks':>8} | {'stacked':>12} | {'x one network':>13} |"
             + (f" {'stacked, no graph':>17} |" if any(k.startswith("stacked_eager") for k in med) else "")]
    for n in sizes:
        rate = med[f"stacked:{n}"]
        line = f"| {n:>8} | {rate:>12,.0f} | {rate / single:>12.2f}x |"
        if f"stacked_eager:{n}" in med:
            line += f" {med[f'stacked_eager:{n}']:>17,.0f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="LeNet-300-100", choices=list(MODELS))
    ap.add_argument("--sizes", default=None, help="comma-separated stack sizes (default: 1,10,16,64 on CUDA, 1,4 on CPU)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 1000 on CUDA, 200 on CPU)")
    ap.add_argument("--warmup", type=int, default=None)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--eager", action="store_true", help="also time the stacked step without a CUDA graph")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seeds", type=int, default=0, help="also time a sweep of this many seed trials, stacked or not")
    ap.add_argument("--seed-overrides", default=SEED_OVERRIDES, help="the seed trials' experiment (comma-separated)")
    ap.add_argument("--only-seeds", action="store_true", help="time only the seed sweep")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()
    cuda = device.type == "cuda"
    sizes = [int(s) for s in (args.sizes or ("1,10,16,64" if cuda else "1,4")).split(",")]
    steps = args.steps or (1000 if cuda else 200)
    warmup = args.warmup or (100 if cuda else 20)
    t0 = time.perf_counter()
    where = torch.cuda.get_device_name(device) if cuda else f"CPU, {torch.get_num_threads()} torch threads"
    with tempfile.TemporaryDirectory() as tmp:
        if not args.only_seeds:
            result = measure(args.model, device, sizes, steps, warmup, args.reps, args.eager, Path(tmp))
            print(f"device: {where}; torch {torch.__version__}; {args.reps} interleaved repetitions, {steps} timed steps")
            print(format_stacked(args.model, result, sizes))
            print(f"graph captures per run: {result['stats']}")
        if args.seeds:
            sweep = seed_sweep(device, args.seeds, args.seed_overrides.split(","), args.reps, Path(tmp))
            print(f"{args.seeds} seed trials ({args.seed_overrides}) on {where}, min of {args.reps}: one after another "
                  f"{sweep['separate']:.1f}s, stacked (hydra/launcher=lth_seeds) {sweep['stacked']:.1f}s: "
                  f"{sweep['separate'] / sweep['stacked']:.2f}x")
    print(f"{time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
