"""The one definition of "the same experiment": folder, W&B group and report agree; branches and
speed-only settings are outside it."""

from lth.identity import dense_hash, experiment_hash, setting_hash, setting_name
from lth.report import setting_config
from lth.tracking import setting_group
from tests.conftest import compose_config


def _hash(overrides, fn=experiment_hash):
    return fn(compose_config(overrides))


def test_override_order_does_not_matter_and_results_settings_do():
    base = _hash(["model=conv2", "seed=1", "prune.rounds=3"])
    assert _hash(["prune.rounds=3", "seed=1", "model=conv2"]) == base
    assert _hash(["model=conv2", "seed=2", "prune.rounds=3"]) != base
    assert _hash(["model=conv2", "seed=1", "prune.rounds=3", "optimizer.lr=0.01"]) != base


def test_speed_only_settings_and_branches_keep_the_folder():
    base = _hash(["model=conv2"])
    for outside in ("trainer.steps_per_call=1", "mask_gradients=true", "trainer.profiler=simple",
                    "eval_batch_size=500", "checkpoint_every=50", "trainer.enable_progress_bar=false",
                    "controls=[reinit]", "controls=[reinit,random_prune]"):
        assert _hash(["model=conv2", outside]) == base, outside


def test_the_device_is_part_of_the_identity_everywhere():
    """CPU and GPU runs are not bit-identical: folder, W&B group and report all keep them apart."""
    cpu, gpu = compose_config(["trainer=cpu"]), compose_config(["trainer=gpu"])
    assert experiment_hash(cpu) != experiment_hash(gpu)
    assert setting_group(cpu) != setting_group(gpu)
    saved = [compose_config(o) for o in (["trainer=cpu"], ["trainer=gpu"])]
    from omegaconf import OmegaConf

    as_saved = [OmegaConf.to_container(c, resolve=True) for c in saved]  # what config.yaml holds
    assert setting_config(as_saved[0]) != setting_config(as_saved[1])


def test_seeds_are_trials_of_one_setting_in_wandb_and_the_report():
    a, b = compose_config(["seed=1"]), compose_config(["seed=2"])
    assert experiment_hash(a) != experiment_hash(b)
    assert setting_hash(a) == setting_hash(b) and setting_name(a) == setting_group(b)
    from omegaconf import OmegaConf

    assert setting_config(OmegaConf.to_container(a, resolve=True)) == setting_config(OmegaConf.to_container(b, resolve=True))


def test_dense_round_identity_ignores_pruning_and_rewinding_only():
    base = _hash([], dense_hash)
    for pruning in ("rewind_iteration=100", "prune=global", "prune.rounds=3", "strategy=continue", "model.rates.fc=0.3"):
        assert _hash([pruning], dense_hash) == base, pruning
    for training in ("seed=1", "optimizer.lr=0.01", "train.iterations=500", "lr_warmup=true", "eval_every=50"):
        assert _hash([training], dense_hash) != base, training


# ---------------------------------------------------------------------- the plan's length; one writer
import contextlib  # noqa: E402
import os  # noqa: E402

import pytest  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

TINY = ["experiment=quickstart", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false", "controls=[]",
        "train.iterations=20", "eval_every=10"]


def lth_run(cwd: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lth.run", *TINY, *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"})


def finished(proc: subprocess.Popen, code: int = 0) -> str:
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == code, err[-3000:]
    return err


def experiments(cwd: Path) -> list[Path]:
    return [p for p in (cwd / "outputs" / "runs").iterdir() if not p.name.startswith(".")]  # .dense: shared


def weight_files(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.rglob("*.pt")}


