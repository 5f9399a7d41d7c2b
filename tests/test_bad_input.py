"""Bad input: every wrong setting is refused with exit status 2, exactly one ``error:`` line naming
the setting, no traceback, and nothing on disk changed: an existing experiment folder stays
byte-for-byte as it was (its ``.hydra/`` included) and a fresh command creates no folder.

The table runs through ``lth.run.main()`` in this process (the same code path as ``python -m
lth.run`` up to the refusal, which happens before Hydra runs the job); a few cases also run as
real subprocesses.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch


# A tiny experiment on the embedded digits; every case adds one wrong setting to it.
BASE = ["experiment=quickstart", "train.iterations=20", "eval_every=10", "prune.rounds=1", "controls=[]",
        "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false"]

# (id, overrides, what the error line must contain). Each runs against the existing experiment
# folder (hydra.run.dir=<it>) and as a fresh command in an empty working folder.
CASES = [
    ("optimizer-name", ["optimizer.name=rmsprop"], "optimizer.name='rmsprop' is not known; choose from adam, adamw, sgd"),
    ("weight-decay", ["optimizer.weight_decay=-1e-4"], "optimizer.weight_decay=-0.0001 must be a number >= 0"),
    ("momentum", ["optimizer.name=sgd", "optimizer.momentum=-0.9"], "optimizer.momentum=-0.9 must be a number >= 0 and < 1"),
    ("momentum-adam", ["optimizer.momentum=0.9"], "optimizer.momentum is read only when optimizer.name=sgd"),
    ("warmup", ["lr_warmup=true", "warmup.iterations=-5"], "warmup.iterations=-5 must be an integer >= 1"),
    ("warmup-lr-gone", ["warmup.lr=-0.1"], "warmup.lr is not a setting of warmup; the warm-up ramps to optimizer.lr"),
    ("milestone", ["schedule.milestones=[100,abc]"], "schedule.milestones contains 'abc', which must be an integer >= 1"),
    ("gamma", ["schedule.gamma=abc"], "schedule.gamma='abc' must be a number > 0"),
    ("batch-size", ["train.batch_size=5000"], "train.batch_size=5000 is larger than the training set of data=digits"),
    ("val-size", ["data.val_size=2000"], "data.val_size=2000 must be smaller than the 1,437 examples"),
    ("precision", ["trainer.precision=bogus"], "trainer.precision='bogus' is not known"),
    ("val-size-mnist", ["data=mnist", "data.val_size=70000"], "data.val_size=70000 must be smaller than the 60,000"),
    ("exempt-nothing-left", ["model.exempt=[fc,output]"], "exempts every prunable tensor: nothing to prune"),
    ("accelerator", ["trainer.accelerator=tpu"], "trainer.accelerator='tpu' is not known"),
    ("devices", ["trainer.devices=0"], "trainer.devices=0 must be a positive integer"),
    ("strategy-lightning", ["trainer.strategy=dpp"], "trainer.strategy='dpp' is not known (did you mean ddp?)"),
    ("seed-fraction", ["seed=1.5"], "seed=1.5 must be an integer >= 0"),
    ("seed-word", ["seed=abc"], "seed='abc' must be an integer >= 0"),
    ("bool-word", ["lr_warmup=yes"], "lr_warmup='yes' must be true or false"),
    ("bool-number", ["mask_gradients=1"], "mask_gradients=1 must be true or false"),
    ("exempt-typo", ["model.exempt=[*outptu*]"], "model.exempt contains '*outptu*', which matches no prunable tensor"),
    ("controls-string", ["controls=reinit"], "controls=reinit must be a list: write controls=[reinit]"),
    ("controls-unknown", ["controls=[reinti]"], "controls contains 'reinti', which is not known (did you mean reinit?)"),
    ("prunes-everything", ["prune=global", "prune.rate=0.99", "prune.rounds=4"],
     "prunes every weight in round 3: set prune.rounds=2"),
    ("layer-emptied", ["prune.rounds=12", "model.rates.output=0.5"], "model.rates.output=0.5 with prune.rounds=12"),
    ("rate", ["model.rates.fc=1.5"], "model.rates.fc=1.5 must be a number >= 0 and < 1"),
    ("global-rate", ["prune=global", "prune.rate=0"], "prune.rate=0 must be a number > 0 and < 1"),
    ("rounds", ["prune.rounds=-1"], "prune.rounds=-1 must be an integer >= 0"),
    ("iterations", ["train.iterations=-3"], "train.iterations=-3 must be an integer >= 1"),
    ("eval-every", ["eval_every=0"], "eval_every=0 must be an integer >= 1"),
    ("rewind", ["rewind_iteration=99999"], "rewind_iteration=99999 must be below train.iterations=20"),
    ("strategy", ["strategy=sideways"], "strategy='sideways' is not known"),
    ("schedule", ["prune.schedule=sometimes"], "prune.schedule='sometimes' is not known"),
    ("logger-mode", ["logger=wandb", "logger.mode=bogus"], "logger.mode='bogus' is not known"),
    ("other-option-key", ["logger.mode=offline"], "logger.mode is read only when logger.name=wandb"),
    ("analysis", ["analysis.batchnorm=average"], "analysis.batchnorm='average' is not known"),
    ("dropout", ["model.dropout=1.5"], "model.dropout=1.5 must be a number >= 0 and < 1"),
    ("arch-type", ["model.arch.hidden=[300,a]"], "model=lenet300_100 does not fit data=digits (input (1, 8, 8), 10 classes) with model.arch="),
    ("arch-key", ["+model.arch.widht=3"], "unexpected keyword argument 'widht'"),
    ("arch-key-no-plus", ["model.arch.widht=3"], "model.arch.widht is not an entry of model.arch (it has _target_, "
                                                 "hidden, dropout); a new entry needs a +: +model.arch.widht=VALUE"),
    ("model-data", ["model=vgg11"], "model=vgg11 does not fit data=digits"),
    ("unknown-key", ["+optimizer.weight_decy=0.1"], "optimizer.weight_decy is not a setting of optimizer; did you mean optimizer.weight_decay?"),
    ("unknown-key-no-plus", ["model.rates.fcc=0.2"], "model.rates.fcc is not a setting of model.rates; did you mean model.rates.fc?"),
    ("group-option", ["model=nope"], "model=nope is not an option of model; choose model=conv2"),
    ("override-syntax", ["seed=["], "cannot read the override 'seed=['"),
    ("sweep-without-m", ["seed=0,1"], "seed=0,1 is a sweep: add -m"),
    ("unread-global-rate", ["+prune.rate=0.5"], "prune.rate is read only when prune.scheme=global"),
    ("unread-layerwise-rate", ["prune=global", "model.rates.fc=0.5"], "model.rates.fc is read only when prune.scheme=layerwise"),
    ("unread-warmup", ["warmup.iterations=100"], "warmup.iterations is read only when lr_warmup=true, so it would change nothing here; set lr_warmup=true"),
    ("unread-gamma", ["schedule.gamma=0.5"], "schedule.gamma is read only when schedule.milestones is not empty"),
    ("unread-analysis", ["analysis.score_examples_per_class=4"], "analysis.score_examples_per_class is read only when controls has snip or grasp"),
    ("missing-data", ["data=mnist", "data.root=/nonexistent/lth-data", "data.download=false"], "MNIST files not found under"),
]
if not torch.cuda.is_available():
    CASES.append(("gpu-missing", ["trainer=gpu"], "trainer.accelerator=gpu (trainer=gpu or trainer=ddp) needs a CUDA GPU"))


def tree(root: Path) -> dict[str, str]:
    """Every path under ``root`` with the SHA-1 of its bytes (folders as 'dir')."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha1(p.read_bytes()).hexdigest()
    return out


