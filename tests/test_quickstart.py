"""The README's quick start, end to end in a temporary folder, as a user runs it."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lth.run", "experiment=quickstart", "trainer.enable_progress_bar=false"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = [p for p in (tmp_path / "outputs" / "runs").iterdir() if not p.name.startswith(".")]  # .dense: the shared dense rounds
    assert len(runs) == 1 and runs[0].name.startswith("experiment=quickstart-")
    exp = runs[0]
    with open(exp / "results.csv") as f:
        rows = list(csv.DictReader(f))
    tickets = [r for r in rows if r["branch"] == "ticket"]
    assert [int(r["round"]) for r in tickets] == list(range(0, 11))  # dense + 10 pruning rounds
    remaining = [float(r["weights_remaining"]) for r in tickets]
    assert remaining[0] == 100.0 and all(a > b for a, b in zip(remaining, remaining[1:]))
    for r in rows:
        for col in ("es_iteration", "test_acc_at_es", "final_test_acc", "min_val_loss"):
            assert r[col] not in ("", "nan"), (r["round"], col)
        assert 0.8 < float(r["test_acc_at_es"]) <= 1.0
    assert {r["branch"] for r in rows} == {"ticket", "reinit"}
    png = (exp / "lottery_ticket.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000
    assert "remaining %" in proc.stdout and "test@es" in proc.stdout  # the printed table
    for level in range(11):
        assert (exp / f"round_{level:02d}" / "mask.pt").exists()
    assert (exp / "theta0.pt").exists() and (exp / "config.yaml").exists()
    wandb_runs = list((exp / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(wandb_runs) == 1 and wandb_runs[0].stat().st_size > 1000
    assert "wandb sync" in proc.stdout + proc.stderr
