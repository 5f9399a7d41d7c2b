"""Check every CUDA path of lth on this machine, with one verdict line per path.

    python -m benchmarks.gpu_check                 # on the GPU(s); every path SKIPs without CUDA
    python -m benchmarks.gpu_check --cpu           # the same paths on the CPU, tiniest settings
    python -m benchmarks.gpu_check --data-root ../shared/data --only models,mask_zero

Each path is a ``python -m lth.run ...`` subprocess (``logger=none``, its own output folder, a
per-path timeout), so it checks what a user runs, whatever the code inside looks like. Every run
already checks at the end of each round that pruned weights are exactly 0 (it fails otherwise).

Paths: the quick start (``trainer=gpu``); every model for a few iterations (on the real MNIST /
CIFAR-10 under ``--data-root`` when the files are there, else on random data of the real
shape); ``optimizer.compile=true``; mixed precision (``bf16-mixed``, ``16-mixed``); DDP on all
GPUs (SKIP with one); masked weights staying exactly 0.0 under SGD (momentum, weight decay),
fused Adam and AdamW on the device; the benchmark suite (``benchmarks.run --quick``).

Prints ``PASS|FAIL|SKIP  <path>  <seconds>  <detail>`` per path and a summary line; exits 1
if any path FAILs. Full logs of every path are kept under ``--out`` (default: a temp folder,
printed when something failed). Designed to finish in under five minutes on one H200.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODELS = ["lenet300_100", "conv2", "conv4", "conv6", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet50"]
PATHS = ["quickstart", *(f"model:{m}" for m in MODELS), "compile", "precision:bf16-mixed", "precision:16-mixed",
         "ddp", "mask_zero", "benchmarks"]


@dataclass
class Verdict:
    path: str
    status: str  # PASS | FAIL | SKIP
    detail: str
    seconds: float = 0.0

    def line(self) -> str:
        return f"{self.status:4}  {self.path:22} {self.seconds:6.1f}s  {self.detail}"


@dataclass
class Job:
    path: str
    argv: list[str]  # after "python"
    timeout: int
    run_dir: Path | None = None  # an lth.run output folder whose results.csv is checked
    min_rows: int = 1
    alone: bool = False  # run by itself (timings, all GPUs)
    env: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- random data

def _random_datamodule(shape: tuple[int, ...], dataset: str, train_size: int = 2048):
    from lth.data import OnDeviceDataModule

    class RandomImages(OnDeviceDataModule):
        """Random images of ``shape`` (a real dataset's) with random labels, ``data.val_size`` of them
        held out and twice as many as the test set: exercises every kernel of a model without the
        dataset's files. Accuracy means nothing."""

        name = f"random_{dataset}"
        input_shape = shape
        num_classes = 10
        train_file_size = train_size

        def load_splits(self):
            import torch

            g = torch.Generator().manual_seed(self.split_seed)
            x = torch.randn(train_size, *shape, generator=g)
            y = torch.randint(0, 10, (train_size,), generator=g)
            n_test = 2 * self.val_size
            test = (torch.randn(n_test, *shape, generator=g), torch.randint(0, 10, (n_test,), generator=g))
            return self.with_validation_split((x, y), test)

    RandomImages.__name__ = RandomImages.__qualname__ = f"Random{dataset.upper()}"
    return RandomImages


_SHAPES = {"RandomMNIST": ((1, 28, 28), "mnist"), "RandomCIFAR10": ((3, 32, 32), "cifar10")}


def __getattr__(name: str):
    """``benchmarks.gpu_check.RandomMNIST`` / ``RandomCIFAR10`` for ``data._target_=...``, built on first
    use so that the checker itself starts without importing Lightning."""
    if name in _SHAPES:
        cls = _random_datamodule(*_SHAPES[name])
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def real_data(root: Path | None, dataset: str) -> bool:
    if root is None:
        return False
    if dataset == "mnist":
        return (root / "MNIST" / "raw").is_dir()
    return (root / "cifar-10-batches-py" / "data_batch_1").is_file()


# ----------------------------------------------------------------------------- the mask probe

def mask_probe(device: str, steps: int) -> dict:
    """Train Conv-2 with a 20% random mask under SGD (momentum 0.9, weight decay), fused Adam and
    fused AdamW with lth's mask hook on ``device``; count pruned weights that are not exactly 0."""
    import torch
    import torch.nn.functional as F

    from lth.models import ConvNet
    from lth.pruning import Mask, MaskEnforcer

    dev = torch.device(device)
    optimizers = {
        "sgd(momentum,wd)": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=1e-3),
        "adam(fused)": lambda p: torch.optim.Adam(p, lr=1e-3, fused=True),
        "adamw(fused)": lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-2, fused=True),
    }
    out = {}
    for name, make in optimizers.items():
        torch.manual_seed(0)
        model = ConvNet((3, 32, 32), 10, depth=2).to(dev)
        mask = Mask.dense(model)
        for key in list(mask):
            mask[key] = torch.rand(mask[key].shape) < 0.2
        mask.apply_(model)
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt = make(model.parameters())
        MaskEnforcer(model, mask).attach(opt)
        for _ in range(steps):
            x, y = torch.randn(32, 3, 32, 32, device=dev), torch.randint(0, 10, (32,), device=dev)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if dev.type == "cuda":
            torch.cuda.synchronize()
        params = dict(model.named_parameters())
        nonzero = sum(int(torch.count_nonzero(params[n].detach()[~m.to(dev)])) for n, m in mask.items())
        moved = sum(int(torch.count_nonzero(params[n].detach()[m.to(dev)] != before[n][m.to(dev)]))
                    for n, m in mask.items())
        pruned = sum(int((~m).sum()) for m in mask.values())
        out[name] = {"pruned": pruned, "pruned_nonzero": nonzero, "survivors_moved": moved}
    return out