def lth_run(*args: str, cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lth.run", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0", **(env or {})})


@pytest.fixture(scope="module")
def existing(tmp_path_factory) -> Path:
    """A finished experiment made by a real ``python -m lth.run`` (its .hydra/ and run.log included)."""
    folder = tmp_path_factory.mktemp("existing") / "exp"
    proc = lth_run(*BASE, f"hydra.run.dir={folder}", cwd=folder.parent)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert (folder / ".hydra" / "config.yaml").exists() and (folder / "results.csv").exists()
    return folder


def run_in_process(args: list[str], capsys, monkeypatch, cwd: Path) -> tuple[int, str, str]:
    import lth.run

    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["lth.run", *args])
    monkeypatch.setattr(lth.run, "_task_started", False)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        lth.run.main()
    out, err = capsys.readouterr()
    return stop.value.code, out, err


def assert_refused(code: int, out: str, err: str, message: str) -> None:
    assert code == 2, (code, out[-2000:], err[-2000:])
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], err[-2000:]
    assert lines == errors, err[-2000:]  # nothing else on stderr (Hydra's multi-line messages included)


@pytest.mark.parametrize("case_id,overrides,message", CASES, ids=[c[0] for c in CASES])
def test_refused_against_the_existing_experiment(case_id, overrides, message, existing, capsys, monkeypatch, tmp_path):
    before = tree(existing.parent)
    code, out, err = run_in_process([*BASE, *overrides, f"hydra.run.dir={existing}"], capsys, monkeypatch, tmp_path)
    assert_refused(code, out, err, message)
    assert tree(existing.parent) == before  # byte for byte, .hydra/ included
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("case_id,overrides,message", CASES, ids=[c[0] for c in CASES])
def test_refused_as_a_fresh_command(case_id, overrides, message, capsys, monkeypatch, tmp_path):
    code, out, err = run_in_process([*BASE, *overrides], capsys, monkeypatch, tmp_path)
    assert_refused(code, out, err, message)
    assert not any(tmp_path.iterdir())  # no outputs/ folder, no experiment folder


