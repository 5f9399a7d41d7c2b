"""ResNet-50 (torchvision's network, OpenLTH's initialisation) and its ImageNet protocol."""

from __future__ import annotations

import math

import torch
import torchvision
from omegaconf import OmegaConf
from torch import nn

from lth.models import ResNet50, build_model
from lth.pruning import prunable_tensors
from tests.conftest import FAST, REPO, compose_config

IMAGENET_TRAIN = 1_281_167


def test_resnet50_is_torchvisions_network_with_lths_tensor_kinds():
    model = ResNet50((3, 224, 224), 1000)
    reference = torchvision.models.resnet50()
    assert [(n, p.shape) for n, p in model.named_parameters()] == [(n, p.shape) for n, p in reference.named_parameters()]
    assert sum(p.numel() for p in model.parameters()) == 25_557_032
    tensors = prunable_tensors(model)
    convs = [m for m in reference.modules() if isinstance(m, nn.Conv2d)]
    assert [t.kind for t in tensors] == ["conv"] * len(convs) + ["output"] and len(convs) == 53
    assert tensors[-1].name == "fc.weight" and any("downsample" in t.name for t in tensors)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 1000)  # global pooling: any image size


def test_resnet50_initialisation_is_openlths():
    model = ResNet50((3, 224, 224), 1000)
    w = model.layer4[0].conv2.weight  # 512 x 512 x 3 x 3: fan_in 4,608
    assert abs(w.std().item() / math.sqrt(2 / 4608) - 1) < 0.01  # kaiming_normal (fan_in)
    assert abs(model.fc.weight.std().item() / math.sqrt(2 / 2048) - 1) < 0.01
    bn = torch.cat([m.weight for m in model.modules() if isinstance(m, nn.BatchNorm2d)])
    assert 0 <= bn.min() and bn.max() < 1 and abs(bn.mean().item() - 0.5) < 0.02  # BatchNorm scale ~ U(0, 1)
    assert all(m.bias.abs().max() == 0 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert ResNet50((1, 32, 32), 10).conv1.in_channels == 1


def test_resnet50_protocol_counts_epochs_of_the_training_images_left():
    cfg = compose_config(["model=resnet50", "data.path=/anywhere", *FAST])
    epoch = (IMAGENET_TRAIN - cfg.data.val_size) // cfg.train.batch_size
    assert (epoch, cfg.train.batch_size, cfg.data.val_size) == (1241, 1024, 10_000)
    assert cfg.train.iterations == 90 * epoch and cfg.warmup.iterations == 5 * epoch and cfg.lr_warmup
    assert list(cfg.schedule.milestones) == [30 * epoch, 60 * epoch, 80 * epoch]
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.momentum, cfg.optimizer.weight_decay) == \
        ("sgd", 0.4, 0.9, 1e-4)
    assert cfg.prune.scheme == "global" and cfg.prune.rate == 0.2 and list(cfg.prune.exempt) == []
    assert cfg.data._target_.endswith("ImageFolderDataModule") and cfg.train.augment
    a = build_model(cfg.model.arch, (3, 32, 32), 7, seed=3)
    b = build_model(cfg.model.arch, (3, 32, 32), 7, seed=3)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))


def test_imagenet_preset_sweeps_five_seeds_over_rewind_epochs():
    cfg = compose_config(["experiment=paper/imagenet_resnet50", "data.path=/anywhere", *FAST])
    assert cfg.model.name == "resnet50" and cfg.instability and cfg.prune.rounds == 5
    assert cfg.prune.schedule == "oneshot"  # the 2020 paper prunes its ImageNet networks one-shot
    params = OmegaConf.load(REPO / "conf/experiment/paper/imagenet_resnet50.yaml").hydra.sweeper.params
    assert str(params.seed).split(",") == ["0", "1", "2", "3", "4"]
    rewind = [int(k) for k in str(params.rewind_iteration).split(",")]
    assert [k / 1241 for k in rewind] == [0, 1, 2, 4, 6, 10]  # whole epochs
