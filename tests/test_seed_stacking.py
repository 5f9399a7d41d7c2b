"""Seed trials trained as one stack (``hydra/launcher=lth_seeds``, ``lth.lottery.seeds``): each seed's
networks train as in its own run, and its results land in its own experiment folder.

Proved in float64 on the CPU against each seed's experiment run alone, one network at a time: the
same masks at every level, the same data order, the same evaluation curve and early-stopping choice,
final weights within 1e-9, pruned weights exactly 0; and each seed's results.csv records the stack.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys

import pytest
import torch

from hydra_plugins.lth_seeds_launcher.seeds_launcher import seed_groups
from lth.lottery.seeds import train_trials, why_not_stacked
from lth.pruning import Mask
from lth.storage import load_tensors
from tests.conftest import FAST, compose_config
from tests.test_stacked import TRAINER, FirstBatches, Float64Lottery, Interrupt, InterruptAt, close, read_curve, \
    rows_by_key

SEEDS = (0, 1, 2)
# LTH_TEST_TRAINER=gpu: the same comparisons on a GPU (as tests/test_stacked.py)
BASE = ["experiment=quickstart", *[f"trainer={TRAINER}" if o == "trainer=cpu" else o for o in FAST], "model.arch.hidden=[16,8]", "train.iterations=30", "eval_every=5",
        "checkpoint_every=10", "trainer.steps_per_call=5", "prune.rounds=2", "controls=[reinit]"]
BRANCHES = ("ticket", "reinit")


def cfg(seed: int, *extra: str):
    return compose_config([*BASE, "stack_networks=true", f"seed={seed}", *extra])


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Each seed's experiment on its own, one network at a time: ``{seed: (lottery, rows by key)}``."""
    root = tmp_path_factory.mktemp("alone")
    out = {}
    for s in SEEDS:
        lot = Float64Lottery(cfg(s, "stack_networks=false"), root / f"seed{s}")
        out[s] = (lot, rows_by_key(lot.run()))
    return out


def results_csv(folder) -> dict:
    with open(folder / "results.csv") as f:
        return {(int(r["round"]), r["branch"]): r for r in csv.DictReader(f)}


def assert_as_alone(alone_lot, lot, a: dict, s: dict, stacked: dict) -> None:
    """Seed ``lot``'s rows ``s``, curves, masks and final weights are its separate run's (``a``);
    ``stacked``: each row's ``stacked`` entry (None: trained alone)."""
    assert set(a) == set(s)
    table = results_csv(lot.dir)
    for key, ra in a.items():
        rs = s[key]
        assert rs.get("stacked") == stacked[key] and table[key]["stacked"] == str(stacked[key] or ""), key
        assert rs["es_iteration"] == ra["es_iteration"] and rs["diverged"] == ra["diverged"], key
        for k in ("min_val_loss", "test_acc_at_es", "final_test_acc", "final_val_loss"):
            assert close(rs[k], ra[k], k), (key, k, rs[k], ra[k])
        ca, cs = read_curve(alone_lot.layout.curve(*key)), read_curve(lot.layout.curve(*key))
        assert [p["iteration"] for p in ca] == [p["iteration"] for p in cs] and len(ca) == 7
        assert all(close(pa[k], ps[k], k) for pa, ps in zip(ca, cs) for k in pa), key
    for level in range(3):
        ma, ms = Mask.load(alone_lot.layout.ticket_mask(level)), Mask.load(lot.layout.ticket_mask(level))
        assert all(torch.equal(ma[n], ms[n]) for n in ma), level
        wa, ws = load_tensors(alone_lot.layout.final(level, "ticket")), load_tensors(lot.layout.final(level, "ticket"))
        assert all(float((wa[n] - ws[n]).abs().max()) <= 1e-9 for n in wa), level
        assert all(not ws[n][~ms[n]].any() for n in ms), level  # pruned weights exactly 0


class Counted(Float64Lottery):
    """Records the first batch of every Trainer (``seen``) and counts the job's trainings."""

    seen = FirstBatches()

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.extra_callbacks.append(Counted.seen)


def test_seed_trials_trained_as_one_stack_train_each_seed_as_its_own_run_in_float64(tmp_path, alone):
    Counted.seen = FirstBatches()
    folders = [tmp_path / f"seed{s}" for s in SEEDS]
    assert train_trials([(cfg(s), f) for s, f in zip(SEEDS, folders)], lottery=Counted) == folders
    stacks = {k: v for k, v in Counted.seen.seen.items() if ".stack-" in k}
    assert len(stacks) == 3 and len(Counted.seen.seen) == 3  # level 0, 1, 2: one stack each, nothing alone
    # each seed's job then finds every network trained, and writes its outputs
    Counted.seen = FirstBatches()
    for s, folder in zip(SEEDS, folders):
        lot = Counted(cfg(s), folder)
        rows = rows_by_key(lot.run())
        assert_as_alone(alone[s][0], lot, alone[s][1], rows,
                        {(0, "ticket"): 3, **{(lv, b): 6 for lv in (1, 2) for b in BRANCHES}})
    assert not Counted.seen.seen  # no training in the jobs
    # data order: network i of round 1's stack (seed i // 2, ticket then reinit) sees its seed's batches
    dm = lot.datamodule
    labels = next(v for k, v in stacks.items() if "/round_01/.stack-" in k)
    assert labels.shape[0] == 6
    for i, s in enumerate(s for s in SEEDS for _ in BRANCHES):
        assert torch.equal(labels[i], dm.train_stream(60, s, 30).batch(0)[1]), i
    assert not list(tmp_path.rglob(".stack-*"))  # every stack's checkpoint folder is gone


