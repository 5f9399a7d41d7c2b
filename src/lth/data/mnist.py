"""MNIST: 55K train / 5K validation (fixed data seed) / 10K test, 1x28x28, on the device."""

from __future__ import annotations

import torch

from lth.data.base import OnDeviceDataModule
from lth.data.torchvision_files import check_torchvision_files, open_torchvision

MEAN, STD = 0.1307, 0.3081


class MNISTDataModule(OnDeviceDataModule):
    name = "mnist"
    input_shape = (1, 28, 28)
    num_classes = 10
    train_file_size = 60_000

    @classmethod
    def check_files(cls, root: str, download: bool) -> None:
        from torchvision.datasets import MNIST

        check_torchvision_files(MNIST, root, download, "MNIST")

    def load_splits(self):
        from torchvision.datasets import MNIST

        train = open_torchvision(MNIST, self.root, True, self.download, "MNIST")
        test = open_torchvision(MNIST, self.root, False, self.download, "MNIST")

        def prep(ds):
            x = ((ds.data.float() / 255.0 - MEAN) / STD).unsqueeze(1)
            return x, ds.targets.long()

        return self.with_validation_split(prep(train), prep(test))
