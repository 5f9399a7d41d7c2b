"""Wrong settings are refused before training with one clear message and exit status 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from lth.validation import ConfigError, check, check_output_dir
from tests.conftest import FAST, REPO, compose_config

BAD_SETTINGS = [
    (["train.iterations=0"], "train.iterations=0 must be an integer >= 1"),
    (["train.batch_size=-5"], "train.batch_size=-5 must be an integer >= 1"),
    (["eval_every=0"], "eval_every=0 must be an integer >= 1"),
    (["prune.rounds=-1"], "prune.rounds=-1 must be an integer >= 0"),
    (["checkpoint_every=0"], "checkpoint_every=0 must be an integer >= 1"),
    (["rewind_iteration=100", "train.iterations=100"], "rewind_iteration=100 must be below train.iterations=100"),
    (["rewind_iteration=-1"], "rewind_iteration=-1"),
    (["model.rates.fc=1.5"], "model.rates.fc=1.5 must be a number >= 0 and < 1"),
    (["model.rates.output=0"], "model.rates.output=0 must be a number > 0 and < 1"),
    (["prune=global", "prune.rate=0"], "prune.rate=0 must be a number > 0 and < 1"),
    (["prune=global", "model.global_rate=1.0"], "model.global_rate=1 must be a number > 0 and < 1"),
    (["optimizer.lr=0"], "optimizer.lr=0 must be a number > 0"),
    (["strategy=sideways"], "strategy='sideways' is not known"),
    (["controls=[nope]"], "controls contains 'nope', which is not known"),
    (["model=vgg11", "data=digits"], "model=vgg11 does not fit data=digits"),
    (["trainer.steps_per_call=0"], "trainer.steps_per_call=0 must be an integer >= 1"),
    (["data=imagefolder", "data.path=/prepared", "data.num_workers=2", "eval_beside_training=true"],
     "eval_beside_training=True cannot run beside a streamed dataset's loader processes"),
]


@pytest.mark.parametrize("overrides,message", BAD_SETTINGS, ids=[" ".join(o) for o, _ in BAD_SETTINGS])
def test_each_bad_setting_is_named_in_one_message(overrides, message):
    with pytest.raises(ConfigError) as err:
        check(compose_config(overrides))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_good_configurations_pass():
    check(compose_config(["experiment=quickstart"]))
    check(compose_config([]))  # LeNet: its conv rate 0.0 means "no conv layers", not an error
    check(compose_config(["prune=global", "rewind_iteration=10"]))


def test_unwritable_output_folder(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="cannot be created or written.*hydra.run.dir=PATH"):
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


def test_unknown_option_exits_2_with_one_line(tmp_path):
    code, out, err = finish(lth_run("model=nope", f"hydra.run.dir={tmp_path / 'x'}"))
    assert code == 2
    assert err.strip().splitlines() == ["error: model=nope is not an option of model; choose model=conv2, conv4, conv6, "
                                        "lenet300_100, resnet18, resnet20, resnet50, vgg11, vgg13, vgg16, vgg19"]
    assert not (tmp_path / "x").exists()


def test_bad_setting_exits_2_with_one_line_no_traceback_nothing_written(tmp_path):
    run_dir = tmp_path / "exp"
    code, out, err = finish(lth_run("experiment=quickstart", "model.rates.fc=2", f"hydra.run.dir={run_dir}"))
    assert code == 2, err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == ["error: model.rates.fc=2 must be a number >= 0 and < 1"]
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


def test_corrupt_mnist_file_is_named_before_it_is_read(tmp_path, data_dir):
    from lth.data import MNISTDataModule
    from lth.data.integrity import DatasetCorruptError

    root = corrupt_mnist(tmp_path / "data", data_dir)
    with pytest.raises(DatasetCorruptError, match=r"t10k-labels-idx1-ubyte is corrupt \(MD5 .*data.download=true"):
        MNISTDataModule(root=str(root)).setup()


def test_corrupt_cifar10_file_is_detected(tmp_path, data_dir):
    from lth.data.integrity import DatasetCorruptError, verify_torchvision

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    meta = (data_dir / "cifar-10-batches-py" / "batches.meta").read_bytes()
    (folder / "batches.meta").write_bytes(meta)
    verify_torchvision("CIFAR-10", tmp_path)  # intact (the missing batches are left to the loader)
    (folder / "batches.meta").write_bytes(meta[:-1])
    with pytest.raises(DatasetCorruptError, match="batches.meta is corrupt"):
        verify_torchvision("CIFAR-10", tmp_path)


def test_missing_dataset_without_download_names_data_root(tmp_path):
    from lth.data import MNISTDataModule
    from lth.data.torchvision_files import DatasetNotFoundError

    with pytest.raises(DatasetNotFoundError, match="MNIST files not found under .*data.root=PATH"):
        MNISTDataModule(root=str(tmp_path / "empty"), download=False).setup()


def test_truncated_file_without_the_checksum_is_called_damaged_not_a_failed_download(tmp_path, data_dir, monkeypatch):
    from lth.data import MNISTDataModule
    from lth.data.integrity import DatasetCorruptError

    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for f in (data_dir / "MNIST" / "raw").iterdir():
        if f.name != "train-images-idx3-ubyte":
            (raw / f.name).symlink_to(f)
    (raw / "train-images-idx3-ubyte").write_bytes((data_dir / "MNIST" / "raw" / "train-images-idx3-ubyte").read_bytes()[:100_000])
    monkeypatch.setenv("LTH_SKIP_DATA_CHECKSUM", "1")
    with pytest.raises(DatasetCorruptError, match="present but cannot be read .*truncated or damaged") as err:
        MNISTDataModule(root=str(tmp_path), download=True).setup()
    assert "download failed" not in str(err.value)


# ---------------------------------------------------------------------- the schema
from omegaconf import OmegaConf  # noqa: E402

from lth import config_schema  # noqa: E402
from lth.config_schema import CONTROLS, LthConfig, fields  # noqa: E402
from lth.validation import check_value, check_settings, resolved  # noqa: E402

CONF = REPO / "conf"


def _options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def test_every_config_group_option_composes_and_validates():
    """Drift guard: every option of every group (and every model with both pruning schemes) passes the
    schema, so a key added to conf/ without its field in lth.config_schema fails here."""
    combos = [[f"model={m}", f"prune={p}"] for m in _options("model") for p in _options("prune")]
    combos += [[f"data={d}", "model=conv2"] for d in _options("data")]
    combos += [[f"trainer={t}"] for t in _options("trainer")] + [[f"logger={lg}"] for lg in _options("logger")]
    combos += [[f"experiment={e}"] for e in _options("experiment")]
    combos += [["lr_warmup=true", "model=resnet20"], ["strategy=continue", "instability=true", "controls=[reinit,snip]"]]
    for overrides in combos:
        cfg = compose_config([*FAST, *overrides])
        check(cfg, machine=False)
        OmegaConf.merge(OmegaConf.structured(LthConfig), resolved(cfg))  # the schema is a structured config too


def test_the_schemas_controls_are_the_branch_registry():
    from lth.lottery.registry import controls

    assert CONTROLS == controls()


def test_a_new_field_is_checked_from_its_declaration(monkeypatch):
    """Adding a key is adding one field: its type, range and condition are checked from the declaration."""
    import dataclasses

    from lth.config_schema import SGD, key

    @dataclasses.dataclass
    class Extended(LthConfig):
        new_setting: int = key(5, "a new setting", ge=1, when=SGD)

    monkeypatch.setattr(config_schema, "LthConfig", Extended)
    tree = {**resolved(compose_config(FAST)), "new_setting": 3}
    check_settings(tree)
    for bad, message in ((0, "new_setting=0 must be an integer >= 1"), (float("inf"), "new_setting=inf must be")):
        with pytest.raises(ConfigError, match=message):
            check_settings({**tree, "new_setting": bad})
    with pytest.raises(ConfigError, match="new_setting=2.5 must be an integer >= 1"):
        check_value("new_setting", 2.5)
    with pytest.raises(ConfigError, match="new_settng is not a setting; did you mean new_setting"):
        check_settings({**tree, "new_settng": 3})
    with pytest.raises(ConfigError, match="new_setting is read only when optimizer.name=sgd"):
        check_settings(tree, ["new_setting"])
    assert "new_setting" in fields()


@pytest.mark.parametrize("overrides,message", [
    (["+optimizer.weight_decy=0.1"], "optimizer.weight_decy is not a setting of optimizer; did you mean optimizer.weight_decay?"),
    (["+trian.iterations=5"], "trian is not a setting; did you mean train?"),
    (["+model.rates.fcc=0.2"], "model.rates.fcc is not a setting of model.rates; did you mean model.rates.fc?"),
    (["optimizer.lr=inf"], "optimizer.lr=inf must be a number > 0"),
    (["optimizer.name=sgd", "optimizer.nesterov=true"], "optimizer.nesterov=True needs momentum"),
    (["model=resnet20", "model.exempt=[output,*shortcutt*]"], "model.exempt contains '*shortcutt*', which matches no"),
    (["prune=global", "model.exempt=[fc,output]"], "exempts every prunable tensor"),
    (["prune.schedule=oneshot", "model.rates.output=0.6", "prune.rounds=30"], "model.rates.output=0.6 with prune.rounds=30"),
])
def test_schema_messages(overrides, message):
    with pytest.raises(ConfigError) as err:
        check(compose_config([*FAST, *overrides]), machine=False)
    assert message in str(err.value)


def test_global_rate_099_is_refused_with_the_rounds_possible():
    with pytest.raises(ConfigError) as err:
        check(compose_config([*FAST, "prune=global", "prune.rate=0.99", "prune.rounds=4"]))
    assert str(err.value) == "prune.rate=0.99 with prune.rounds=4 prunes every weight in round 3: set prune.rounds=2 " \
                             "or lower prune.rate"
    check(compose_config([*FAST, "prune=global", "prune.rate=0.99", "prune.rounds=2"]))


def test_the_readme_configuration_table_is_the_schemas():
    readme = (REPO / "README.md").read_text()
    assert config_schema.markdown() in readme, "regenerate it: python -c 'import lth.config_schema as s; print(s.markdown())'"


def test_what_the_checks_know_without_torch_is_what_torch_and_lightning_say():
    """The copies that let refusals come before torch is imported (lth.config_schema's Lightning names,
    lth.data.integrity's MD5s, lth.machine, lth.data.facts) fail here when an upgrade changes the original."""
    import typing

    import torch
    from lightning_fabric.connector import _PRECISION_INPUT
    from pytorch_lightning.strategies import StrategyRegistry
    from torch._inductor import config as inductor
    from torchvision.datasets import CIFAR10, MNIST

    from lth.config_schema import PRECISIONS, STRATEGIES
    from lth.data import DigitsDataModule
    from lth.data.integrity import TORCHVISION_MD5
    from lth.machine import has_cuda, inductor_cxx

    def args(tp):
        return [v for a in typing.get_args(tp) for v in (args(a) if typing.get_args(a) else [a])]
    assert sorted(STRATEGIES) == sorted(["auto", *StrategyRegistry.available_strategies()])
    assert sorted(map(str, PRECISIONS)) == sorted(map(str, args(_PRECISION_INPUT)))
    assert TORCHVISION_MD5["MNIST"] == dict(MNIST.resources)
    assert TORCHVISION_MD5["CIFAR-10"] == {**dict(CIFAR10.train_list + CIFAR10.test_list),
                                           CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
    assert has_cuda() == torch.cuda.is_available() and inductor_cxx() == inductor.cpp.cxx[-1]
    sizes = DigitsDataModule(val_size=180).load_splits()
    assert len(sizes["train"][1]) + len(sizes["val"][1]) == DigitsDataModule.train_file_size
    assert tuple(sizes["test"][0].shape[1:]) == DigitsDataModule.input_shape


def test_every_condition_holds_under_the_overrides_that_enable_it():
    """A key's ``when`` is true under its ``enable`` overrides: a condition that never holds would refuse its key
    everywhere (data.path, data.image_size and data.num_workers under data=imagefolder were)."""
    conditions = {id(f.metadata["when"]): f.metadata["when"] for f in fields().values() if f.metadata["when"]}
    for when in conditions.values():
        assert not when.enable or when.test(resolved(compose_config([*FAST, *when.enable]))), when.words
    check_settings(resolved(compose_config([*FAST, "data=imagefolder", "data.path=/x", "data.image_size=64"])),
                   ["data.path", "data.image_size"])


def test_a_class_lth_does_not_know_is_imported_or_built_to_check_it():
    """The torch-free tables cover the built-in spellings; any other ``_target_`` (here the same classes by their
    module paths) is read off its class, or built and run, and gives the same answers."""
    from lth.data.facts import DATASETS, facts
    from lth.models.shapes import prunable_shapes

    assert facts("lth.data.mnist.MNISTDataModule")[:4] == DATASETS["lth.data.MNISTDataModule"][:4]
    arch = {"hidden": [30, 20], "dropout": 0.0}
    assert prunable_shapes({"_target_": "lth.models.lenet.LeNet", **arch}, (1, 8, 8), 10) == prunable_shapes(
        {"_target_": "lth.models.LeNet", **arch}, (1, 8, 8), 10)
    with pytest.raises(ConfigError, match="model=vgg11 does not fit data=digits.*too small"):
        check(compose_config([*FAST, "experiment=quickstart", "model=vgg11", "model.arch._target_=lth.models.vgg.VGG"]))
