"""The paper's CIFAR-10 architectures: pinned weight counts, layer kinds, configs, short experiments."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import hydra.utils
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from lth.data import CIFAR10DataModule
from lth.data.facts import DATASETS
from lth.data.augment import random_crop_flip
from lth.lottery import Lottery
from lth.models import VGG, ConvNet, ResNet
from lth.models.shapes import SHAPES, built_shapes, prunable_shapes
from lth.pruning import Mask, prunable_tensors
from lth.pruning.prunable import is_exempt
from lth.validation import check
from tests.conftest import FAST, compose_config
from tests.test_cifar10 import load_cifar

CIFAR = ((3, 32, 32), 10)
ALL_MODELS = ["conv2", "conv4", "conv6", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20", "resnet18"]


def prunable_count(model: nn.Module) -> int:
    return sum(t.numel for t in prunable_tensors(model))


# ---------------------------------------------------------------- weight counts
@pytest.mark.parametrize(
    "depth, expected", [(2, 4_300_992), (4, 2_425_024), (6, 2_261_184)], ids=["conv2", "conv4", "conv6"]
)
def test_conv_prunable_weights(depth, expected):
    model = ConvNet(*CIFAR, depth=depth)
    tensors = prunable_tensors(model)
    assert prunable_count(model) == expected
    kinds = [t.kind for t in tensors]
    assert kinds == ["conv"] * depth + ["fc", "fc", "output"]
    assert tensors[-1].numel == 256 * 10


@pytest.mark.parametrize(
    "depth, expected, convs",
    [(11, 9_222_848, 8), (13, 9_407_168, 10), (16, 14_715_584, 13), (19, 20_024_000, 16)],
    ids=["vgg11", "vgg13", "vgg16", "vgg19"],
)
def test_vgg_prunable_weights(depth, expected, convs):
    model = VGG(*CIFAR, depth=depth)
    tensors = prunable_tensors(model)
    assert prunable_count(model) == expected
    assert [t.kind for t in tensors] == ["conv"] * convs + ["output"]
    assert tensors[-1].numel == 512 * 10  # one fc 512 -> 10
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == convs
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))  # BN follows every conv


def test_vgg_plan_argument():
    assert prunable_count(VGG(*CIFAR, plan=[16, "M", 32])) == 3 * 16 * 9 + 16 * 32 * 9 + 32 * 10


def test_resnet20_counts_and_shortcuts():
    model = ResNet(*CIFAR, depth=20)
    total = sum(p.numel() for p in model.parameters())
    assert total == 272_474 and 270_000 < total < 275_000  # He et al.: 0.27M
    assert prunable_count(model) == 270_896
    tensors = prunable_tensors(model)
    shortcuts = [t for t in tensors if "shortcut" in t.name]
    assert [t.numel for t in shortcuts] == [16 * 32, 32 * 64]  # 1x1 convs where the shape changes
    assert tensors[-1].kind == "output" and tensors[-1].numel == 64 * 10
    exempt = ["output", "*shortcut*"]
    pruned = [t for t in tensors if not is_exempt(t, exempt)]
    assert len(pruned) == 19 and all(t.kind == "conv" for t in pruned)  # 19 3x3 convs
    assert all(m.bias is None for m in model.modules() if isinstance(m, nn.Conv2d))
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 21


@pytest.mark.parametrize("init", ["glorot", "openlth"])
def test_resnet_initialisations_have_their_papers_statistics(init):
    """``glorot`` (Frankle & Carbin 2019): weights ~ N(0, 2/(fan_in+fan_out)), biases 0, BatchNorm scale 1.
    ``openlth`` (OpenLTH's cifar_resnet_20: kaiming_normal + uniform BatchNorm): weights ~ N(0, 2/fan_in),
    BatchNorm scale ~ U(0, 1), shift 0. Checked on the largest tensors, whose sample std is within 2%."""
    torch.manual_seed(0)
    model = ResNet(*CIFAR, depth=20, init=init)
    conv = model.blocks[8].conv2.weight  # 64 x 64 x 3 x 3
    fan_in = fan_out = 64 * 9
    want = math.sqrt(2 / fan_in) if init == "openlth" else math.sqrt(2 / (fan_in + fan_out))
    assert float(conv.std()) == pytest.approx(want, rel=0.02) and abs(float(conv.mean())) < 0.05 * want
    scales = torch.cat([m.weight.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    shifts = torch.cat([m.bias.detach() for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert torch.equal(shifts, torch.zeros_like(shifts))
    if init == "glorot":
        assert torch.equal(scales, torch.ones_like(scales)) and torch.equal(model.output.bias, torch.zeros(10))
    else:
        assert 0 <= float(scales.min()) and float(scales.max()) <= 1 and float(scales.mean()) == pytest.approx(0.5, abs=0.05)
    with pytest.raises(ValueError, match="init='he' is not one of glorot, openlth"):
        ResNet(*CIFAR, depth=20, init="he")


def test_resnet_depths():
    assert len([t for t in prunable_tensors(ResNet(*CIFAR, depth=56)) if t.kind == "conv"]) == 55 + 2
    with pytest.raises(ValueError):
        ResNet(*CIFAR, depth=18)


def test_forward_shapes_and_seeded_initialisation():
    x = torch.randn(2, 3, 32, 32)
    for model in (ConvNet(*CIFAR, depth=6), ResNet(*CIFAR, depth=20), *(VGG(*CIFAR, depth=d) for d in (11, 13, 16))):
        model.eval()
        with torch.no_grad():
            assert model(x).shape == (2, 10)
    torch.manual_seed(0)
    a = ConvNet(*CIFAR, depth=2).state_dict()
    torch.manual_seed(0)
    b = ConvNet(*CIFAR, depth=2).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    w = a["hidden.0.weight"]
    assert abs(w.std().item() - (2 / sum(w.shape)) ** 0.5) < 1e-3  # Gaussian Glorot
    assert not a["output.bias"].any()


# ---------------------------------------------------------------- configs
PROTOCOLS = {
    # model: (arch target, scheme, iterations, batch, optimizer, lr, milestones, augment)
    "conv2": ("lth.models.ConvNet", "layerwise", 20000, 60, "adam", 2e-4, [], False),
    "conv4": ("lth.models.ConvNet", "layerwise", 25000, 60, "adam", 3e-4, [], False),
    "conv6": ("lth.models.ConvNet", "layerwise", 30000, 60, "adam", 3e-4, [], False),
    "vgg11": ("lth.models.VGG", "global", 112480, 64, "sgd", 0.1, [56240, 84360], True),
    "vgg13": ("lth.models.VGG", "global", 112480, 64, "sgd", 0.1, [56240, 84360], True),
    "vgg16": ("lth.models.VGG", "global", 112480, 64, "sgd", 0.1, [56240, 84360], True),
    "vgg19": ("lth.models.VGG", "global", 112480, 64, "sgd", 0.1, [56240, 84360], True),
    "resnet20": ("lth.models.ResNet", "global", 30000, 128, "sgd", 0.1, [20000, 25000], True),
    "resnet18": ("lth.models.ResNet", "global", 30000, 128, "sgd", 0.1, [20000, 25000], True),
}


@pytest.mark.parametrize("name", ALL_MODELS)
def test_model_config_composes_with_the_papers_protocol(name):
    cfg = compose_config([f"model={name}", *FAST])
    target, scheme, iterations, batch, opt, lr, milestones, augment = PROTOCOLS[name]
    assert cfg.data._target_ == "lth.data.CIFAR10DataModule"
    assert cfg.model.arch._target_ == target and cfg.prune.scheme == scheme
    assert (cfg.train.iterations, cfg.train.batch_size, cfg.train.augment) == (iterations, batch, augment)
    assert (cfg.optimizer.name, cfg.optimizer.lr) == (opt, pytest.approx(lr))
    assert list(cfg.schedule.milestones) == milestones
    if opt == "sgd":
        assert (cfg.optimizer.momentum, cfg.optimizer.weight_decay) == (0.9, pytest.approx(1e-4))
    if name.startswith("conv"):
        conv_rate = 0.15 if name == "conv6" else 0.1
        assert dict(cfg.prune.rates) == {"conv": conv_rate, "fc": 0.2, "output": 0.1}
        assert list(cfg.prune.exempt) == []
    elif name.startswith("vgg"):
        assert cfg.prune.rate == 0.2 and list(cfg.prune.exempt) == ["output"]
        assert cfg.warmup.iterations == 10000 and cfg.optimizer.lr == 0.1
    else:
        assert cfg.prune.rate == 0.2 and list(cfg.prune.exempt) == ["output", "*shortcut*"]
        assert cfg.warmup.iterations == 20000  # to 0.03 with warm-up, 0.1 without (tests/test_protocol_defects.py)
        assert cfg.model.name == "resnet20"  # resnet18 is an alias of the same configuration
    check(cfg)  # the model on the data's shape (lth.models.shapes: no network is built)


def test_resnet18_is_an_alias_of_resnet20():
    a, b = compose_config(["model=resnet18", *FAST]), compose_config(["model=resnet20", *FAST])
    assert OmegaConf.to_container(a) == OmegaConf.to_container(b)


# ---------------------------------------------------------------- short experiments
@pytest.fixture
def small_cifar(data_dir, monkeypatch):
    """Real CIFAR-10 images, but small validation and test sets so that CPU evaluation stays cheap."""
    full = load_cifar(str(data_dir))
    small = {"train": tuple(t[:256] for t in full.splits["train"]),
             "val": tuple(t[:16] for t in full.splits["val"]),
             "test": tuple(t[:16] for t in full.splits["test"])}
    monkeypatch.setattr(CIFAR10DataModule, "load_splits", lambda self: dict(small))
    return small


def run_experiment(tmp_path, data_dir, name, extra=()):
    # 2 iterations per round, evaluated at both; tiny batches because CPU convolutions are slow
    cfg = compose_config([f"model={name}", *FAST, f"data.root={data_dir}", "train.iterations=2", "eval_every=1",
                          "prune.rounds=1", "eval_batch_size=16", "train.batch_size=4", *extra])
    exp = Lottery(cfg, tmp_path / name)
    rows = exp.run()
    return exp, rows


def test_conv2_short_experiment(tmp_path, data_dir, small_cifar):
    exp, rows = run_experiment(tmp_path, data_dir, "conv2")
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["weights_remaining"] == 100.0 and rows[1]["weights_remaining"] < 100.0
    assert exp.datamodule.augment is None
    mask = Mask.load(exp.dir / "round_01" / "mask.pt")
    kept = {name: m.float().mean().item() for name, m in mask.items()}
    assert kept["features.0.weight"] == pytest.approx(0.9, abs=0.01)  # conv 10%
    assert kept["hidden.0.weight"] == pytest.approx(0.8, abs=0.01)  # fc 20%
    assert kept["output.weight"] == pytest.approx(0.9, abs=0.01)  # output 10%
    assert (exp.dir / "results.csv").exists()


def test_vgg_protocol_short_experiment(tmp_path, data_dir, small_cifar):
    """VGG-19's protocol (global pruning, output exempt, SGD, warm-up, augmentation) on a tiny VGG plan."""
    exp, rows = run_experiment(tmp_path, data_dir, "vgg19", ["prune=global", "lr_warmup=true", "model.arch.plan=[8,M,16]"])
    assert exp.datamodule.augment is random_crop_flip
    assert [r["round"] for r in rows] == [0, 1]
    mask = Mask.load(exp.dir / "round_01" / "mask.pt")
    assert mask["output.weight"].all()  # exempt
    alive = sum(m.sum().item() for n, m in mask.items() if n != "output.weight")
    total = sum(m.numel() for n, m in mask.items() if n != "output.weight")
    assert alive == total - round(0.2 * total)


@pytest.mark.slow
@pytest.mark.parametrize("name, extra", [("conv6", []), ("resnet20", ["lr_warmup=true"])])
def test_short_experiment(tmp_path, data_dir, small_cifar, name, extra):
    exp, rows = run_experiment(tmp_path, data_dir, name, extra)
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[0]["weights_remaining"] == 100.0 and rows[1]["weights_remaining"] < 100.0
    assert exp.datamodule.augment is (None if name.startswith("conv") else random_crop_flip)
    if name == "resnet20":
        mask = Mask.load(exp.dir / "round_01" / "mask.pt")
        exempt = [n for n in mask if "shortcut" in n or n == "output.weight"]
        assert len(exempt) == 3 and all(mask[n].all() for n in exempt)


@pytest.mark.slow
def test_vgg19_short_experiment_with_warmup(tmp_path, data_dir, small_cifar):
    """The real VGG-19 (20M weights): slow on CPU, mostly the global magnitude threshold and convolutions."""
    exp, rows = run_experiment(tmp_path, data_dir, "vgg19", ["prune=global", "lr_warmup=true", "train.batch_size=2"])
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["weights_remaining"] == pytest.approx(100 * (1 - 0.2 * (1 - 5120 / 20_024_000)), abs=0.01)


# ---------------------------------------------------------------- the command line
CLI_WRAPPER = """
import sys
import torch
from lth.data import CIFAR10DataModule
from lth.data.facts import DATASETS
orig = CIFAR10DataModule.load_splits
def small(self):  # real CIFAR-10, tiny validation and test sets: CPU evaluation of VGG-19 on 15K images takes minutes
    s = orig(self)
    return {"train": tuple(t[:256] for t in s["train"]), "val": tuple(t[:8] for t in s["val"]),
            "test": tuple(t[:8] for t in s["test"])}
CIFAR10DataModule.load_splits = small
from lth.run import main
sys.argv = ["lth.run", *sys.argv[1:]]
main()
"""


@pytest.mark.slow
def test_vgg19_warmup_sweep_from_the_command_line(tmp_path, data_dir):
    """``python -m lth.run -m model=vgg19 prune=global lr_warmup=true ...`` with tiny iterations."""
    import subprocess
    import sys

    sweep = tmp_path / "sweep"
    args = ["-m", "model=vgg19", "prune=global", "lr_warmup=true", "train.iterations=2", "eval_every=1",
            "prune.rounds=1", "logger=none", "trainer=cpu", "trainer.enable_progress_bar=false", "train.batch_size=2",
            f"data.root={data_dir}", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run([sys.executable, "-c", CLI_WRAPPER, *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = list(sweep.rglob("results.csv"))
    assert len(results) == 1
    lines = results[0].read_text().splitlines()
    assert len(lines) == 3  # header, round 0, round 1


# ---------------------------------------------------------------- torch-free shapes (lth.models.shapes)
MODEL_FILES = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "model").glob("*.yaml"))
CHANGES = [{}, {"hidden": [20]}, {"hidden": [300, "a"]}, {"widht": 3}, {"depth": 5}, {"depth": 4}, {"dropout": 1.5},
           {"plan": [64, "M", 128]}, {"depth": 32, "width": 4}, {"batch_norm": False}]


def outcome(fn, arch: dict, facts) -> list | str:
    try:
        return [(t.name, t.kind, t.numel) for t in fn(arch, facts.input_shape, facts.num_classes)]
    except Exception:  # noqa: BLE001 - does not fit
        return "refused"


@pytest.mark.parametrize("name", MODEL_FILES)
def test_torch_free_shapes_agree_with_the_built_networks(name):
    """What the configuration's checks read before torch is imported (lth.models.shapes) against the network
    torch builds and runs, for every conf/model on the shape of every built-in dataset, and with changed
    settings: the same prunable tensors (names, kinds, sizes), or both refuse."""
    arch = OmegaConf.to_container(compose_config([f"model={name}"]).model.arch, resolve=True)
    if arch["_target_"] not in SHAPES:
        pytest.skip(f"{arch['_target_']} is checked by building it (data=imagefolder's shape comes from the data)")
    results = {}
    for facts in DATASETS.values():
        for change in CHANGES:
            changed = {**arch, **change}
            results[facts.name, str(change)] = outcome(prunable_shapes, changed, facts)
            assert results[facts.name, str(change)] == outcome(built_shapes, changed, facts), (facts.name, change)
    assert results["cifar10", "{}"] != "refused" and results["cifar10", str({"widht": 3})] == "refused"


def test_torch_free_shapes_take_the_constructors_arguments():
    for target, fn in SHAPES.items():
        params = inspect.signature(hydra.utils.get_class(target)).parameters.values()
        assert [(p.name, p.default) for p in inspect.signature(fn).parameters.values()] == [
            (p.name, p.default) for p in params], target
