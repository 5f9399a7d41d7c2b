"""Never trust a file blindly: every kind of file lth reads back (``lth.lottery.layout.KINDS``) is
damaged in turn (truncated, garbage bytes, wrong keys, wrong shapes or values) and the answer checked.

``lth.run`` on the damaged folder: one ``error:`` line naming the file and how to recover, exit 2,
no traceback, nothing trained, nothing on disk changed (Hydra's own ``.hydra/`` and log aside); a
damaged Lightning checkpoint is set aside with a warning and its round redone. ``lth.report``: the
damaged experiment is skipped with one warning line, the others are reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from lth.lottery import Lottery
from lth.lottery.layout import KINDS, Layout
from tests.conftest import FAST, REPO, compose_config
from tests.test_resume import Interrupt, InterruptAt

# Everything an experiment can hold: θK (rewind), a control with its own mask, the instability
# copy (path.csv), the shared dense round, and round 2 interrupted (a Lightning checkpoint).
SMALL = ["experiment=quickstart", *FAST, "train.iterations=30", "eval_every=10", "checkpoint_every=10",
         "prune.rounds=2", "controls=[random_prune]", "instability=true", "analysis.interpolation_points=3",
         "rewind_iteration=5", "trainer.steps_per_call=5"]
DAMAGE = ("truncated", "garbage", "wrong_keys", "wrong_shapes")


class ReachedTraining(BaseException):
    """Raised by Trainer.fit in the re-run: a damaged file let training start."""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("intact")
    exp = Lottery(compose_config(SMALL), root / "exp")
    exp.extra_callbacks.append(InterruptAt("round_02/ticket", 25))
    with pytest.raises(Interrupt):
        exp.run()
    store = next((root / ".dense").iterdir())  # the shared dense round, as if interrupted too
    (store / "checkpoints").mkdir(exist_ok=True)
    shutil.copy(root / "exp" / "round_02" / "ticket" / "checkpoints" / "last.ckpt", store / "checkpoints")
    return root


def test_the_experiment_holds_every_kind_of_file(experiment):
    layout = Layout(experiment / "exp", store=next((experiment / ".dense").iterdir()))
    kinds = {kind.name for reader in ("run", "report") for kind, _ in layout.files(reader)}
    assert kinds == {kind.name for kind in KINDS}


def damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2 + 1])
    elif how == "garbage":
        path.write_bytes((bytes(range(256)) * (len(data) // 256 + 1))[: len(data)])
    elif path.suffix in (".pt", ".ckpt"):
        obj = torch.load(path, weights_only=True)
        state = obj["state_dict"] if path.suffix == ".ckpt" else obj
        for k in [k for k in state if path.suffix != ".ckpt" or k.startswith("model.")]:
            if how == "wrong_keys":
                state[f"{k}_renamed"] = state.pop(k)
            else:  # one value per tensor (a mask of one boolean per tensor is loadable and broadcasts)
                state[k] = state[k].flatten()[:1].clone()
        torch.save(obj, path)
    elif path.suffix == ".json":
        obj = json.loads(data)
        rows = obj if isinstance(obj, list) else [obj]
        for row in rows:
            for k in list(row):
                if how == "wrong_keys":
                    row[f"x{k}"] = row.pop(k)
                else:
                    row[k] = [row[k]]
        path.write_text(json.dumps(obj))
    elif path.suffix == ".csv":
        header, *lines = data.decode().splitlines()
        if how == "wrong_keys":
            header = ",".join(f"x{c}" for c in header.split(","))
        else:
            lines = [",".join("abc" for _ in line.split(",")) for line in lines]
        path.write_text("\n".join([header, *lines]) + "\n")
    else:
        raise AssertionError(f"no way to damage {path}")


def tree(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-1 of its bytes, but Hydra's own (.hydra/, the job's log) and
    the experiment's lock (which holds the pid of the process running it)."""
    return {p.relative_to(root).as_posix(): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file() and ".hydra" not in p.parts and p.suffix != ".log" and p.name != ".lock"}


def rerun(folder: Path, capsys, monkeypatch, cwd: Path) -> tuple[object, str, str]:
    """``python -m lth.run`` (in this process) on ``folder``: its exit status, or ReachedTraining."""
    import lth.run

    def reached(*args, **kwargs):
        raise ReachedTraining

    monkeypatch.setattr(pl.Trainer, "fit", reached)
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HYDRA_FULL_ERROR", "0")
    monkeypatch.setattr(sys, "argv", ["lth.run", *SMALL, f"hydra.run.dir={folder}"])
    monkeypatch.setattr(lth.run, "_task_started", False)
    capsys.readouterr()
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        lth.run.main()
        outcome = 0
    except SystemExit as exc:
        outcome = exc.code
    except ReachedTraining:
        outcome = "training"
    finally:  # lth.run installs its signal handlers: pytest's come back
        for s, handler in handlers.items():
            signal.signal(s, handler)
    out, err = capsys.readouterr()
    return outcome, out, err


