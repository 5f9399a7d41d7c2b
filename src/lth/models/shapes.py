"""The prunable tensors of the built-in architectures, from their settings alone, without torch: the
configuration's checks (:mod:`lth.validation`) answer from them before torch is imported.

Each function takes its class's constructor arguments and raises where building the network or running
it on an input of ``input_shape`` would (an unknown argument, a width that is not an integer, an image
too small for its max-pooling). tests/test_architectures.py compares them with the built networks.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from lth.pruning.prunable import PrunableTensor, prunable_tensors, tensors

INITS = ("glorot", "openlth")  # the initialisations lth.models.init knows (ResNet's ``init``)


def check_init(init: str) -> None:
    if init not in INITS:
        raise ValueError(f"init={init!r} is not one of {', '.join(INITS)}")


PAIR_WIDTHS = (64, 128, 256)  # Conv-2/4/6: the filters of the first, second and third pair
# VGG: "M" = 2x2 max-pooling. The last block has no pooling: global average pooling follows.
PLANS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
Found = list[tuple[str, str, int]]


def _width(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise TypeError(f"a layer width must be a non-negative integer, not {value!r}")
    return value


def _dropout(dropout: float) -> None:
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), not {dropout}")


def _pooled(height: int, width: int) -> tuple[int, int]:
    if min(height, width) < 2:
        raise ValueError(f"an input of {height}x{width} pixels is too small for 2x2 max-pooling")
    return height // 2, width // 2


def _linears(widths: list[int], num_classes: int) -> Found:
    widths = [*map(_width, widths), num_classes]
    return [(f"hidden.{i}.weight", "fc", a * b) for i, (a, b) in enumerate(zip(widths[:-2], widths[1:-1]))] + [
        ("output.weight", "fc", widths[-2] * num_classes)]


def lenet(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100),
          dropout: float = 0.0) -> Found:
    _dropout(dropout)
    return _linears([math.prod(input_shape), *hidden], num_classes)


def conv_net(input_shape: Sequence[int], num_classes: int, depth: int = 2, hidden: Sequence[int] = (256, 256),
             dropout: float = 0.0) -> Found:
    if depth not in (2, 4, 6):
        raise ValueError(f"Conv-{depth} is not one of Conv-2, Conv-4, Conv-6")
    _dropout(dropout)
    (channels, height, width), found = input_shape, []
    for pair, width_out in enumerate(PAIR_WIDTHS[: depth // 2]):
        for j in range(2):  # features: conv, relu, conv, relu, max-pool per pair
            found.append((f"features.{5 * pair + 2 * j}.weight", "conv", channels * width_out * 9))
            channels = width_out
        height, width = _pooled(height, width)
    return found + _linears([channels * height * width, *hidden], num_classes)


def vgg(input_shape: Sequence[int], num_classes: int, depth: int = 19, plan: Sequence[int | str] | None = None,
        batch_norm: bool = True) -> Found:
    if plan is None and depth not in PLANS:
        raise ValueError(f"VGG-{depth} is not one of VGG-{', VGG-'.join(map(str, PLANS))}")
    (channels, height, width), found, index = input_shape, [], 0
    for spec in PLANS[depth] if plan is None else plan:
        if spec == "M":
            height, width, index = *_pooled(height, width), index + 1
            continue
        found.append((f"features.{index}.weight", "conv", channels * int(spec) * 9))
        channels, index = int(spec), index + (3 if batch_norm else 2)  # conv, [batch norm,] relu
    return found + [("output.weight", "fc", channels * num_classes)]


def resnet(input_shape: Sequence[int], num_classes: int, depth: int = 20, width: int = 16,
           init: str = "glorot") -> Found:
    if depth < 8 or (depth - 2) % 6 != 0:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
    check_init(init)
    found, f_in, n = [("conv.weight", "conv", input_shape[0] * width * 9)], width, (depth - 2) // 6
    for stage, f_out in enumerate((width, 2 * width, 4 * width)):
        for i in range(n):
            block = f"blocks.{stage * n + i}"
            found += [(f"{block}.conv1.weight", "conv", f_in * f_out * 9),
                      (f"{block}.conv2.weight", "conv", f_out * f_out * 9)]
            if (stage > 0 and i == 0) or f_in != f_out:  # a 1x1 convolution where the shape changes
                found.append((f"{block}.shortcut.0.weight", "conv", f_in * f_out))
            f_in = f_out
    return found + [("output.weight", "fc", f_in * num_classes)]


SHAPES = {"lth.models.LeNet": lenet, "lth.models.ConvNet": conv_net, "lth.models.VGG": vgg, "lth.models.ResNet": resnet}


def prunable_shapes(arch: dict, input_shape: Sequence[int], num_classes: int) -> list[PrunableTensor]:
    """The prunable tensors of the network ``arch`` (a ``_target_`` config) builds for this data; raises where it
    cannot be built or does not map the input to one output per class. Without torch for the built-in
    architectures; others are built and run (:func:`built_shapes`)."""
    if arch.get("_target_") not in SHAPES:
        return built_shapes(arch, input_shape, num_classes)
    kwargs = {k: v for k, v in arch.items() if not k.startswith("_")}
    return tensors(SHAPES[arch["_target_"]](tuple(input_shape), num_classes, **kwargs))


def built_shapes(arch: dict, input_shape: Sequence[int], num_classes: int) -> list[PrunableTensor]:
    """:func:`prunable_shapes` by building the network with torch and running it on one input."""
    import torch
    from omegaconf import OmegaConf

    from lth.models import build_model

    try:
        net = build_model(OmegaConf.create(arch), input_shape, num_classes, 0).eval()
    except Exception as exc:  # Hydra wraps the constructor's error
        raise exc.__cause__ or exc from None
    with torch.no_grad():
        out = net(torch.zeros((1, *input_shape)))
    if tuple(out.shape) != (1, num_classes):
        raise ValueError(f"outputs of shape {tuple(out.shape)[1:]}")
    return prunable_tensors(net)