@pytest.mark.slow
def test_rounds_zero_then_more_then_fewer_continue_one_experiment(tmp_path):
    """prune.rounds=0 trains the dense round and writes results.csv; raising the rounds trains only the new
    levels in the same folder; lowering them reports the levels there without training."""
    finished(lth_run(tmp_path, "prune.rounds=0"))
    (folder,) = experiments(tmp_path)
    assert [r.split(",")[:2] for r in (folder / "results.csv").read_text().splitlines()[1:]] == [["0", "ticket"]]
    dense = weight_files(folder)
    finished(lth_run(tmp_path, "prune.rounds=2"))
    assert experiments(tmp_path) == [folder]  # the same experiment
    after = weight_files(folder)
    assert {k: after[k] for k in dense} == dense  # level 0 not retrained
    assert {"round_01/ticket/final.pt", "round_02/ticket/final.pt"} <= after.keys()
    finished(lth_run(tmp_path, "prune.rounds=1"))
    assert weight_files(folder) == after  # nothing trained
    rows = (folder / "results.csv").read_text().splitlines()[1:]
    assert [r.split(",")[0] for r in rows] == ["0", "1"]


@pytest.mark.slow
def test_a_second_process_of_a_running_experiment_is_refused(tmp_path):
    run_dir = tmp_path / "exp"
    long = ["train.iterations=100000", "eval_every=1000", "prune.rounds=1", f"hydra.run.dir={run_dir}"]
    first = lth_run(tmp_path, *long)
    lock = run_dir / ".lock"
    try:
        deadline = time.time() + 120
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1][-3000:]
            time.sleep(0.2)
        err = finished(lth_run(tmp_path, *long), 2)
        assert first.poll() is None, "the first process must still be running for this test to mean anything"
        errors = [line for line in err.splitlines() if line.strip()]
        assert len(errors) == 1 and errors[0].startswith("error:") and f"pid {first.pid}" in errors[0], err[-2000:]
    finally:
        first.kill()
        first.wait()


def test_the_lock_of_a_killed_process_does_not_block_a_resume(tmp_path):
    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lth.lottery.layout import experiment_lock\n"
                               f"with experiment_lock(__import__('pathlib').Path({str(run_dir)!r})):\n"
                               "    print('locked', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run_dir / ".lock").read_text().strip() == str(holder.pid)  # left behind
    finished(lth_run(tmp_path, "prune.rounds=0", f"hydra.run.dir={run_dir}"))
    assert (run_dir / "results.csv").exists()


def test_the_lock_ends_with_its_owner_not_with_its_forked_workers(tmp_path):
    """A run killed while its data loader's (forked) workers live on: the lock is free at once (the workers
    held it for seconds, and a resume in that window was refused naming the dead pid)."""
    from lth.lottery.layout import experiment_lock, lock_holder

    run_dir = tmp_path / "exp"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import multiprocessing as mp, time\n"
                               "from lth.lottery.layout import experiment_lock\n"
                               f"with experiment_lock(__import__('pathlib').Path({str(run_dir)!r})):\n"
                               "    worker = mp.get_context('fork').Process(target=time.sleep, args=(600,))\n"
                               "    worker.start()\n"
                               "    print(worker.pid, flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    worker = int(holder.stdout.readline())
    try:
        assert lock_holder(run_dir) == str(holder.pid)
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        os.kill(worker, 0)  # the worker lives on
        assert lock_holder(run_dir) is None
        with experiment_lock(run_dir):
            pass
    finally:
        holder.kill()
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)


def test_a_second_process_is_refused_before_it_rewrites_the_running_ones_hydra_record(tmp_path):
    """The refusal comes before Hydra writes the job's .hydra/: the running experiment's record of its
    command stays as it was (it said controls=[reinit] of the refused command, not of the run)."""
    run_dir = tmp_path / "exp"
    finished(lth_run(tmp_path, "prune.rounds=0", f"hydra.run.dir={run_dir}"))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from lth.lottery.layout import experiment_lock\n"
                               f"with experiment_lock(__import__('pathlib').Path({str(run_dir)!r})):\n"
                               "    print('locked', flush=True); time.sleep(600)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()}
        err = finished(lth_run(tmp_path, "prune.rounds=1", "controls=[reinit]", f"hydra.run.dir={run_dir}"), 2)
        assert err.strip() == f"error: another lth process (pid {holder.pid}) is running this experiment in {run_dir}; " \
                              f"wait for it to finish, or stop it (kill {holder.pid}) and re-run this command to continue"
        assert {p.name: p.read_bytes() for p in (run_dir / ".hydra").iterdir()} == before
    finally:
        holder.kill()
        holder.wait()

