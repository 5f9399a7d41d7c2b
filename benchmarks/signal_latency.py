"""How long a SIGTERM takes to stop the quick start: from the signal to the process's exit.

    python -m benchmarks.signal_latency [--tries 5] [--logger none|wandb]

Starts ``python -m lth.run experiment=quickstart`` in a scratch folder; each try waits until the
next level's folder ``round_NN/`` appears, waits 0.1-0.5 s more (the start of a level: the Trainer
starting), sends SIGTERM and times the exit; then re-runs the same command (it continues the
experiment) for the next try. Checks each exit: status 143 and the one ``interrupted:`` line.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_try(folder: Path, level: int, delay: float, logger: str) -> float:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.Popen([sys.executable, "-m", "lth.run", "experiment=quickstart", f"logger={logger}",
                             "trainer.enable_progress_bar=false", f"hydra.run.dir={folder}"], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    target = folder / f"round_{level:02d}"
    while not target.exists():
        if proc.poll() is not None:
            raise SystemExit(f"finished before round {level}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.005)
    time.sleep(delay)
    sent = time.perf_counter()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    took = time.perf_counter() - sent
    lines = [line for line in err.splitlines() if line.strip()]
    ok = proc.returncode == 143 and lines and lines[-1].startswith("interrupted:") and "Traceback" not in err
    print(f"round {level:2d} +{delay:.1f}s: exit {proc.returncode} after {took:5.2f} s"
          f"{'' if ok else '  WRONG: ' + err[-500:]}", flush=True)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tries", type=int, default=5)
    parser.add_argument("--logger", default="none", choices=["none", "wandb"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "exp"
        times = [one_try(folder, 1 + i, 0.1 + 0.1 * (i % 5), args.logger) for i in range(args.tries)]
    times.sort()
    print(f"logger={args.logger}: signal to exit min {times[0]:.2f} s, median {times[len(times) // 2]:.2f} s, "
          f"max {times[-1]:.2f} s over {len(times)} tries")


if __name__ == "__main__":
    main()
