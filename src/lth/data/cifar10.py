"""CIFAR-10: 45K train / 5K validation (fixed data seed) / 10K test, 3x32x32, on the device.

Images are scaled to [0, 1] and normalised per channel with the training images' mean and
standard deviation. Augmentation (random crop + flip, ``train.augment``) is applied per batch
on the device by :func:`lth.data.augment.random_crop_flip`.
"""

from __future__ import annotations

import numpy as np
import torch

from lth.data.base import OnDeviceDataModule
from lth.data.facts import DATASETS
from lth.data.torchvision_files import open_torchvision

# Per-channel statistics of the 50K CIFAR-10 training images.
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)


class CIFAR10DataModule(OnDeviceDataModule):
    name, train_file_size, input_shape, num_classes, files = DATASETS["lth.data.CIFAR10DataModule"]

    def load_splits(self):
        from torchvision.datasets import CIFAR10

        train = open_torchvision(CIFAR10, self.root, True, self.download, self.files)
        test = open_torchvision(CIFAR10, self.root, False, self.download, self.files)
        mean = torch.tensor(MEAN).view(1, 3, 1, 1)
        std = torch.tensor(STD).view(1, 3, 1, 1)

        def prep(ds):
            x = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float().div_(255.0)
            x = ((x - mean) / std).contiguous()
            return x, torch.as_tensor(ds.targets, dtype=torch.int64)

        return self.with_validation_split(prep(train), prep(test))
