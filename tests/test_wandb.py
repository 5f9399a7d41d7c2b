"""W&B layout read back from the offline run files, and W&B failures that leave results intact."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lth.lottery import Lottery
from tests.conftest import compose_config
from tests.wandb_records import history, run_record, wait_for_exit

TINY = ["experiment=quickstart", "trainer=cpu", "trainer.enable_progress_bar=false", "prune.rounds=1",
        "train.iterations=20", "eval_every=10", "controls=[reinit]"]


def _results(folder: Path) -> list[dict]:
    with open(folder / "results.csv") as f:
        return list(csv.DictReader(f))


def test_offline_run_holds_levels_curves_and_table(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config([*TINY, "logger=wandb", "logger.mode=offline"])
    exp = Lottery(cfg, tmp_path / "exp")
    rows = exp.run()
    import wandb

    assert wandb.run is None, "wandb.finish() must end the run after the experiment"
    runs = list((tmp_path / "exp" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    log_files = list(runs[0].glob("*.wandb"))
    assert len(log_files) == 1
    wait_for_exit(log_files[0])
    hist = history(log_files[0])

    # One point per level and branch, against % weights remaining.
    for row in rows:
        key = f"level/{row['branch']}/test_acc_at_es"
        hits = [h for h in hist if key in h and h["level/weights_remaining"] == pytest.approx(row["weights_remaining"])]
        assert len(hits) == 1, (key, len(hist), [h.get("level/weights_remaining") for h in hist if key in h], row)
        assert hits[0][key] == pytest.approx(row["test_acc_at_es"])
        assert hits[0][f"level/{row['branch']}/es_iteration"] == row["es_iteration"]
    # Learning curves of every level, against curve/iteration.
    assert any("curve/ticket/r00/test_acc" in h and h["curve/iteration"] == 20 for h in hist)
    assert any("curve/reinit/r01/val_loss" in h for h in hist)
    # The results table: logged as a table file with one row per trained network.
    tables = [h for h in hist if h.get("results/_type") == "table-file"]
    assert len(tables) == 1 and tables[0]["results/nrows"] == len(rows) == 3
    table = json.loads((runs[0] / "files" / tables[0]["results/path"]).read_text())
    col = table["columns"]
    assert {tuple((r[col.index("round")], r[col.index("branch")])) for r in table["data"]} == {(0, "ticket"), (1, "ticket"), (1, "reinit")}
    # Grouped by setting (seed left out), named after the experiment folder.
    run = run_record(log_files[0])
    assert run.run_group.startswith("lenet300_100-layerwise-") and run.display_name == "exp"


def test_group_is_shared_by_seeds_only():
    from lth.tracking import setting_group

    a = setting_group(compose_config([*TINY, "seed=0"]))
    assert a == setting_group(compose_config([*TINY, "seed=3"]))
    assert a != setting_group(compose_config([*TINY, "seed=0", "prune=global"]))


def test_wandb_init_failure_still_writes_all_results(tmp_path, monkeypatch):
    import wandb

    def boom(*args, **kwargs):
        raise wandb.errors.CommError("simulated: no network")

    monkeypatch.setattr(wandb, "init", boom)
    cfg = compose_config([*TINY, "logger=wandb", "logger.mode=online"])
    rows = Lottery(cfg, tmp_path / "exp").run()
    assert len(rows) == 3
    out = tmp_path / "exp"
    assert len(_results(out)) == 3
    for name in ("results.json", "config.yaml", "lottery_ticket.png", "learning_curves.png", "round_01/ticket/curve.csv"):
        assert (out / name).exists(), name


def test_wandb_logger_failure_midway_still_writes_all_results(tmp_path, monkeypatch):
    """W&B dies after the run started (logging raises): tracking switches off, files complete."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    from lth import tracking

    calls = {"n": 0}
    real_log = tracking.Tracker._log

    def flaky(self, data):
        calls["n"] += 1
        if calls["n"] == 3 and self.logger is not None:
            self.logger.experiment.log = _raise
        return real_log(self, data)

    def _raise(*a, **k):
        raise RuntimeError("simulated: W&B backend died")

    monkeypatch.setattr(tracking.Tracker, "_log", flaky)
    cfg = compose_config([*TINY, "logger=wandb", "logger.mode=offline"])
    rows = Lottery(cfg, tmp_path / "exp").run()
    assert len(rows) == 3 and len(_results(tmp_path / "exp")) == 3
    import wandb

    assert wandb.run is None


def test_multirun_jobs_in_one_process_get_one_finished_run_each(tmp_path):
    """Basic launcher: both jobs share a process; each gets its own W&B run, finished before the next."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    env.pop("LTH_SWEEP_NAME", None)
    cmd = [sys.executable, "-m", "lth.run", "-m", "seed=0,1", "logger=wandb", "logger.mode=offline",
           *[o for o in TINY if not o.startswith("controls")], "controls=[]"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = sorted((tmp_path / "outputs" / "multirun").glob("*/*/wandb/offline-run-*/*.wandb"))
    assert len(logs) == 2
    ids = set()
    for f in logs:
        wait_for_exit(f)
        run = run_record(f)
        ids.add(run.run_id)
        assert run.display_name == f.parents[2].name  # the job's own folder
        assert any("level/ticket/test_acc_at_es" in h for h in history(f))
    assert len(ids) == 2
