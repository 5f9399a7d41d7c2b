"""Where an experiment's time goes besides training (issue 20, item 4: "fast starts").

    python -m benchmarks.startup [--device cpu|cuda] [--repeats 3] [--data-root ../shared/data]

Runs ``python -m lth.run model=lenet300_100 controls=[reinit] prune.rounds=1 train.iterations=2000
logger=none`` (the issue's experiment of a dense round and two trainings; ``parallel_branches=1`` so
that everything happens in the timed process) in a fresh process per repeat, with the phases timed
from inside by wrapping lth's own functions (``RUNNER``), and prints the minimum of each phase over
the repeats:

- the interpreter's start and ``import lth.run`` (Hydra, OmegaConf, the schema: what a refusal pays);
- the command's check (every job composed and checked before Hydra starts);
- torch, Lightning and lth's training modules imported (the first import of ``lth.lottery``), and
  on a GPU CUDA's start (``torch.cuda.init`` and a first kernel);
- the data loaded and checked, each network's training (``RoundTrainer.train``, Lightning's
  Trainer included; stacked trainings through ``train_stacked``), results and figures written;
- the rest (Hydra's job set-up, the experiment's files, the exit).

A sweep pays the imports and CUDA's start once (Hydra's launcher runs the jobs in one process); the
rest once per job.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

RUNNER = r"""
import json, os, sys, time
T = {"start": float(os.environ["T_LAUNCH"])}
T["python"] = time.time()
import lth.run
T["import lth.run"] = time.time()
phases = {}

def timed(owner, name, label):
    real = getattr(owner, name)
    def wrapper(*a, **k):
        t0 = time.time()
        try:
            return real(*a, **k)
        finally:
            phases[label] = phases.get(label, 0.0) + time.time() - t0
    setattr(owner, name, wrapper)

timed(lth.run, "check_command", "command checked")
real_run = lth.run._run
def _run(cfg):
    t0 = time.time()
    import torch, pytorch_lightning, lth.lottery.plan, lth.training.round, lth.training.stacked_round
    phases["torch, Lightning, lth imported"] = time.time() - t0
    if cfg.trainer.accelerator in ("gpu", "cuda"):
        t0 = time.time()
        torch.cuda.init()
        torch.ones(1, device="cuda").sum().item()
        phases["CUDA started"] = time.time() - t0
    timed(lth.lottery.plan.Lottery, "setup_data", "data loaded and checked")
    timed(lth.training.round.RoundTrainer, "train", "trainings (Lightning's Trainer included)")
    timed(lth.training.stacked_round, "train_stacked", "trainings (Lightning's Trainer included)")
    timed(lth.lottery.plan, "write_outputs", "results and figures written")
    return real_run(cfg)
lth.run._run = _run
try:
    lth.run.main()
finally:
    T["end"] = time.time()
    print("PHASES " + json.dumps({"T": T, "phases": phases}), file=sys.stderr, flush=True)
"""


def one(device: str, data_root: str, folder: Path, iterations: int = 2000) -> dict:
    args = ["model=lenet300_100", f"data.root={data_root}", "controls=[reinit]", "prune.rounds=1",
            f"train.iterations={iterations}", "logger=none", "parallel_branches=1", f"trainer={'gpu' if device == 'cuda' else 'cpu'}",
            "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"]
    env = {**os.environ, "T_LAUNCH": repr(time.time()), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, env=env, capture_output=True, text=True)
    exited = time.time()
    line = next((ln for ln in proc.stderr.splitlines() if ln.startswith("PHASES ")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"the experiment failed (exit {proc.returncode}): {proc.stderr[-3000:]}")
    got = json.loads(line[len("PHASES "):])
    t, phases = got["T"], got["phases"]
    out = {"interpreter start": t["python"] - t["start"], "import lth.run": t["import lth.run"] - t["python"], **phases}
    out["rest (Hydra's job, the experiment's files, exit)"] = (exited - t["start"]) - sum(out.values())
    out["whole command"] = exited - t["start"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-root", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--iterations", type=int, default=2000, help="per training (the issue's: 2,000)")
    args = parser.parse_args()
    runs = []
    with tempfile.TemporaryDirectory() as scratch:
        for i in range(args.repeats):
            runs.append(one(args.device, args.data_root, Path(scratch) / f"exp{i}", args.iterations))
    whole = min(r["whole command"] for r in runs)
    print(f"one experiment of a dense round and two {args.iterations:,}-iteration trainings (LeNet-300-100, MNIST, "
          f"{args.device}), "
          f"min over {args.repeats} fresh processes:")
    for phase in runs[0]:
        best = min(r.get(phase, 0.0) for r in runs)
        share = "" if phase == "whole command" else f"  {best / whole * 100:5.1f}%"
        print(f"  {phase:<52} {best:7.2f} s{share}")


if __name__ == "__main__":
    main()
