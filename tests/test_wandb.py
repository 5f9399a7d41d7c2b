"""W&B layout read back from the offline run files, and W&B failures that leave results intact."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from lth.lottery import Lottery
from tests.conftest import compose_config
from tests.wandb_records import artifacts, history, logged_keys, metric_axes, run_record, table, wait_for_exit

TINY = ["experiment=quickstart", "trainer=cpu", "trainer.enable_progress_bar=false", "prune.rounds=1",
        "train.iterations=20", "eval_every=10", "controls=[reinit]"]


def _results(folder: Path) -> list[dict]:
    with open(folder / "results.csv") as f:
        return list(csv.DictReader(f))


def _offline_log(folder: Path, newest: bool = True) -> Path:
    runs = sorted((folder / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime)
    log_files = list(runs[-1 if newest else 0].glob("*.wandb"))
    assert len(log_files) == 1
    wait_for_exit(log_files[0])
    return log_files[0]


def _charted_levels(run_dir: Path, hist: list[dict], key: str) -> set[str]:
    """The lines of the last custom chart logged as ``key`` (W&B stores its data as ``<key>_table``)."""
    last = [h for h in hist if f"{key}_table/path" in h][-1]
    return {r["lineKey"] for r in table(run_dir, last, f"{key}_table")}


def test_offline_run_holds_levels_curves_layers_tables_and_artifact(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config([*TINY, "logger=wandb", "logger.mode=offline", "logger.log_artifacts=true"])
    exp = Lottery(cfg, tmp_path / "exp")
    rows = exp.run()
    import wandb

    assert wandb.run is None, "wandb.finish() must end the run after the experiment"
    assert len(list((tmp_path / "exp" / "wandb").glob("offline-run-*"))) == 1
    log_file = _offline_log(tmp_path / "exp")
    run_dir, hist = log_file.parent, history(log_file)

    # One point per level and branch, on the level axis (% weights remaining).
    assert metric_axes(log_file)["level/*"] == "level/weights_remaining"
    for row in rows:
        key = f"level/{row['branch']}/test_acc_at_es"
        hits = [h for h in hist if key in h and h["level/weights_remaining"] == pytest.approx(row["weights_remaining"])]
        assert len(hits) == 1, (key, row)
        assert hits[0][key] == pytest.approx(row["test_acc_at_es"])
        assert hits[0][f"level/{row['branch']}/es_iteration"] == row["es_iteration"]
    # Learning curves: one chart per branch, one line per level (no key per level).
    assert _charted_levels(run_dir, hist, "curves/ticket") == {"level 0 (100%)", "level 1 (80.2%)"}
    assert _charted_levels(run_dir, hist, "curves/reinit") == {"level 1 (80.2%)"}
    assert not any("/r0" in k for k in logged_keys(log_file))
    # ... of the validation accuracy (test_curve=false), even where every point had a test evaluation
    dense = list(csv.DictReader(open(tmp_path / "exp" / "round_00" / "ticket" / "curve.csv")))
    assert all(p["test_acc"] != "nan" for p in dense) and [p["val_acc"] for p in dense] != [p["test_acc"] for p in dense]
    last = [h for h in hist if "curves/ticket_table/path" in h][-1]
    assert [p["lineVal"] for p in table(run_dir, last, "curves/ticket_table") if p["lineKey"] == "level 0 (100%)"] == \
        [pytest.approx(float(p["val_acc"])) for p in dense]
    # Per-layer sparsity per level: the ticket's remaining:<tensor> columns, one line per tensor.
    last = [h for h in hist if "layers/ticket_table/path" in h][-1]
    points = table(run_dir, last, "layers/ticket_table")
    for row in rows:
        for name, value in ((k[len("remaining:"):], v) for k, v in row.items() if k.startswith("remaining:")):
            if row["branch"] == "ticket":
                assert [p["lineVal"] for p in points if p["lineKey"] == name and p["step"] == pytest.approx(
                    row["weights_remaining"])] == [pytest.approx(value)]
    assert not any(k.startswith("layers/reinit") for k in logged_keys(log_file))  # the ticket's own mask
    # The results table (one row per trained network) and the curves table (every evaluation).
    results = [h for h in hist if h.get("results/_type") == "table-file"]
    assert len(results) == 1 and results[0]["results/nrows"] == len(rows) == 3
    assert {(r["round"], r["branch"]) for r in table(run_dir, results[0], "results")} == {
        (0, "ticket"), (1, "ticket"), (1, "reinit")}
    curves = table(run_dir, [h for h in hist if "curves/path" in h][0], "curves")
    on_disk = sum(len(list(csv.DictReader(open(p)))) for p in (tmp_path / "exp").glob("round_*/*/curve.csv"))
    assert len(curves) == on_disk == 3 * 3  # 3 networks x evaluations at 0, 10, 20
    # logger.log_artifacts=true: results, figures and masks in one artifact.
    art = [a for a in artifacts(log_file) if a.type == "lottery-results"]
    assert len(art) == 1
    names = {e.path for e in art[0].manifest.contents}
    assert {"results.csv", "results.json", "figures/lottery_ticket.png", "figures/learning_curves.png",
            "masks/round_00/mask.pt", "masks/round_01/mask.pt"} <= names
    # Grouped by setting (seed left out), named after the experiment folder.
    run = run_record(log_file)
    assert run.run_group.startswith("lenet300_100-layerwise-") and run.display_name == "exp"


def test_sixteen_levels_with_controls_log_at_most_40_keys(tmp_path, monkeypatch):
    """The history's keys do not grow with the levels: 16 levels x (ticket, reinit, random_prune)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    from lth.figures import plot_learning_curves, plot_sparsity_figure
    from lth.tracking import Tracker

    cfg = compose_config([*TINY, "prune.rounds=15", "controls=[reinit,random_prune]", "logger=wandb",
                          "logger.mode=offline"])
    tracker = Tracker(cfg, tmp_path, "exp", run_id="sixteen")
    rows, layers = [], ("fc1.weight", "fc2.weight", "fc3.weight")
    for level in range(16):
        remaining = 100 * 0.8 ** level
        for branch in ("ticket", "reinit", "random_prune")[: 1 if level == 0 else 3]:
            curve = [{"iteration": it, "train_loss": 1.0, "val_loss": 1.0 - it / 1e3, "val_acc": 0.9, "test_loss": 1.0,
                      "test_acc": 0.9 + it / 1e4, "lr": 1e-3, "time_s": 0.1} for it in range(0, 101, 10)]
            for point in curve:
                tracker.curve_point(level, branch, point)
            row = {"round": level, "branch": branch, "weights_remaining": remaining, "es_iteration": 100,
                   "test_acc_at_es": 0.9, "final_test_acc": 0.9, "min_val_loss": 0.9, "val_acc_at_es": 0.9,
                   "final_iteration": 100, "final_val_loss": 0.9, "train_time_s": 1.0, "diverged": False,
                   "diverged_reason": "", **{f"remaining:{n}": remaining for n in layers}}
            tracker.level(row, curve)
            rows.append(row)
    figures = [tmp_path / "lottery_ticket.png", tmp_path / "learning_curves.png"]
    series = {b: [r for r in rows if r["branch"] == b] for b in ("ticket", "reinit", "random_prune")}
    plot_sparsity_figure(series, figures[0], "t")
    plot_learning_curves({f"{r['weights_remaining']:.3g}%": [{"iteration": 0, "test_acc": 0.5}] for r in rows}, figures[1], "t")
    tracker.finish(rows, figures)
    log_file = _offline_log(tmp_path)
    keys = logged_keys(log_file)
    assert len(keys) <= 40, sorted(keys)
    hist = history(log_file)
    assert len(_charted_levels(log_file.parent, hist, "curves/ticket")) == 16
    assert sum("level/ticket/test_acc_at_es" in h for h in hist) == 16