def test_trials_at_different_levels_resume_together(tmp_path, alone):
    """Seed 0 finished levels 0-1 earlier (on its own, one at a time); seeds 0 and 1 are then asked for
    two rounds: seed 1's levels 0 and 1 train without seed 0, level 2 as one stack of both."""
    folders = [tmp_path / "seed0", tmp_path / "seed1"]
    Float64Lottery(cfg(0, "prune.rounds=1", "stack_networks=false"), folders[0]).run()
    assert train_trials([(cfg(s), f) for s, f in zip((0, 1), folders)], lottery=Float64Lottery) == folders
    expected = {0: {(0, "ticket"): None, (1, "ticket"): None, (1, "reinit"): None, (2, "ticket"): 4, (2, "reinit"): 4},
                1: {(0, "ticket"): 1, (1, "ticket"): 2, (1, "reinit"): 2, (2, "ticket"): 4, (2, "reinit"): 4}}
    for s, folder in zip((0, 1), folders):
        lot = Float64Lottery(cfg(s), folder)
        assert_as_alone(alone[s][0], lot, alone[s][1], rows_by_key(lot.run()), expected[s])


def test_an_interrupted_seed_stack_resumes_to_each_seeds_own_results(tmp_path, alone, caplog):
    """Stopped at iteration 20 of the first stack (the seeds' dense rounds), then run again: the stack
    continues from its checkpoint and every seed ends as its own run."""

    class Stopped(Float64Lottery):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.extra_callbacks.append(stop)

    stop = InterruptAt(20)
    folders = [tmp_path / "seed0", tmp_path / "seed1"]
    trials = [(cfg(s), f) for s, f in zip((0, 1), folders)]
    with pytest.raises(Interrupt):
        train_trials(trials, lottery=Stopped)
    assert stop.fired and list(tmp_path.rglob(".stack-*/checkpoints/last.ckpt"))  # checkpoint_every=10
    with caplog.at_level(logging.INFO, logger="lth"):
        assert train_trials(trials, lottery=Float64Lottery) == folders
    assert "2 networks stacked (ticket, ticket), iterations 0..30 (resuming from" in caplog.text
    stacked = {(0, "ticket"): 2, **{(lv, b): 4 for lv in (1, 2) for b in BRANCHES}}
    for s, folder in zip((0, 1), folders):
        lot = Float64Lottery(cfg(s), folder)
        assert_as_alone(alone[s][0], lot, alone[s][1], rows_by_key(lot.run()), stacked)
    assert not list(tmp_path.rglob(".stack-*"))


def test_which_jobs_stack_as_seed_trials():
    jobs = [["seed=0", "prune=global"], ["seed=1", "prune=global"], ["prune=layerwise", "seed=0"], ["seed=1"]]
    assert seed_groups(jobs) == [[0, 1], [2], [3]]
    assert why_not_stacked([cfg(0), cfg(1)]) is None
    assert "same seed" in why_not_stacked([cfg(1), cfg(1)])
    assert "more than seed" in why_not_stacked([cfg(0), cfg(1, "optimizer.lr=0.01")])
    assert "does not stack" in why_not_stacked([cfg(0, "stack_networks=auto"), cfg(1, "stack_networks=auto")])


@pytest.mark.slow
def test_the_lth_seeds_launcher_stacks_a_seed_sweep_and_each_job_reports_as_usual(tmp_path):
    """``-m hydra/launcher=lth_seeds seed=0,1``: each seed's folder, results.csv (with ``stacked``) and
    job record as with Hydra's basic launcher, one sweep report; the same command again trains nothing."""
    from tests.wandb_records import history, run_record, wait_for_exit

    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("LTH_SWEEP_NAME", None)
    cmd = [sys.executable, "-m", "lth.run", "-m", "hydra/launcher=lth_seeds", "seed=0,1", "stack_networks=true",
           "experiment=quickstart", "model.arch.hidden=[16,8]", "train.iterations=20", "eval_every=10",
           "prune.rounds=1", "logger=wandb", "logger.mode=offline", "trainer=cpu", "trainer.enable_progress_bar=false"]
    tables = []
    for attempt in range(2):
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=560)
        assert proc.returncode == 0, proc.stderr[-3000:]
        (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
        jobs = sorted(p.parent for p in sweep.rglob("results.csv"))
        assert len(jobs) == 2 and all(j.parent == sweep for j in jobs)
        tables.append([results_csv(j) for j in jobs])
        for table in tables[-1]:
            assert {k: r["stacked"] for k, r in table.items()} == {(0, "ticket"): "2", (1, "ticket"): "4",
                                                                   (1, "reinit"): "4"}
        records = [json.loads(p.read_text()) for p in sorted((sweep / ".jobs").glob("*.json"))]
        assert [r["status"] for r in records] == ["done", "done"]  # each job's JobReturn reached the callback
        assert "2 finished experiment(s) in 1 setting(s)" in (sweep / "report.md").read_text()
        if attempt == 0:  # each seed's own W&B run holds its levels (logged from its files, as on a resume)
            logs = sorted(sweep.glob("*/wandb/offline-run-*/*.wandb"))
            assert [f.parents[2] for f in logs] == jobs
            for f in logs:
                wait_for_exit(f)
                assert run_record(f).display_name == f.parents[2].name
                keys = {k for h in history(f) for k in h}
                assert {"level/ticket/test_acc_at_es", "level/reinit/test_acc_at_es"} <= keys, keys
    assert tables[0] == tables[1]  # the same rows, training times included: nothing trained again
