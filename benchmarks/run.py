"""Benchmarks for issue 5: small networks at the speed of a hand-written training loop.

    python -m benchmarks.run            # full suite (a few minutes on a 2-core CPU)
    python -m benchmarks.run --quick    # fast, CI-able variant (checks it all runs; numbers rough)

Everything is measured side by side in one process with interleaved repetitions, and the
median is reported. Training throughput is steps/s over a fixed number of steps after a
warm-up, on random data of the right shape that lives on the device. Memory of a 10-round
quick-start is measured in a fresh subprocess so that the other benchmarks do not pollute it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from lth.training.evaluation import PeriodicEvaluation, evaluate
from lth.models import ConvNet, LeNet, ResNet
from lth.training.module import LotteryModule, OptimizerSettings, skip_capture_check
from lth.pruning import Mask, prunable_tensors
from lth.training.schedule import LRSchedule

REPO = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------- models


# name: (builder, input shape, batch size, optimizer)
MODELS = {
    "LeNet-300-100": (lambda s, c: LeNet(s, c), (1, 28, 28), 60, OptimizerSettings("adam", lr=1.2e-3)),
    "Conv-2": (lambda s, c: ConvNet(s, c, depth=2), (3, 32, 32), 60, OptimizerSettings("adam", lr=2e-4)),
    "ResNet-20": (lambda s, c: ResNet(s, c, depth=20), (3, 32, 32), 128, OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-4)),
}


def make_model(name: str, seed: int = 0) -> nn.Module:
    build, shape, _, _ = MODELS[name]
    torch.manual_seed(seed)
    return build(shape, 10)


def sparse_mask(model: nn.Module, keep: float = 0.1, seed: int = 0) -> Mask:
    """A random mask keeping ``keep`` of every prunable tensor (about 10% of weights remaining)."""
    gen = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    return Mask({t.name: torch.rand(params[t.name].shape, generator=gen) < keep for t in prunable_tensors(model)})


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_mb() -> tuple[float, float]:
    """(current VmRSS, peak VmHWM) of this process in MiB, from /proc/self/status."""
    vals = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    key, kb = line.split()[:2]
                    vals[key[:-1]] = int(kb) / 1024
    except OSError:
        return float("nan"), float("nan")
    return vals.get("VmRSS", float("nan")), vals.get("VmHWM", float("nan"))


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from lth.identity import register_resolvers
    from lth.run import CONFIG_DIR

    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hcompose("config", overrides=overrides)


def trainer_name(device: torch.device) -> str:
    return "gpu" if device.type == "cuda" else "cpu"


class Data:
    """Random training data of the model's shape, whole on the device."""

    def __init__(self, name: str, device: torch.device, steps_per_epoch: int = 50, batch: int | None = None):
        _, shape, default_batch, _ = MODELS[name]
        batch = batch or default_batch
        gen = torch.Generator().manual_seed(0)
        n = batch * steps_per_epoch
        self.x = torch.randn((n, *shape), generator=gen).to(device)
        self.y = torch.randint(0, 10, (n,), generator=gen).to(device)
        self.batch = batch


# ----------------------------------------------------------------------------- the steps


def hand_loop(name: str, data: Data, device, steps: int, warmup: int) -> tuple[float, float]:
    """A hand-written PyTorch loop: same model, optimizer, batch and on-device data. Returns steps/s."""
    model = make_model(name).to(device)
    opt = MODELS[name][3].build(model.parameters())
    # Lightning's import sets PYTORCH_NVML_BASED_CUDA_CHECK=1 for the whole process, which makes
    # every optimizer.step() on CPU dlopen NVML; a hand loop in a process without Lightning does
    # not pay that, so it gets the same skip as lth (otherwise the comparison would flatter lth).
    skip_capture_check(opt)
    return timed_loop(model, opt, data, device, steps, warmup)