def test_resumed_experiment_newest_run_holds_every_level(tmp_path, monkeypatch):
    """Offline, each part of a resumed experiment is its own run folder: the newest one (the one a
    user syncs) still holds every level, logged again from disk; the run id is the same."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_config([*TINY, "logger=wandb", "logger.mode=offline"])
    out = tmp_path / "exp"
    rows = Lottery(cfg, out).run()
    (out / "round_01" / "reinit" / "row.json").unlink()  # as if stopped before the last training ended
    Lottery(cfg, out).run()
    assert len(list((out / "wandb").glob("offline-run-*"))) == 2
    first, newest = _offline_log(out, newest=False), _offline_log(out)
    assert run_record(first).run_id == run_record(newest).run_id
    hist = history(newest)
    for row in rows:
        key = f"level/{row['branch']}/test_acc_at_es"
        assert sum(key in h and h["level/weights_remaining"] == pytest.approx(row["weights_remaining"]) for h in hist) == 1
    assert _charted_levels(newest.parent, hist, "curves/ticket") == {"level 0 (100%)", "level 1 (80.2%)"}
    results = [h for h in hist if "results/path" in h]
    assert len(table(newest.parent, results[0], "results")) == 3



def test_branches_in_folders_keyed_by_their_settings_are_logged_with_this_runs_settings(tmp_path, monkeypatch):
    """SNIP's folder is named with a digest of its analysis.* settings (snip-<digest>): the run logs
    the SNIP trained under its own settings, not an earlier run's on other settings found on disk, with
    its learning curve in the curves chart and table (they were read from round_NN/snip/, which is never
    there, and the earlier run's row was logged first and kept)."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "exp"
    snip = [*TINY, "controls=[snip]"]
    Lottery(compose_config([*snip, "logger=none", "analysis.score_examples_per_class=2"]), out).run()
    rows = Lottery(compose_config([*snip, "logger=wandb", "logger.mode=offline"]), out).run()
    mine = next(r for r in rows if r["branch"] == "snip")
    scores = {json.loads(p.read_text())["test_acc_at_es"] for p in out.glob("round_01/snip-*/row.json")}
    assert len(scores) == 2 and mine["test_acc_at_es"] in scores  # two SNIP networks on disk, told apart
    log_file = _offline_log(out)
    run_dir, hist = log_file.parent, history(log_file)
    assert [h["level/snip/test_acc_at_es"] for h in hist if "level/snip/test_acc_at_es" in h] == [mine["test_acc_at_es"]]
    assert _charted_levels(run_dir, hist, "curves/snip") == {"level 1 (80.2%)"}
    curves = table(run_dir, [h for h in hist if "curves/path" in h][0], "curves")
    assert len([c for c in curves if c["branch"] == "snip"]) == 3  # evaluations at 0, 10, 20

def test_the_level_axis_holds_the_rows_of_results_csv_only(tmp_path, monkeypatch):
    """instability=true with rewinding trains a level-0 reference copy (not a row of results.csv): it is
    not logged as a level of its own."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    out = tmp_path / "exp"
    Lottery(compose_config([*TINY, "controls=[]", "instability=true", "rewind_iteration=10",
                            "analysis.interpolation_points=3", "logger=wandb", "logger.mode=offline"]), out).run()
    assert list((out / "round_00").glob("instability-*/reference/row.json"))
    logged = {(h["level/round"], k.split("/")[1]) for h in history(_offline_log(out)) for k in h
              if k.startswith("level/") and k.count("/") == 2}
    assert logged == {(int(r["round"]), r["branch"]) for r in _results(out)}, logged


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


def test_the_default_logger_runs_offline_on_a_machine_without_a_wandb_login(tmp_path):
    """The README's first command on a fresh machine: logger=wandb, mode auto, no API key, no WANDB_MODE in the
    environment. W&B must run offline (an offline run on disk and the ``wandb sync`` hint), not switch itself off."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), OMP_NUM_THREADS="1")  # no ~/.netrc: no login
    cmd = [sys.executable, "-m", "lth.run", *TINY, f"hydra.run.dir={tmp_path / 'exp'}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B is off" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
    assert "W&B ran offline; upload with:  wandb sync " in proc.stdout + proc.stderr
    assert list((tmp_path / "exp" / "wandb").glob("offline-run-*/*.wandb"))