# ----------------------------------------------------------------------------- the plan

def plan(args, out: Path, cuda_devices: int) -> list[Job]:
    cpu = args.cpu
    py = [sys.executable]
    trainer = ["trainer=cpu"] if cpu else ["trainer=gpu"]
    common = ["logger=none", "trainer.enable_progress_bar=false"]
    tiny = cpu  # the tiniest settings: the script's plumbing, not the device, is under test
    jobs: list[Job] = []

    def run(path: str, overrides: list[str], timeout: int, levels: int, branches: int = 1, **kw) -> Job:
        run_dir = out / path.replace(":", "_")
        argv = ["-m", "lth.run", *overrides, *common, f"hydra.run.dir={run_dir}"]
        return Job(path, argv, timeout, run_dir=run_dir, min_rows=1 + (levels - 1) * branches, **kw)

    qs_its = 20 if tiny else 600
    jobs.append(run("quickstart", ["experiment=quickstart", *trainer, "prune.rounds=2", f"train.iterations={qs_its}",
                                   f"eval_every={qs_its // 2}", f"checkpoint_every={qs_its // 2}"], 240, 3, 2))

    its = 2 if tiny else 20
    val = 32 if tiny else 256  # random data: validation examples (the test set is twice as many)
    for m in MODELS:
        dataset = "mnist" if m.startswith("lenet") else "cifar10"
        if real_data(args.data_root, dataset):
            data = [f"data.root={args.data_root}"]
        else:
            data = [f"data._target_=benchmarks.gpu_check.Random{dataset.upper()}", f"data.val_size={val}",
                    "data.download=false"]
        small = ["train.batch_size=8", "eval_batch_size=64"] if tiny else []
        if m == "resnet50":  # the ImageNet network, checked on CIFAR-shaped data (its pooling takes any size)
            data = ["data=cifar10", *data, "lr_warmup=false"]
        jobs.append(run(f"model:{m}", [f"model={m}", *trainer, *data, *small, "prune.rounds=1",
                                       f"train.iterations={its}", f"eval_every={its}", f"checkpoint_every={its}"],
                        240, 2))

    lenet = ["model=lenet300_100", "data._target_=benchmarks.gpu_check.RandomMNIST", f"data.val_size={val}",
             "data.download=false", "prune.rounds=1", f"train.iterations={10 if tiny else 100}",
             f"eval_every={10 if tiny else 50}", f"checkpoint_every={10 if tiny else 50}"]
    jobs.append(run("compile", [*lenet, *trainer, "optimizer.compile=true"], 420, 2))
    conv = ["model=conv2", "data._target_=benchmarks.gpu_check.RandomCIFAR10", f"data.val_size={val}",
            "data.download=false", "prune.rounds=1", f"train.iterations={its}", f"eval_every={its}",
            f"checkpoint_every={its}", *(["train.batch_size=8", "eval_batch_size=64"] if tiny else [])]
    for precision in ("bf16-mixed", "16-mixed"):
        jobs.append(run(f"precision:{precision}", [*conv, *trainer, f"trainer.precision={precision}"], 240, 2))

    devices = 2 if cpu else cuda_devices
    ddp = ["trainer=ddp", f"trainer.devices={devices}"] + (["trainer.accelerator=cpu"] if cpu else [])
    jobs.append(run("ddp", ["experiment=quickstart", *ddp, "prune.rounds=1", f"train.iterations={qs_its}",
                            f"eval_every={qs_its // 2}", f"checkpoint_every={qs_its // 2}"], 300, 2, 2, alone=True))

    jobs.append(Job("mask_zero", ["-m", "benchmarks.gpu_check", "--mask-probe", "cpu" if cpu else "cuda",
                                  "--probe-steps", "3" if tiny else "50"], 180))
    bench = ["-m", "benchmarks.run", "--quick", "--device", "cpu" if cpu else "cuda", "--json", str(out / "bench.json")]
    if cpu:
        bench += ["--models", "LeNet-300-100", "--threads", "1"]
    jobs.append(Job("benchmarks", bench, 420, alone=True))
    return jobs


