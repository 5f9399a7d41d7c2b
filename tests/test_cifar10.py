"""CIFAR-10 on the device: the 45K/5K/10K split, normalisation, and random crop + flip augmentation."""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F

from lth.data import CIFAR10DataModule
from lth.data.augment import random_crop_flip
from lth.data.base import split_indices
from tests.conftest import FAST, compose_config


@functools.lru_cache(maxsize=1)
def load_cifar(root: str) -> CIFAR10DataModule:
    """The real CIFAR-10, loaded once per test session (shared with test_architectures.py)."""
    dm = CIFAR10DataModule(root=root, val_size=5000)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def cifar(data_dir) -> CIFAR10DataModule:
    if not (data_dir / "cifar-10-batches-py").exists():
        pytest.fail(f"CIFAR-10 not found under {data_dir}")
    return load_cifar(str(data_dir))


def test_config_instantiates_the_cifar10_datamodule(data_dir):
    cfg = compose_config(["model=conv2", *FAST, f"data.root={data_dir}"])
    assert cfg.data._target_ == "lth.data.CIFAR10DataModule"
    assert cfg.data.val_size == 5000 and cfg.data.split_seed == 0
    assert set(cfg.data) == set(compose_config([*FAST, "data=mnist"]).data)  # same keys as MNIST's


def test_split_sizes_shapes_labels(cifar):
    assert cifar.sizes() == {"train": 45000, "val": 5000, "test": 10000}
    assert cifar.input_shape == (3, 32, 32) and cifar.num_classes == 10
    for x, y in cifar.splits.values():
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and y.min() == 0 and y.max() == 9
    # the split is drawn with the fixed data seed: train and validation are disjoint and reproducible
    train_idx, val_idx = split_indices(50000, 5000, 0)
    assert len(set(train_idx.tolist()) & set(val_idx.tolist())) == 0
    assert torch.equal(split_indices(50000, 5000, 0)[1], val_idx)


def test_per_channel_normalisation(cifar):
    x = cifar.splits["train"][0]
    mean, std = x.mean(dim=(0, 2, 3)), x.std(dim=(0, 2, 3))
    assert mean.abs().max() < 0.05, mean
    assert (std - 1).abs().max() < 0.05, std
    # the same constants for the test images: roughly standardised too
    t = cifar.splits["test"][0]
    assert t.mean(dim=(0, 2, 3)).abs().max() < 0.1


def _raw_batch(stream, iteration):
    epoch, offset = divmod(iteration, stream.steps_per_epoch)
    idx = stream.permutation(epoch)[offset * stream.batch_size : (offset + 1) * stream.batch_size]
    return stream.x[idx], stream.y[idx]


def test_augment_off_batches_are_the_stored_images(cifar):
    dm = copy.copy(cifar)
    dm.augment = None
    stream = dm.train_stream(batch_size=60, seed=3, end=3)
    for it, [(xb, yb)] in enumerate(stream):
        rx, ry = _raw_batch(stream, it)
        assert torch.equal(xb, rx) and torch.equal(yb, ry)


def _matching_crops(sample: torch.Tensor, original: torch.Tensor, pad: int = 4) -> list[tuple[int, int, bool]]:
    padded = F.pad(original, (pad, pad, pad, pad))
    h, w = original.shape[-2:]
    found = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[:, dy : dy + h, dx : dx + w]
            if torch.equal(sample, crop):
                found.append((dy, dx, False))
            if torch.equal(sample, crop.flip(-1)):
                found.append((dy, dx, True))
    return found


def test_augment_on_is_a_crop_of_the_padded_image_or_its_flip(cifar):
    dm = copy.copy(cifar)
    dm.augment = random_crop_flip
    stream = dm.train_stream(batch_size=60, seed=3, end=2)
    xb, yb = stream.batch(1)
    rx, ry = _raw_batch(stream, 1)
    assert xb.shape == rx.shape and torch.equal(yb, ry)
    assert not torch.equal(xb, rx)
    flips = 0
    for i in range(len(xb)):
        found = _matching_crops(xb[i], rx[i])
        assert found, f"sample {i} is not a 32x32 crop of its 4-pixel padded image (or of its mirror)"
        flips += all(f for _, _, f in found)
    assert 0 < flips < len(xb)  # some flipped, some not
    # deterministic: the same (seed, iteration) gives the same batch; another seed another one
    assert torch.equal(stream.batch(1)[0], xb)
    other = dm.train_stream(batch_size=60, seed=4, end=2)
    assert not torch.equal(other.batch(1)[0], _raw_batch(other, 1)[0])


def test_random_crop_flip_uses_only_the_generator():
    x = torch.randn(512, 3, 32, 32)
    a = random_crop_flip(x, torch.Generator().manual_seed(7))
    torch.manual_seed(123)  # the global RNG plays no part
    b = random_crop_flip(x, torch.Generator().manual_seed(7))
    c = random_crop_flip(x, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and a.dtype == x.dtype and a.device == x.device
    assert torch.equal(a, b) and not torch.equal(a, c)
    # offsets cover the whole range: some crops carry zero padding on each side, some none
    zero_left = (a[:, :, :, 0] == 0).all(dim=(1, 2))
    zero_top = (a[:, :, 0, :] == 0).all(dim=(1, 2))
    assert 0 < zero_left.sum() < len(x) and 0 < zero_top.sum() < len(x)
    # centre crops (offset 4, 4; about 1 in 81) equal the image or its mirror
    assert any(torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1)) for i in range(len(x)))


def test_random_crop_flip_flip_rate_is_about_half():
    # a constant-per-column image: its columns reveal a flip whatever the crop offset
    x = torch.arange(1, 33, dtype=torch.float32).expand(2000, 1, 32, 32).contiguous()
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    middle = out[:, 0, 16, 8:24]  # never in the padding
    flipped = (middle[:, 1:] < middle[:, :-1]).all(dim=1)
    assert 0.45 < flipped.float().mean() < 0.55
    # padded column j holds j - 3; output column 8 reads padded column dx + 8 (dx + 23 when flipped)
    dx = middle[:, 0] - torch.where(flipped, 20.0, 5.0)
    assert set(dx.long().tolist()) == set(range(9))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_random_crop_flip_on_the_gpu():
    x = torch.randn(64, 3, 32, 32, device="cuda")
    gen = torch.Generator(device="cuda").manual_seed(0)
    out = random_crop_flip(x, gen)
    assert out.device == x.device and out.shape == x.shape