def permuted_batches(data: Data, device):
    """Endless batches gathered from an on-device permutation, a fresh one every epoch."""
    b, n = data.batch, len(data.y)
    gen = torch.Generator(device=device).manual_seed(0)
    while True:
        perm = torch.randperm(n, generator=gen, device=device)
        for i in range(n // b):
            idx = perm[i * b : (i + 1) * b]
            yield data.x[idx], data.y[idx]


def hand_step(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor) -> None:
    """One plain PyTorch training step."""
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def timed_loop(model: nn.Module, opt: torch.optim.Optimizer, data: Data, device, steps: int,
               warmup: int) -> tuple[float, float]:
    """``steps`` plain PyTorch steps on ``permuted_batches``; returns (steps per wall-clock second,
    per CPU second) over the steps after ``warmup``."""
    batches = permuted_batches(data, device)
    t0 = c0 = 0.0
    for i in range(steps):
        if i == warmup:
            sync(device)
            t0, c0 = time.perf_counter(), time.process_time()
        hand_step(model, opt, *next(batches))
    sync(device)
    return (steps - warmup) / (time.perf_counter() - t0), (steps - warmup) / (time.process_time() - c0)


class StepTimer(pl.Callback):
    """Time from the end of optimizer step ``warmup`` to the end of step ``steps`` (both must be
    group boundaries: Lightning's batch-end hooks run once per group of steps)."""

    def __init__(self, warmup: int, steps: int, device):
        self.warmup, self.steps, self.device = warmup, steps, device
        self.t0 = self.t1 = self.c0 = self.c1 = 0.0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.warmup:
            sync(self.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif trainer.global_step == self.steps:
            sync(self.device)
            self.t1, self.c1 = time.perf_counter(), time.process_time()

    def rate(self) -> tuple[float, float]:
        """(steps per wall-clock second, steps per CPU second of this process)"""
        n = self.steps - self.warmup
        return n / (self.t1 - self.t0), n / (self.c1 - self.c0)


def lth_step(name: str, data: Data, device, steps: int, warmup: int, variant: str, tmp: Path,
             progress_bar: bool = False, batch: int | None = None, extra_callbacks: tuple = ()) -> tuple[float, float]:
    """lth's training step: LotteryModule through the real Trainer from ``RoundTrainer.make_trainer``,
    with the callbacks of a round (periodic evaluation, ``SaveOnSignal`` and checkpointing; no
    evaluation or checkpoint falls in the timed window), fed by a BatchStream. ``variant``: mask
    (MaskEnforcer, ~10% remaining), dense (no mask), torch_prune (no MaskEnforcer;
    torch.nn.utils.prune reparametrisation instead); mask_compiled and dense_compiled: mask and
    dense with ``optimizer.compile=true``. ``progress_bar``: Lightning's bar on (a
    ``TQDMProgressBar(refresh_rate=25)`` unless ``extra_callbacks`` holds a progress bar)."""
    from lth.training.interrupt import SaveOnSignal
    from lth.training.lean_trainer import RoundCheckpoint

    from lth.data.stream import BatchStream
    from lth.training.round import RoundTrainer, steps_per_call

    model = make_model(name).to(device)
    mask = sparse_mask(model)
    enforced = None
    settings = MODELS[name][3]
    if variant.endswith("_compiled"):
        settings = dataclasses.replace(settings, compile=True)
        variant = variant.removesuffix("_compiled")
    if variant == "mask":
        mask.apply_(model)
        enforced = mask
    elif variant == "torch_prune":
        import torch.nn.utils.prune as tprune

        modules = dict(model.named_modules())
        for pname, m in mask.items():
            mod_name = pname.rsplit(".", 1)[0]
            tprune.custom_from_mask(modules[mod_name], "weight", m.to(device))
    module = LotteryModule(model, enforced, settings, LRSchedule(), 0, steps)
    cfg = compose(["logger=none", f"trainer={trainer_name(device)}",
                   f"trainer.enable_progress_bar={str(progress_bar).lower()}", "eval_every=100000"])
    timer = StepTimer(warmup, steps, device)
    evaluation = PeriodicEvaluation({"val": (data.x[:10], data.y[:10]), "test": (data.x[:10], data.y[:10])},
                                    every=10**9, end_iteration=10**9, batch_size=1000)
    # the callbacks of RoundTrainer.train, in its order, then the timer
    callbacks = [evaluation, SaveOnSignal(tmp / "ckpt" / "last.ckpt", "during the benchmark"),
                 RoundCheckpoint(dirpath=str(tmp / "ckpt"), filename="last", every_n_train_steps=10**9,
                                 save_top_k=-1, save_last=False, enable_version_counter=False), *extra_callbacks, timer]
    trainer = RoundTrainer(cfg, None).make_trainer(tmp / "branch", steps, callbacks)
    # group size as a round would choose it, with group boundaries at the warm-up and the end
    group = steps_per_call(int(cfg.trainer.steps_per_call), warmup, steps)
    stream = BatchStream(data.x, data.y, data.batch, 0, steps, position=lambda: module.iteration, length=steps,
                         group=group)
    trainer.fit(module, train_dataloaders=stream)
    if variant == "mask":  # semantics check: pruned weights are exactly zero
        assert_pruned_zero(model, mask)
    return timer.rate()


def assert_pruned_zero(model: nn.Module, mask: Mask) -> None:
    """Every pruned weight of ``model`` is exactly 0, wherever Lightning left the model after ``fit``
    (compared on the CPU: the mask is a CPU tensor, the weights may be on the GPU or back)."""
    params = dict(model.named_parameters())
    for pname, m in mask.items():
        assert not params[pname].detach().cpu()[~m.cpu()].any(), f"{pname}: a pruned weight moved"


def stacked_section(device, models: list[str], sizes: list[int], reps: int, quick: bool, tmp: Path) -> dict:
    """(8) LeNet-300-100 networks stacked (``benchmarks.stacked``): network-steps/s per stack size,
    median over ``reps`` repetitions."""
    from benchmarks.stacked import stacked_step

    name = "LeNet-300-100"
    if name not in models or not sizes:
        return {}
    steps, warmup = (20, 5) if quick else ((1000, 100) if device.type == "cuda" else (200, 20))
    data = Data(name, device)
    runs: dict[int, list[float]] = {n: [] for n in sizes}
    for rep in range(reps):
        for n in sizes if rep % 2 == 0 else sizes[::-1]:
            runs[n].append(stacked_step(name, data, device, n, steps + warmup, warmup, tmp / f"stacked-{n}-{rep}")[0])
    return {n: statistics.median(v) for n, v in runs.items()}


def format_stacked_section(stacked: dict, single: float) -> list[str]:
    if not stacked:
        return []
    lines = ["", "(8) LeNet-300-100 networks stacked (one vmapped model; a CUDA graph on CUDA), network-steps/s (median):",
             f"    one network, lth+mask above: {single:,.0f} steps/s"]
    for n, rate in stacked.items():
        lines.append(f"    {n:>3} stacked: {rate:>10,.0f} network-steps/s ({rate / single:.2f}x one network)")
    return lines


# ----------------------------------------------------------------------------- evaluation share


class PaperEvaluation:
    """One paper-protocol evaluation (val 5K + test 10K) of a 10% LeNet-300-100, as
    ``PeriodicEvaluation`` runs it (``lth.training.evaluation.evaluate`` on each split)."""

    def __init__(self, device, batch_size: int):
        self.device, self.batch_size = device, batch_size
        self.model = make_model("LeNet-300-100").to(device)
        sparse_mask(self.model).apply_(self.model)
        gen = torch.Generator().manual_seed(1)
        self.splits = {s: (torch.randn(n, 1, 28, 28, generator=gen).to(device),
                           torch.randint(0, 10, (n,), generator=gen).to(device))
                       for s, n in (("val", 5000), ("test", 10000))}
        self.run()  # warm-up

    def run(self) -> tuple[float, float]:
        """(wall-clock seconds, CPU seconds of this process) of one evaluation."""
        sync(self.device)
        t0, c0 = time.perf_counter(), time.process_time()
        for s in ("val", "test"):
            evaluate(self.model, *self.splits[s], self.batch_size)
        sync(self.device)
        return time.perf_counter() - t0, time.process_time() - c0


def eval_time(device, batch_size: int, reps: int) -> float:
    """Median wall-clock seconds of one paper-protocol evaluation (``PaperEvaluation``)."""
    ev = PaperEvaluation(device, batch_size)
    return statistics.median(ev.run()[0] for _ in range(reps))


# ----------------------------------------------------------------------------- a real round and a level (issue 20)


def data_overrides(data_root: Path | None) -> list[str]:
    """Real MNIST under ``data_root`` when its files are there (validation minima as in a real round),
    else the embedded digits of the quick start (the same network, smaller splits)."""
    if data_root is not None and (Path(data_root) / "MNIST").exists():
        return ["data=mnist", f"data.root={Path(data_root).resolve()}", "data.download=false"]
    return ["data=digits"]


def round_config(device, data_root, iterations: int, *extra: str):
    return compose(["model=lenet300_100", *data_overrides(data_root), "logger=none", f"trainer={trainer_name(device)}",
                    "trainer.enable_progress_bar=false", f"train.iterations={iterations}", "eval_every=100",
                    f"checkpoint_every={iterations}", *extra])


class TimedEvaluation:
    """Wall-clock time spent in ``lth.training.evaluation.evaluate`` (patched in while active)."""

    def __init__(self, device):
        import lth.training.evaluation as ev

        self.ev, self.device, self.seconds, self.calls = ev, device, 0.0, 0
        self.real = ev.evaluate

    def __enter__(self):
        def timed(*args, **kwargs):
            sync(self.device)
            t0 = time.perf_counter()
            out = self.real(*args, **kwargs)
            sync(self.device)
            self.seconds += time.perf_counter() - t0
            self.calls += 1
            return out

        self.ev.evaluate = timed
        return self

    def __exit__(self, *exc):
        self.ev.evaluate = self.real


ROUND_VARIANTS = {  # (test_curve, eval_beside_training)
    "every point, val+test (before issue 20)": (True, False),
    "test only at new minima (test_curve=false)": (False, False),
    "... and beside training (eval_beside_training=true)": (False, True),
}


def round_share(device, data_root, iterations: int, variant: str, tmp: Path) -> dict:
    """One real LeNet-300-100 round (``RoundTrainer.train``, the paper's protocol, eval_every=100) of
    the dense network from θ0 (level 0: on MNIST its validation loss reaches its minimum within a
    few thousand iterations, as in a paper round) with a ``ROUND_VARIANTS`` evaluation: its wall
    time and the time spent in ``evaluate`` (in the evaluation thread too)."""
    from lth.lottery import Lottery
    from lth.training.round import Training

    test_curve, beside = ROUND_VARIANTS[variant]
    cfg = round_config(device, data_root, iterations, f"test_curve={str(test_curve).lower()}",
                       f"eval_beside_training={str(beside).lower()}")
    lot = Lottery(cfg, tmp / "exp")
    lot.setup_data()
    model = lot.model_at(lot.theta0)
    folder = tmp / "round"
    training = Training(0, "ticket", folder, Mask.dense(model), model, 0, lot.seed)
    with TimedEvaluation(device) as timer:
        t0 = time.perf_counter()
        row = lot.trainer.train(training)
        wall = time.perf_counter() - t0
    return {"wall_s": wall, "eval_s": timer.seconds, "evaluations": timer.calls, "background": beside,
            "test_acc_at_es": row["test_acc_at_es"], "final_test_acc": row["final_test_acc"],
            "es_iteration": row["es_iteration"]}


LEVEL_MODES = {  # (parallel_branches, eval_beside_training); the first is the baseline of the ratios
    "one after another, evaluation inline (before issue 20)": ("1", "false"),
    "one after another, evaluation beside training": ("1", "auto"),
    "parallel_branches=auto (the default)": ("auto", "auto"),
    "parallel_branches=3 (a worker per training)": ("3", "auto"),
}


def level_times(device, data_root, iterations: int, reps: int, tmp: Path) -> dict:
    """Wall time of one level of three trainings (ticket, reinit, random_prune; LeNet-300-100,
    ``iterations`` each) through ``Lottery.train_level`` in each of :data:`LEVEL_MODES`, interleaved
    (the order reversed every other repetition), each repetition in fresh experiment folders that share
    the dense round. Worker processes are started (and waited for) before the timed level, as in an
    experiment where they start beside the dense round; their start is timed apart."""
    from lth.lottery import Lottery

    out = {"times": {m: [] for m in LEVEL_MODES}, "workers": {}, "startup": [], "iterations": iterations,
           "threads": None}
    same = []
    for rep in range(reps):
        rows = {}
        for i, mode in enumerate(list(LEVEL_MODES)[:: 1 if rep % 2 == 0 else -1]):
            workers, beside = LEVEL_MODES[mode]
            cfg = round_config(device, data_root, iterations, "prune.rounds=1", "controls=[reinit,random_prune]",
                               f"parallel_branches={workers}", f"eval_beside_training={beside}")
            out["threads"] = int(cfg.trainer.torch_threads)
            lot = Lottery(cfg, tmp / f"{rep}-{i}" / "exp")
            lot.claim_folder()
            lot.setup_data()
            torch.set_num_threads(out["threads"])
            lot.train_level(0)  # the dense round (trained once, then copied from the shared store)
            out["workers"][mode] = lot.pool.workers
            if lot.pool.workers > 1:
                t0 = time.perf_counter()
                for f in lot.pool.warm_up():
                    f.result()
                out["startup"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            rows[mode] = [{k: v for k, v in r.items() if k != "train_time_s"} for r in lot.train_level(1)]
            out["times"][mode].append(time.perf_counter() - t0)
            lot.pool.close()
        same.append(all(r == rows[next(iter(LEVEL_MODES))] for r in rows.values()))
    out["identical_results"] = all(same)
    return out


# ----------------------------------------------------------------------------- memory (subprocess)


def memory_probe(rounds: int, iterations: int, device: torch.device, quick: bool = False) -> dict:
    from lth.lottery import Lottery

    samples: dict[int, float] = {}

    class Probe(Lottery):
        def train_level(self, level):
            out = super().train_level(level)
            samples[level] = rss_mb()[0]
            return out

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    cfg = compose(["experiment=quickstart", "logger=none", f"trainer={trainer_name(device)}",
                   "trainer.enable_progress_bar=false", f"prune.rounds={rounds}", f"train.iterations={iterations}",
                   f"eval_every={max(1, iterations // 2)}", f"checkpoint_every={iterations}",
                   *(["controls=[]"] if quick else [])])
    import logging

    logging.getLogger("lth").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        import contextlib
        import io

        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()):
            Probe(cfg, Path(tmp) / "exp").run()
        wall = time.perf_counter() - t0
    out = {"rounds": rounds, "iterations": iterations, "rss_mb": samples, "peak_rss_mb": rss_mb()[1], "wall_s": wall}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def run_memory_subprocess(rounds: int, iterations: int, device: torch.device, quick: bool = False,
                          threads: int | None = None) -> dict:
    """``memory_probe`` in a fresh process, with the suite's ``--threads`` (two torch threads on a
    2-core machine whose other core is busy can run 10-100x slower: BENCHMARKS.md)."""
    cmd = [sys.executable, "-m", "benchmarks.run", "--memory-probe", str(rounds), str(iterations), "--device", str(device)]
    if quick:
        cmd.append("--quick")
    if threads:
        cmd += ["--threads", str(threads)]
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{proc.stdout}\n{proc.stderr}")
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY ")][-1]
    out = json.loads(line[len("MEMORY "):])
    out["rss_mb"] = {int(k): v for k, v in out["rss_mb"].items()}
    return out


# ----------------------------------------------------------------------------- main


def quiet_lightning() -> None:
    import logging
    import warnings

    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast variant: few steps, one repetition")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--compiled", action="store_true",
                    help="also time lth with optimizer.compile=true (update and mask in one compiled function)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    ap.add_argument("--sections", default="steps,round,level,memory,stacked",
                    help="comma-separated subset of steps (1)-(4), round (6), level (7), memory (5), stacked (8)")
    ap.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                    help="folder with MNIST/ for (6) and (7) (default ../shared/data; else the embedded digits)")
    ap.add_argument("--round-iterations", type=int, default=None, help="(6): iterations of the timed round (4000)")
    ap.add_argument("--level-iterations", type=int, default=None, help="(7): iterations per training (1000)")
    ap.add_argument("--stacked", default=None, metavar="SIZES",
                    help="stack sizes for (8), comma-separated (default: 1,10,16,64 on CUDA, 4 on CPU)")
    ap.add_argument("--memory-probe", nargs=2, type=int, metavar=("ROUNDS", "ITERATIONS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    quiet_lightning()

    if args.memory_probe:
        print("MEMORY " + json.dumps(memory_probe(*args.memory_probe, device, args.quick)), flush=True)
        return 0

    quick = args.quick
    reps = args.reps or (1 if quick else 3)
    # (timed steps, warm-up steps) per model; the big nets are compute-bound, so fewer steps suffice
    if device.type == "cuda":
        plan = {"LeNet-300-100": (400, 50), "Conv-2": (200, 20), "ResNet-20": (100, 10)}
    else:
        plan = {"LeNet-300-100": (400, 20), "Conv-2": (6, 2), "ResNet-20": (4, 1)}
    quick_batch = {}
    if quick:  # correctness run: few steps, and small batches for the conv nets (numbers are not meaningful)
        plan = {k: (max(3, t // 20), max(1, w // 5)) for k, (t, w) in plan.items()}
        quick_batch = {"Conv-2": 8, "ResNet-20": 8}
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    models = [m.strip() for m in args.models.split(",") if m.strip()] if "steps" in sections else []
    variants = ["hand", "mask", "dense", "torch_prune"]
    if args.compiled:
        from lth.pruning.compiled_optimizer import missing_compiler

        reason = missing_compiler(device)
        if reason:
            ap.error(f"--compiled: {reason}")
        variants += ["mask_compiled", "dense_compiled"]

    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "lightning": pl.__version__, "python": platform.python_version(),
        "torch_threads": torch.get_num_threads(), "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(), "quick": quick, "reps": reps,
    }
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names and device.type != "cuda":
            env["device"] = f"CPU: {names[0]} ({os.cpu_count()} cores visible)"
    except OSError:
        pass

    t_start = time.perf_counter()
    rates: dict[str, dict[str, list[float]]] = {m: {v: [] for v in variants} for m in models}
    cpu_rates: dict[str, dict[str, list[float]]] = {m: {v: [] for v in variants} for m in models}
    data = {}
    # (4) evaluation share of a LeNet round, paper protocol (val 5K + test 10K every 100 iterations):
    # timed once per LeNet repetition, between its variants, so that it shares their conditions
    ev_batch = int(compose(["logger=none"]).eval_batch_size)
    paper_eval = PaperEvaluation(device, ev_batch) if "steps" in sections else None
    eval_times: list[tuple[float, float]] = []
    extra: dict = {}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        for m in models:
            data[m] = Data(m, device, batch=quick_batch.get(m))
            steps, warmup = plan[m][0] + plan[m][1], plan[m][1]
            timed = [*variants, "eval"] if m == "LeNet-300-100" else variants
            for rep in range(reps):
                order = timed if rep % 2 == 0 else timed[::-1]  # interleaved, alternating order
                for v in order:
                    if v == "eval":
                        eval_times.append(paper_eval.run())
                        continue
                    if v == "hand":
                        r = hand_loop(m, data[m], device, steps, warmup)
                    else:
                        r = lth_step(m, data[m], device, steps, warmup, v, tmp / f"{m}-{v}-{rep}")
                    rates[m][v].append(r[0])
                    cpu_rates[m][v].append(r[1])
            del data[m]
        if not eval_times and paper_eval is not None:  # no LeNet in --models: time it on its own
            eval_times = [paper_eval.run() for _ in range(1 if quick else max(3, reps))]
        if "round" in sections:  # (6) a real round's evaluation share, test_curve=false against true
            iters = args.round_iterations or (200 if quick else 4000)
            extra["round"] = {"iterations": iters, **{v: [] for v in ROUND_VARIANTS}}
            for rep in range(reps):
                for i, v in enumerate(list(ROUND_VARIANTS)[:: 1 if rep % 2 == 0 else -1]):
                    extra["round"][v].append(round_share(device, args.data_root, iters, v, tmp / f"round-{rep}-{i}"))
        if "level" in sections:  # (7) a level of three branches, in workers against one after another
            extra["level"] = level_times(device, args.data_root, args.level_iterations or (200 if quick else 1000),
                                         reps, tmp / "level")
        if "stacked" in sections and "LeNet-300-100" in models:  # (8) networks stacked (benchmarks.stacked)
            stacked_sizes = args.stacked if args.stacked is not None else \
                ("2" if quick else "1,10,16,64" if device.type == "cuda" else "4")
            extra["stacked"] = stacked_section(device, models, [int(n) for n in stacked_sizes.split(",") if n.strip()],
                                               reps, quick, tmp)
    nan = float("nan")
    eval_s = statistics.median(t[0] for t in eval_times) if eval_times else nan
    eval_cpu_s = statistics.median(t[1] for t in eval_times) if eval_times else nan
    lenet = "LeNet-300-100" in models
    train100_s = 100 / statistics.median(rates["LeNet-300-100"]["mask"]) if lenet else float("nan")
    train100_cpu_s = 100 / statistics.median(cpu_rates["LeNet-300-100"]["mask"]) if lenet else float("nan")
    # (5) memory of a 10-round quick-start
    mem = run_memory_subprocess(2 if quick else 10, 20 if quick else 100, device, quick, args.threads) \
        if "memory" in sections else None
    total = time.perf_counter() - t_start

    med = {m: {v: statistics.median(rs) for v, rs in vs.items()} for m, vs in rates.items()}
    cmed = {m: {v: statistics.median(rs) for v, rs in vs.items()} for m, vs in cpu_rates.items()}
    results = {"env": env, "rates": rates, "cpu_rates": cpu_rates, "median_steps_per_s": med, "median_steps_per_cpu_s": cmed, "eval_s": eval_s, "eval_batch_size": ev_batch,
               "train_100_steps_s": train100_s, "eval_cpu_s": eval_cpu_s, "train_100_steps_cpu_s": train100_cpu_s,
               "eval_times": eval_times, "memory": mem, "suite_wall_s": total, **extra}
    print(format_report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, default=str))
    return 0


def best(values: list[float]) -> float:
    return min(values) if values else float("nan")


def format_report(r: dict) -> str:
    env, med, mem = r["env"], r["median_steps_per_s"], r["memory"]
    lines = [
        f"device: {env['device']}",
        f"torch {env['torch']}, lightning {env['lightning']}, python {env['python']}, "
        f"torch threads {env['torch_threads']} (interop {env['torch_interop_threads']}), "
        f"repetitions {env['reps']} interleaved, medians{' (QUICK: rough numbers)' if env['quick'] else ''}",
    ]
    targets, checks = {}, []
    if med:
        lines += [
            "",
            "(1)-(3) training throughput, steps/s (median) and ratios",
            f"| {'model':<14}| {'hand loop':>10} | {'lth+mask':>10} | {'lth dense':>10} | {'lth+torch.prune':>15} "
            f"| {'lth/hand':>8} | {'mask overhead':>13} | {'torch.prune/hand':>16} |",
            "|" + "|".join("-" * w for w in (15, 12, 12, 12, 17, 10, 15, 18)) + "|",
        ]
    for m, v in med.items():
        ratio = v["mask"] / v["hand"]
        overhead = v["dense"] / v["mask"] - 1
        tp = v["torch_prune"] / v["hand"]
        targets[m] = (ratio, overhead)
        lines.append(f"| {m:<14}| {v['hand']:>10.2f} | {v['mask']:>10.2f} | {v['dense']:>10.2f} | {v['torch_prune']:>15.2f} "
                     f"| {ratio:>7.3f}x | {overhead * 100:>12.1f}% | {tp:>15.3f}x |")
    compiled = {m: v for m, v in med.items() if "mask_compiled" in v}
    if compiled:
        lines += [
            "",
            "    with optimizer.compile=true (lth.pruning.CompiledMaskedOptimizer: update and mask in one compiled function):",
            f"    | {'model':<14}| {'lth+mask':>10} | {'lth dense':>10} | {'lth/hand':>8} | {'mask overhead':>13} "
            f"| {'vs eager lth dense':>18} |",
        ]
        for m, v in compiled.items():
            ratio, overhead = v["mask_compiled"] / v["hand"], v["dense_compiled"] / v["mask_compiled"] - 1
            eager_overhead = v["dense"] / v["mask_compiled"] - 1
            targets[f"{m} (optimizer.compile=true)"] = (ratio, overhead)
            lines.append(f"    | {m:<14}| {v['mask_compiled']:>10.2f} | {v['dense_compiled']:>10.2f} | {ratio:>7.3f}x "
                         f"| {overhead * 100:>12.1f}% | {eager_overhead * 100:>17.1f}% |")
    if med:
        lines += ["", "    the same ratios from the fastest repetition of each (max steps/s: least disturbed by other load):"]
        for m, vs in r["rates"].items():
            b = {v: max(rs) for v, rs in vs.items() if rs}
            lines.append(f"    {m:<14} lth/hand {b['mask'] / b['hand']:.3f}x, mask overhead {(b['dense'] / b['mask'] - 1) * 100:.1f}%")
        lines += ["", "    the same ratios from CPU time of this process (steps per CPU-second; less sensitive to other load):"]
    for m, v in r["median_steps_per_cpu_s"].items():
        lines.append(f"    {m:<14} lth/hand {v['mask'] / v['hand']:.3f}x, mask overhead {(v['dense'] / v['mask'] - 1) * 100:.1f}%, "
                     f"torch.prune/hand {v['torch_prune'] / v['hand']:.3f}x"
                     + (f"; compiled: lth/hand {v['mask_compiled'] / v['hand']:.3f}x, mask overhead "
                        f"{(v['dense_compiled'] / v['mask_compiled'] - 1) * 100:.1f}%" if "mask_compiled" in v else ""))
    round_share = None
    if r["eval_times"]:
        share = r["eval_s"] / r["train_100_steps_s"]  # of the training time
        round_share = r["eval_s"] / (r["train_100_steps_s"] + r["eval_s"])  # of the round's wall time
        lines += [
            "",
            f"(4) one full evaluation (val 5K + test 10K, as with test_curve=true), LeNet-300-100 at 10%, "
            f"eval batch {r['eval_batch_size']}:",
            f"    one evaluation {r['eval_s'] * 1000:.1f} ms; 100 lth training steps {r['train_100_steps_s'] * 1000:.1f} ms; "
            f"evaluation = {share * 100:.1f}% of training time, {round_share * 100:.1f}% of the round (training + evaluation)",
        ]
        if "eval_cpu_s" in r:
            cpu_round_share = r["eval_cpu_s"] / (r["train_100_steps_cpu_s"] + r["eval_cpu_s"])
            lines.append(f"    in CPU time of this process: {r['eval_cpu_s'] * 1000:.1f} ms against "
                         f"{r['train_100_steps_cpu_s'] * 1000:.1f} ms, {cpu_round_share * 100:.1f}% of the round")
    if "round" in r:
        rd = r["round"]
        variants = [v for v in ROUND_VARIANTS if rd.get(v)]
        # the training alone: a round's wall time less the time spent evaluating, where evaluation is in
        # the foreground (the fastest such repetition)
        train_s = best([p["wall_s"] - p["eval_s"] for v in variants for p in rd[v] if not p["background"]])
        lines += ["", f"(6) evaluation share of a real LeNet-300-100 round (RoundTrainer.train, dense, {rd['iterations']} "
                      f"iterations, eval_every=100), fastest of interleaved repetitions; training alone {train_s:.2f}s;",
                  "    share = (round - training alone) / round: the evaluation's cost on the round's wall time"]
        shares = {}
        for v in variants:
            pts = rd[v]
            k = min(range(len(pts)), key=lambda i: pts[i]["wall_s"])
            wall = pts[k]["wall_s"]
            shares[v] = (wall - train_s) / wall
            lines.append(f"    {v:<52} round {wall:.2f}s ({wall / best([p['wall_s'] for p in rd[variants[0]]]):.3f}x), "
                         f"{pts[k]['evaluations']} split passes taking {pts[k]['eval_s']:.2f}s, share {shares[v] * 100:.1f}% "
                         f"(test acc at early stop {pts[k]['test_acc_at_es']:.4f} at {pts[k]['es_iteration']}, "
                         f"final {pts[k]['final_test_acc']:.4f})")
        default = variants[-1]
        checks.append(f"evaluation {shares[default] * 100:.1f}% of a LeNet round, {default.strip('. ')} "
                      f"(<= 15%: {'MET' if shares[default] <= 0.15 else 'NOT MET'})")
    if "level" in r:
        lv = r["level"]
        times = {m: best(ts) for m, ts in lv["times"].items()}
        base = times[next(iter(times))]
        lines += ["", f"(7) one level of three trainings (ticket, reinit, random_prune; LeNet-300-100, {lv['iterations']} "
                      f"iterations each, {lv['threads']} torch thread(s) per network), min over interleaved repetitions:",
                  *(f"    {m:<55} {lv['workers'][m]} worker(s) {t:6.2f}s ({t / base:.3f}x)" for m, t in times.items()),
                  f"    workers' start, once per experiment: {best(lv['startup']):.2f}s; "
                  f"results identical in every mode: {lv['identical_results']}"]
        default = "parallel_branches=auto (the default)"
        checks.append(f"level with {default}: {times[default] / base:.3f}x the branches one after another as before "
                      f"issue 20 (<= 0.75x: {'MET' if times[default] / base <= 0.75 else 'NOT MET'}); "
                      f"{times[default] / times['one after another, evaluation beside training']:.3f}x one after "
                      f"another with evaluation beside training")
    if mem:
        rs = mem["rss_mb"]
        first, last = min(k for k in rs if k >= 1), max(rs)
        growth = rs[last] / rs[first] - 1
        lines += [
            "",
            f"(5) memory, quick-start (experiment=quickstart logger=none prune.rounds={mem['rounds']} "
            f"train.iterations={mem['iterations']}), fresh process, {mem['wall_s']:.1f}s:",
            "    RSS after round (MiB): " + ", ".join(f"{k}: {v:.0f}" for k, v in sorted(rs.items())),
            f"    peak RSS {mem['peak_rss_mb']:.0f} MiB; growth round {first} -> {last}: {growth * 100:+.1f}%"
            + (f"; CUDA max_memory_allocated {mem['cuda_max_allocated_mb']:.1f} MiB" if "cuda_max_allocated_mb" in mem else ""),
        ]
        checks.append(f"memory growth round {first}->{last} {growth * 100:+.1f}% (<= 5%: {'MET' if growth <= 0.05 else 'NOT MET'})")
    if r.get("stacked"):
        lines += format_stacked_section(r["stacked"], (med.get("LeNet-300-100") or {}).get("mask", float("nan")))
    lines += ["", "targets:"]
    for m, (ratio, overhead) in targets.items():
        lines.append(f"    {m}: lth step {ratio:.3f}x hand loop (>= 0.95: {'MET' if ratio >= 0.95 else 'NOT MET'}); "
                     f"mask overhead {overhead * 100:.1f}% (<= 3%: {'MET' if overhead <= 0.03 else 'NOT MET'})")
    if round_share is not None:
        lines.append(f"    (4) a full evaluation every 100 iterations would be {round_share * 100:.1f}% of a LeNet round "
                     f"(test_curve=true)")
    lines += [f"    {c}" for c in checks]
    lines.append(f"suite wall time {r['suite_wall_s']:.0f}s")
    return "\n".join(lines)

if __name__ == "__main__":
    raise SystemExit(main())