# ----------------------------------------------------------------------------- running

_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?")


def _tail(text: str) -> str:
    """The most telling line of a failed command's output: lth's ``error:`` line, else the first
    exception line of a traceback (the cause: later ones are consequences, e.g. the other DDP rank
    seeing its peer die), else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln
    for ln in lines:
        if _EXCEPTION_LINE.match(ln):
            return ln[:300]
    return lines[-1][:300] if lines else "(no output)"


def execute(job: Job, out: Path, env: dict, device_name: str) -> Verdict:
    log = out / f"{job.path.replace(':', '_')}.log"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, *job.argv], cwd=out, env={**env, **job.env}, capture_output=True,
                              text=True, timeout=job.timeout)
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        log.write_text(text)
        return Verdict(job.path, "FAIL", f"timed out after {job.timeout}s (log: {log})", time.perf_counter() - t0)
    seconds = time.perf_counter() - t0
    text = f"$ python {' '.join(job.argv)}\n{proc.stdout}\n{proc.stderr}"
    log.write_text(text)
    if proc.returncode != 0:
        return Verdict(job.path, "FAIL", f"exit {proc.returncode}: {_tail(proc.stdout + proc.stderr)}", seconds)
    if "GPU available: True (cuda), used: False" in text and device_name != "cpu":
        return Verdict(job.path, "FAIL", "ran, but not on the GPU", seconds)
    try:
        return Verdict(job.path, "PASS", describe(job, proc.stdout, device_name), seconds)
    except CheckFailed as exc:
        return Verdict(job.path, "FAIL", str(exc), seconds)


def describe(job: Job, stdout: str, device_name: str) -> str:
    if job.path == "mask_zero":
        result = json.loads(stdout.strip().splitlines()[-1].split("MASK ", 1)[1])
        bad = {k: v for k, v in result.items() if v["pruned_nonzero"] or not v["survivors_moved"]}
        if bad:
            raise CheckFailed(f"pruned weights not 0 or survivors not trained: {bad}")
        return "pruned weights exactly 0 after " + ", ".join(f"{k}" for k in result) + f" on {device_name}"
    if job.path == "benchmarks":
        bench = json.loads((Path(job.argv[job.argv.index("--json") + 1])).read_text())
        rates = bench.get("median_steps_per_s", {})
        parts = [f"{m}: lth {r.get('mask', 0):.0f} steps/s vs hand {r.get('hand', 0):.0f}" for m, r in rates.items()]
        return "; ".join(parts) or "ran"
    rows = _read_rows(job.run_dir / "results.csv") if job.run_dir else []
    if len(rows) < job.min_rows:
        raise CheckFailed(f"results.csv has {len(rows)} rows, expected {job.min_rows}")
    last = rows[-1]
    acc = last.get("final_test_acc", "")
    data = "random data" if "Random" in " ".join(job.argv) else "real data"
    data = "digits" if "experiment=quickstart" in job.argv else data
    return (f"{len(rows)} trainings on {device_name} ({data}), last: round {last.get('round')} {last.get('branch')} "
            f"{float(last.get('weights_remaining', 'nan')):.1f}% weights, test acc {float(acc or 'nan'):.3f}")


class CheckFailed(RuntimeError):
    pass


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run every path on the CPU with the tiniest settings")
    ap.add_argument("--data-root", type=Path, default=os.environ.get("LTH_DATA_DIR"),
                    help="folder with MNIST/ and cifar-10-batches-py/ (default $LTH_DATA_DIR); random data otherwise")
    ap.add_argument("--only", default="", help="comma-separated paths or prefixes, e.g. quickstart,model,mask_zero")
    ap.add_argument("--jobs", type=int, default=None, help="paths run at once (default 4 on a GPU, 1 on the CPU)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the runs and logs (default: a temp folder)")
    ap.add_argument("--mask-probe", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--probe-steps", type=int, default=50, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.mask_probe:
        print("MASK " + json.dumps(mask_probe(args.mask_probe, args.probe_steps)), flush=True)
        return 0

    import torch

    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    n_gpus = torch.cuda.device_count() if cuda else 0
    if args.data_root is not None:
        args.data_root = Path(args.data_root).resolve()
    only = [p.strip() for p in args.only.split(",") if p.strip()]
    selected = [p for p in PATHS if not only or any(p == o or p.startswith(o + ":") or p.startswith(o) for o in only)]

    if not cuda and not args.cpu:
        for p in selected:
            print(Verdict(p, "SKIP", "no GPU").line(), flush=True)
        print(f"gpu_check: 0 PASS, 0 FAIL, {len(selected)} SKIP in {time.perf_counter() - t_start:.1f}s "
              "(no GPU: torch.cuda.is_available() is False; --cpu runs the same paths on the CPU)")
        return 0

    device_name = "cpu" if args.cpu else f"{torch.cuda.get_device_name(0)} x{n_gpus}"
    keep = args.out is not None
    out = (args.out or Path(tempfile.mkdtemp(prefix="lth-gpu-check-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("WANDB_MODE", "disabled")
    jobs = [j for j in plan(args, out, n_gpus) if j.path in selected]

    verdicts: list[Verdict] = []
    skip: dict[str, str] = {}
    if not args.cpu and n_gpus < 2:
        skip["ddp"] = f"{n_gpus} GPU: DDP needs 2 or more"
    if args.cpu:
        skip["precision:16-mixed"] = "16-mixed is CUDA only (bf16-mixed runs on the CPU)"
    if "compile" in selected:
        try:
            from lth.pruning.compiled_optimizer import missing_compiler

            reason = missing_compiler("cpu" if args.cpu else "cuda")
        except Exception as exc:  # pragma: no cover
            reason = f"cannot check for a compiler ({exc})"
        if reason:
            skip["compile"] = reason

    def report(v: Verdict) -> None:
        verdicts.append(v)
        print(v.line(), flush=True)

    def guarded(job: Job) -> Verdict:
        try:
            return execute(job, out, env, device_name)
        except CheckFailed as exc:
            return Verdict(job.path, "FAIL", str(exc))
        except Exception as exc:
            return Verdict(job.path, "FAIL", f"{exc.__class__.__name__}: {exc}")

    print(f"gpu_check on {device_name}: {len(jobs)} paths, logs in {out}", flush=True)
    runnable = []
    for job in jobs:
        if job.path in skip:
            report(Verdict(job.path, "SKIP", skip[job.path]))
        else:
            runnable.append(job)
    together = [j for j in runnable if not j.alone]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs or (1 if args.cpu else 4))) as pool:
        for fut in as_completed([pool.submit(guarded, j) for j in together]):
            report(fut.result())
    for job in (j for j in runnable if j.alone):  # timings and all-GPU runs by themselves
        report(guarded(job))

    counts = {s: sum(v.status == s for v in verdicts) for s in ("PASS", "FAIL", "SKIP")}
    print(f"gpu_check: {counts['PASS']} PASS, {counts['FAIL']} FAIL, {counts['SKIP']} SKIP in "
          f"{time.perf_counter() - t_start:.0f}s on {device_name}", flush=True)
    if counts["FAIL"]:
        print(f"logs of every path: {out}", flush=True)
    elif not keep:
        shutil.rmtree(out, ignore_errors=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
