"""ResNet-50 for ImageNet (He et al. 2016): torchvision's network, initialised as OpenLTH does.

The architecture is ``torchvision.models.ResNet`` with bottleneck blocks [3, 4, 6, 3] (25,557,032
parameters for 1,000 classes; the 7x7 stem and 3x3 max-pool expect images of about 224x224, any
size works thanks to the global average pooling). Initialisation follows the code of Frankle et
al. (2020), OpenLTH's ``imagenet_resnet_50`` (``kaiming_normal`` weights, ``uniform`` BatchNorm):
conv and linear weights ~ N(0, 2/fan_in), BatchNorm scale ~ U(0, 1) and shift 0; the output
layer's bias keeps PyTorch's default. Prunable tensors follow lth's conventions by module type:
every convolution (``conv``, the ``downsample`` shortcuts included) and the final ``fc``
(``output``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

from lth.models.init import openlth_

LAYERS = (3, 4, 6, 3)


class ResNet50(ResNet):
    def __init__(self, input_shape: Sequence[int], num_classes: int):
        super().__init__(Bottleneck, list(LAYERS), num_classes=num_classes)
        self.input_shape = tuple(input_shape)
        if input_shape[0] != 3:
            self.conv1 = nn.Conv2d(input_shape[0], 64, kernel_size=7, stride=2, padding=3, bias=False)
        openlth_(self)