CASES = [(kind, how) for kind in KINDS for how in DAMAGE]


@pytest.mark.parametrize("kind,how", CASES, ids=[f"{k.where}-{'store-' if k.store else ''}{h}" for k, h in CASES])
def test_a_damaged_file_is_never_used(kind, how, experiment, tmp_path, capsys, caplog, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(experiment, root)
    layout = Layout(root / "exp", store=next((root / ".dense").iterdir()))
    path = next(p for k, p in layout.files(kind.reader) if k is kind)
    if kind.reader == "report":
        shutil.copytree(root / "exp", root / "intact")
        damage(path, how)
        return check_report(root, path, caplog)
    damage(path, how)
    before = tree(root)
    outcome, out, err = rerun(root / "exp", capsys, monkeypatch, tmp_path)
    assert "Traceback" not in out + err
    if kind.redo:  # a checkpoint: set aside with a warning, the round redone from its start
        assert outcome == "training", (outcome, err[-2000:])
        assert not path.exists() and path.with_suffix(".corrupt").exists()
        assert f"checkpoint {path} is corrupt" in out + err and "redoing that round" in out + err
        return
    lines = [line for line in err.splitlines() if line.strip()]
    assert outcome == 2 and len(lines) == 1 and lines[0].startswith("error: "), (outcome, out[-2000:], err[-2000:])
    assert f"{path} is damaged (" in lines[0] and ("delete" in lines[0] or "re-run" in lines[0]), lines[0]
    assert tree(root) == before  # nothing else changed


def check_report(root: Path, damaged: Path, caplog) -> None:
    """``lth.report`` over the damaged experiment and an intact one: one warning naming the file, the
    intact one reported."""
    from lth.report import main

    with caplog.at_level("WARNING", logger="lth"):
        assert main([str(root / "exp"), str(root / "intact"), "--out", str(root / "report")]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: experiment {root / 'exp'} skipped: {damaged} is "
                                                         f"damaged ("), warnings
    md = (root / "report" / "report.md").read_text()
    assert str(root / "intact") in md and f"{root / 'exp'}`" not in md and f"{root / 'exp'} " not in md


def test_the_issues_mask_of_one_boolean_per_tensor_is_refused(experiment, tmp_path, capsys, monkeypatch):
    """Issue #24's case: a level's mask replaced by a loadable one of one boolean per tensor was
    broadcast to 'keep everything' and trained silently as a dense ticket."""
    root = tmp_path / "root"
    shutil.copytree(experiment, root)
    mask = root / "exp" / "round_02" / "mask.pt"
    torch.save({k: torch.tensor(True) for k in torch.load(mask, weights_only=True)}, mask)
    before = tree(root)
    outcome, out, err = rerun(root / "exp", capsys, monkeypatch, tmp_path)
    assert outcome == 2, (outcome, err[-2000:])
    assert err.strip().splitlines() == [
        f"error: {mask} is damaged (not a mask of this model's prunable tensors: hidden.0.weight is () torch.bool, "
        f"expected (300, 64) torch.bool); delete it and re-run the same command to recompute it"]
    assert tree(root) == before


def test_the_issues_damaged_results_csv_is_skipped_by_the_report(experiment, tmp_path):
    """Issue #24's case: ``python -m lth.report`` over a folder where one experiment's results.csv is
    damaged ended in a ``KeyError: 'round'`` traceback instead of reporting the others."""
    for name in ("a", "b"):
        shutil.copytree(experiment / "exp", tmp_path / "sweep" / name)
    damaged = tmp_path / "sweep" / "a" / "results.csv"
    with open(damaged) as f:
        rows = [{k: v for k, v in row.items() if k != "round"} for row in csv.DictReader(f)]
    with open(damaged, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    proc = subprocess.run([sys.executable, "-m", "lth.report", str(tmp_path / "sweep")], cwd=REPO, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stderr[-3000:]
    warnings = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: experiment {damaged.parent} skipped: {damaged} is damaged (no column round); "
                        f"re-run the experiment's command to rewrite it from its rounds"]
    md = (tmp_path / "sweep" / "report.md").read_text()
    assert f"{tmp_path / 'sweep' / 'b'}" in md and f"{damaged.parent}`" not in md and f"{damaged.parent} " not in md


def test_a_measurement_that_is_not_a_number_makes_results_csv_damaged(experiment, tmp_path, caplog):
    """One measured value of results.csv replaced by text (a hand edit, a bad merge) was read as a missing
    measurement: the report showed '–' there and reported the rest as if nothing were wrong."""
    root = tmp_path / "root"
    shutil.copytree(experiment, root)
    shutil.copytree(root / "exp", root / "intact")
    results = root / "exp" / "results.csv"
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["test_acc_at_es"] = "abc"
    with open(results, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    check_report(root, results, caplog)
    assert "(line 3: test_acc_at_es='abc' is not a number)" in caplog.text