def test_another_configuration_in_the_folder_is_refused_before_hydra_writes(existing, capsys, monkeypatch, tmp_path):
    """A valid command for another experiment, pointed at this one's folder: refused, folder untouched."""
    before = tree(existing.parent)
    code, out, err = run_in_process([*BASE, "seed=7", f"hydra.run.dir={existing}"], capsys, monkeypatch, tmp_path)
    assert_refused(code, out, err, "holds an experiment with another configuration")
    assert tree(existing.parent) == before


def test_unwritable_and_corrupt(tmp_path, data_dir, capsys, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    raw = tmp_path / "corrupt" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        if not f.name.endswith(".gz"):
            (raw / f.name).symlink_to(f)
    labels = bytearray((data_dir / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").read_bytes())
    labels[100] ^= 0xFF
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    work = tmp_path / "work"
    work.mkdir()
    before = tree(tmp_path)
    for args, message in (
        ([f"hydra.run.dir={blocker / 'exp'}"], "cannot be created"),
        (["data=mnist", f"data.root={tmp_path / 'corrupt'}", "data.download=false"], "t10k-labels-idx1-ubyte is corrupt (MD5"),
    ):
        code, out, err = run_in_process([*BASE, *args], capsys, monkeypatch, work)
        assert_refused(code, out, err, message)
    assert tree(tmp_path) == before


def test_sweep_whose_every_job_is_refused_writes_nothing(capsys, monkeypatch, tmp_path):
    code, out, err = run_in_process(["-m", *BASE, "seed=0,1", "optimizer.name=rmsprop"], capsys, monkeypatch, tmp_path)
    assert_refused(code, out, err, "every job of the sweep is refused: optimizer.name='rmsprop' is not known")
    assert not any(tmp_path.iterdir())


def test_true_subprocesses(existing, tmp_path):
    """The same refusals from real ``python -m lth.run`` processes (all started at once)."""
    before = tree(existing.parent)
    cases = {
        "precision": ([*BASE, "trainer.precision=bogus", f"hydra.run.dir={existing}"], "trainer.precision='bogus'", {}),
        "prunes-everything": ([*BASE, "prune=global", "prune.rate=0.99", "prune.rounds=4", f"hydra.run.dir={existing}"],
                              "set prune.rounds=2", {}),
        "group-option": ([*BASE, "model=nope"], "model=nope is not an option of model", {}),
        "sweep": (["-m", *BASE, "seed=1.5,2.5"], "2 of 2 jobs of the sweep are refused, so none is started: job 0 (seed=1.5): seed=1.5 must be", {}),
    }
    procs = {}
    for name, (args, _, env) in cases.items():
        (tmp_path / name).mkdir()
        procs[name] = lth_run(*args, cwd=tmp_path / name, env=env)
    full = tmp_path / "full"
    full.mkdir()
    procs["full"] = lth_run(*BASE, "seed=abc", cwd=full, env={"HYDRA_FULL_ERROR": "1"})
    for name, (_, message, _) in cases.items():
        out, err = procs[name].communicate(timeout=300)
        assert_refused(procs[name].returncode, out, err, message)
        assert not any((tmp_path / name).iterdir()), name
    out, err = procs["full"].communicate(timeout=300)
    assert procs["full"].returncode != 0 and "Traceback" in err and "ConfigError: seed='abc'" in err  # HYDRA_FULL_ERROR=1
    assert tree(existing.parent) == before


def test_every_refusal_comes_before_torch_is_imported(existing, tmp_path):
    """Issue #20: a wrong setting, data too small for the settings, a model that does not fit the data, a pruning
    plan that empties a layer, what this machine lacks, a folder that holds another experiment: each answered
    before torch (and Lightning) are imported (benchmarks/refusal.py measures how fast)."""
    from benchmarks.refusal import CASES, ENV, PROBE

    assert {"data size (mnist val 70000)", "model vs data (vgg11 on digits)", "compiler (CXX missing)"} <= set(CASES)
    cases = {**CASES, "another experiment's folder": ["seed=7", f"hydra.run.dir={existing}"]}
    procs = {name: subprocess.Popen([sys.executable, "-c", PROBE, *BASE, *args], cwd=tmp_path, text=True,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={
                                        **os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
                                        **ENV.get(name, {})})
             for name, args in cases.items()
             if args != ["--help"] and not (args == ["trainer=gpu"] and torch.cuda.is_available())}
    for name, proc in procs.items():
        err = proc.communicate(timeout=300)[1]
        assert "error:" in err and err.strip().endswith("NO-TORCH"), (name, err[-2000:])