def test_a_folder_of_the_previous_format_is_named_not_silently_left_behind(tmp_path, capsys, monkeypatch):
    """A format-2 folder (prune.rounds in its hash) of this experiment beside the new one: refused with one line."""
    import json as _json

    from omegaconf import OmegaConf

    from tests.test_bad_input import run_in_process

    cfg = compose_config(TINY)
    old = tmp_path / "outputs" / "runs" / "prune.rounds=1-0123abcd"
    old.mkdir(parents=True)
    (old / "experiment.json").write_text(_json.dumps({"config_hash": "0123abcd", "name": old.name, "format": 2}))
    (old / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.to_container(cfg, resolve=True)))
    code, out, err = run_in_process([*TINY, "prune.rounds=1"], capsys, monkeypatch, tmp_path)
    assert code == 2 and err.strip().startswith(f"error: {old.relative_to(tmp_path)} holds this experiment as written by an older lth")
    assert sorted(p.name for p in old.parent.iterdir()) == [old.name]


def test_an_analysis_setting_retrains_only_the_branches_that_read_it(tmp_path):
    """analysis.score_examples_per_class keys the SNIP networks: changing it trains SNIP anew in its own folder (never
    reusing the networks scored on another number of batches) and nothing else; going back reuses the first."""
    import pytorch_lightning as pl

    from lth.lottery import Lottery

    class Trainings(pl.Callback):
        def __init__(self):
            self.folders = []

        def on_train_start(self, trainer, pl_module):
            self.folders.append(Path(trainer.default_root_dir).relative_to(tmp_path).as_posix().removeprefix("exp/"))

    folder = tmp_path / "exp"
    small = [*TINY, "prune.rounds=1", "controls=[snip,reinit]"]

    def run(*extra):
        lot, rec = Lottery(compose_config([*small, *extra]), folder), Trainings()
        lot.extra_callbacks.append(rec)
        return lot, lot.run(), rec.folders

    first, rows1, _ = run()
    snip1 = next(b.key for b in first.branches if b.name == "snip")
    second, rows2, trained = run("analysis.score_examples_per_class=3")
    snip2 = next(b.key for b in second.branches if b.name == "snip")
    assert snip1 != snip2 and trained == [f"round_01/{snip2}"]
    assert (folder / "round_01" / snip1 / "row.json").exists()  # the first SNIP networks are kept, not reused
    assert [r for r in rows1 if r["branch"] != "snip"] == [r for r in rows2 if r["branch"] != "snip"]
    _, rows3, trained = run()
    assert trained == [] and rows3 == rows1


def test_results_csv_never_lists_a_branch_computed_under_other_settings(tmp_path):
    """A SNIP network scored on 3 examples per class stays on disk, but a later run whose settings say 10 (and
    that does not train SNIP) does not list it in results.csv; one whose settings say 3 does."""
    import csv

    from lth.lottery import Lottery

    folder = tmp_path / "exp"
    small = [*TINY, "prune.rounds=1"]
    Lottery(compose_config([*small, "controls=[snip]", "analysis.score_examples_per_class=3"]), folder).run()

    def listed(*extra):
        Lottery(compose_config([*small, *extra]), folder).run()
        return {r["branch"] for r in csv.DictReader((folder / "results.csv").open())}

    assert listed() == {"ticket"}
    assert listed("analysis.score_examples_per_class=3") == {"ticket", "snip"}
