"""MNIST: 55K train / 5K validation (fixed data seed) / 10K test, 1x28x28, on the device."""

from __future__ import annotations

import torch

from lth.data.base import OnDeviceDataModule
from lth.data.facts import DATASETS
from lth.data.torchvision_files import open_torchvision

MEAN, STD = 0.1307, 0.3081


class MNISTDataModule(OnDeviceDataModule):
    name, train_file_size, input_shape, num_classes, files = DATASETS["lth.data.MNISTDataModule"]

    def load_splits(self):
        from torchvision.datasets import MNIST

        train = open_torchvision(MNIST, self.root, True, self.download, self.files)
        test = open_torchvision(MNIST, self.root, False, self.download, self.files)

        def prep(ds):
            x = ((ds.data.float() / 255.0 - MEAN) / STD).unsqueeze(1)
            return x, ds.targets.long()

        return self.with_validation_split(prep(train), prep(test))
