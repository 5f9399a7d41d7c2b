"""Wrong settings are refused before training with one clear message and exit status 2."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lth.validation import ConfigError, check_output_dir, validate_config
from tests.conftest import FAST, REPO, compose_config

BAD_SETTINGS = [
    (["train.iterations=0"], "train.iterations=0 must be a positive integer"),
    (["train.batch_size=-5"], "train.batch_size=-5 must be a positive integer"),
    (["eval_every=0"], "eval_every=0 must be a positive integer"),
    (["prune.rounds=0"], "prune.rounds=0 must be a positive integer"),
    (["checkpoint_every=0"], "checkpoint_every=0 must be a positive integer"),
    (["rewind_iteration=100", "train.iterations=100"], "rewind_iteration=100 must be an integer in [0, train.iterations=100)"),
    (["rewind_iteration=-1"], "rewind_iteration=-1"),
    (["model.rates.fc=1.5"], "model.rates.fc=1.5 must be strictly between 0 and 1"),
    (["model.rates.output=0"], "model.rates.output=0 must be strictly between 0 and 1"),
    (["prune=global", "prune.rate=0"], "prune.rate=0 must be strictly between 0 and 1"),
    (["prune=global", "model.global_rate=1.0"], "model.global_rate=1.0 must be strictly between 0 and 1"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a positive number"),
    (["strategy=sideways"], "strategy='sideways' is not known"),
    (["controls=[nope]"], "controls contains 'nope'"),
    (["model=vgg11", "data=digits"], "model=vgg11 does not fit data=digits"),
    (["trainer.steps_per_call=0"], "trainer.steps_per_call=0 must be a positive integer"),
    (["mask_gradients=maybe"], "mask_gradients='maybe' must be true or false"),
    (["lr_warmup=1"], "lr_warmup=1 must be true or false"),
]


@pytest.mark.parametrize("overrides,message", BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
def test_each_bad_setting_is_named_in_one_message(overrides, message):
    with pytest.raises(ConfigError) as err:
        validate_config(compose_config(overrides))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_good_configurations_pass():
    validate_config(compose_config(["experiment=quickstart"]))
    validate_config(compose_config([]))  # LeNet: its conv rate 0.0 means "no conv layers", not an error
    validate_config(compose_config(["prune=global", "rewind_iteration=10"]))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable.*hydra.run.dir=PATH"):
        check_output_dir(blocker / "exp")


def lth_run(*args, env=None, cwd=None):
    return subprocess.Popen(
        [sys.executable, "-m", "lth.run", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false", *args],
        cwd=cwd or REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})},
    )


def finish(proc, timeout=240):
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_unknown_option_exits_2_with_hydras_message(tmp_path):
    code, out, err = finish(lth_run("model=nope", f"hydra.run.dir={tmp_path / 'x'}"))
    assert code == 2
    assert "Could not find 'model/nope'" in out + err and "lenet300_100" in out + err
    assert not (tmp_path / "x").exists()


def test_bad_setting_exits_2_with_one_line_no_traceback_nothing_written(tmp_path):
    run_dir = tmp_path / "exp"
    code, out, err = finish(lth_run("experiment=quickstart", "model.rates.fc=2", f"hydra.run.dir={run_dir}"))
    assert code == 2, err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.rates.fc=2 must be strictly between 0 and 1 (the share of remaining weights "
                      "pruned per round); set e.g. model.rates.fc=0.2"]
    assert not (run_dir / "experiment.json").exists()


def corrupt_mnist(root: Path, data_dir: Path) -> Path:
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        if not f.name.endswith(".gz"):
            (raw / f.name).symlink_to(f)
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    labels.unlink()
    data[100] ^= 0xFF
    labels.write_bytes(bytes(data))
    return root


@pytest.mark.slow
def test_bad_inputs_table_in_subprocesses(tmp_path, data_dir):
    """Every case in its own process, all at once: exit 2, one ``error:`` line, no traceback."""
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    corrupt = corrupt_mnist(tmp_path / "corrupt", data_dir)
    mnist = [f"data.root={data_dir}", "train.iterations=20", "eval_every=10", "prune.rounds=1"]
    cases = {
        "iterations": (["train.iterations=-3"], "train.iterations=-3 must be a positive integer"),
        "rate": (["model.rates.fc=1.2"], "model.rates.fc=1.2 must be strictly between 0 and 1"),
        "rewind": (["rewind_iteration=99999"], "rewind_iteration=99999 must be an integer in [0"),
        "fit": (["model=vgg11", "data=digits"], "model=vgg11 does not fit data=digits"),
        "missing": ([f"data.root={tmp_path / 'empty'}", "data.download=false"], "MNIST files not found under"),
        "corrupt": ([f"data.root={corrupt}", "data.download=false", "train.iterations=20", "prune.rounds=1"],
                    "t10k-labels-idx1-ubyte is corrupt (MD5"),
        "unwritable": ([*mnist, f"hydra.run.dir={blocker / 'exp'}"], None),
    }
    procs = {}
    for name, (args, _) in cases.items():
        run_dir = [] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={tmp_path / name}"]
        procs[name] = lth_run(*args, *run_dir)
    for name, (args, message) in cases.items():
        code, out, err = finish(procs[name])
        assert code == 2, (name, out[-2000:], err[-2000:])
        assert "Traceback" not in out + err, name
        if message is not None:
            errors = [line for line in err.splitlines() if line.startswith("error:")]
            assert len(errors) == 1 and message in errors[0], (name, err[-2000:])
            assert not (tmp_path / name / "experiment.json").exists(), name
    assert blocker.read_text() == "x"


def test_corrupt_mnist_file_is_named_before_it_is_read(tmp_path, data_dir):
    from lth.data import MNISTDataModule
    from lth.data.integrity import DatasetCorruptError

    root = corrupt_mnist(tmp_path / "data", data_dir)
    with pytest.raises(DatasetCorruptError, match=r"t10k-labels-idx1-ubyte is corrupt \(MD5 .*data.download=true"):
        MNISTDataModule(root=str(root)).setup()


def test_corrupt_cifar10_file_is_detected(tmp_path, data_dir):
    from lth.data.integrity import DatasetCorruptError, verify_cifar10

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    meta = (data_dir / "cifar-10-batches-py" / "batches.meta").read_bytes()
    (folder / "batches.meta").write_bytes(meta)
    verify_cifar10(tmp_path)  # intact (the missing batches are left to the loader)
    (folder / "batches.meta").write_bytes(meta[:-1])
    with pytest.raises(DatasetCorruptError, match="batches.meta is corrupt"):
        verify_cifar10(tmp_path)


def test_missing_dataset_without_download_names_data_root(tmp_path):
    from lth.data import MNISTDataModule
    from lth.data.torchvision_files import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="MNIST files not found under .*data.root=PATH"):
        MNISTDataModule(root=str(tmp_path / "empty"), download=False).setup()
