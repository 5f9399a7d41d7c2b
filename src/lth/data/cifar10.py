"""CIFAR-10: 45K train / 5K validation (fixed data seed) / 10K test, 3x32x32, on the device.

Images are scaled to [0, 1] and normalised per channel with the training images' mean and
standard deviation. Augmentation (random crop + flip, ``train.augment``) is applied per batch
on the device by :func:`lth.data.augment.random_crop_flip`.
"""

from __future__ import annotations

import numpy as np
import torch

from lth.data.base import OnDeviceDataModule
from lth.data.torchvision_files import check_torchvision_files, open_torchvision

# Per-channel statistics of the 50K CIFAR-10 training images.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CIFAR10DataModule(OnDeviceDataModule):
    name = "cifar10"
    input_shape = (3, 32, 32)
    num_classes = 10
    train_file_size = 50_000

    @classmethod
    def check_files(cls, root: str, download: bool) -> None:
        from torchvision.datasets import CIFAR10

        check_torchvision_files(CIFAR10, root, download, "CIFAR-10")

    def load_splits(self):
        from torchvision.datasets import CIFAR10

        train = open_torchvision(CIFAR10, self.root, True, self.download, "CIFAR-10")
        test = open_torchvision(CIFAR10, self.root, False, self.download, "CIFAR-10")
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)

        def prep(ds):
            x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
            x = ((x - mean) / std).contiguous()
            return x, torch.as_tensor(ds.targets, dtype=torch.int64)

        return self.with_validation_split(prep(train), prep(test))
