"""Time to a refusal (issue #20, item 4): ``python -m lth.run`` with one wrong setting, wall time from the
process's start to its exit with status 2, the minimum over interleaved repeats; and whether torch was
imported before the refusal.

    python -m benchmarks.refusal [--repeats 5]

Every refusal must come before torch and Lightning are imported (issue #20): the settings' (schema, a
key that is not read, a rule, Hydra's own errors) and those about the data (sizes, files), the model
against the data and the pruning plan (lth.data.facts, lth.models.shapes) and the machine (lth.machine;
trainer=gpu is a refusal only on a machine without a CUDA GPU).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BASE = ["experiment=quickstart", "logger=none", "trainer=cpu"]
CASES = {
    "--help": ["--help"],
    "schema (seed=1.5)": ["seed=1.5"],
    "not read (+prune.rate=0.5)": ["+prune.rate=0.5"],
    "rule (rewind >= iterations)": ["rewind_iteration=99999"],
    "Hydra (model=nope)": ["model=nope"],
    "unknown key": ["optimizer.weight_decy=0.1"],
    "data size (batch 5000)": ["train.batch_size=5000"],
    "data size (mnist val 70000)": ["data=mnist", "data.val_size=70000"],
    "data files (mnist missing)": ["data=mnist", "data.root=/nonexistent/lth-data", "data.download=false"],
    "data files (imagefolder, no path)": ["data=imagefolder"],
    "model vs data (vgg11 on digits)": ["model=vgg11"],
    "exempt matches nothing": ["model.exempt=[zzz]"],
    "plan prunes every weight": ["prune=global", "prune.rate=0.99", "prune.rounds=4"],
    "machine (trainer=gpu)": ["trainer=gpu"],
    "Lightning strategy (dpp)": ["trainer.strategy=dpp"],
    "Lightning precision (bogus)": ["trainer.precision=bogus"],
    "compiler (CXX missing)": ["optimizer.compile=true"],
}
ENV = {"compiler (CXX missing)": {"CXX": "/nonexistent/g++"}}
PROBE = ("import sys, lth.run; sys.argv = ['lth.run', *sys.argv[1:]]\n"
         "try:\n    lth.run.main()\nexcept SystemExit as e:\n    code = e.code\n"
         "print('TORCH' if {'torch', 'pytorch_lightning'} & set(sys.modules) else 'NO-TORCH', file=sys.stderr)")


def wall(args: list[str], env: dict) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lth.run", *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "WANDB_MODE": "disabled", **env})
    return time.perf_counter() - start, proc.returncode


def torch_imported(args: list[str], env: dict) -> bool:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **env})
    return "NO-TORCH" not in proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    repeats = parser.parse_args().repeats
    times: dict[str, list[float]] = {name: [] for name in CASES}
    codes: dict[str, int] = {}
    for _ in range(repeats):  # interleaved: the machine's load falls on every case alike
        for name, args in CASES.items():
            seconds, codes[name] = wall([*BASE, *args] if args != ["--help"] else args, ENV.get(name, {}))
            times[name].append(seconds)
    print(f"{'case':34s} {'exit':>4s} {'min s':>7s}  torch before the answer")
    for name, args in CASES.items():
        imported = torch_imported([*BASE, *args] if args != ["--help"] else args, ENV.get(name, {}))
        print(f"{name:34s} {codes[name]:4d} {min(times[name]):7.2f}  {'yes' if imported else 'no'}")
    python = min(time_python() for _ in range(repeats))
    print(f"{'(python -c pass)':34s} {'':4s} {python:7.2f}")


def time_python() -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"])
    return time.perf_counter() - start


if __name__ == "__main__":
    main()
