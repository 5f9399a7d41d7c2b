"""The embedded quick-start dataset: scikit-learn's 1,797 handwritten digits (8x8, 10 classes).

It ships inside scikit-learn, so it needs no download. Split with a fixed seed into
1,257 train / 180 validation / 360 test images.
"""

from __future__ import annotations

import torch

from lth.data.base import OnDeviceDataModule, split_indices
from lth.data.facts import DATASETS, DIGITS_TEST_SIZE as TEST_SIZE


class DigitsDataModule(OnDeviceDataModule):
    name, train_file_size, input_shape, num_classes, files = DATASETS["lth.data.DigitsDataModule"]

    def __init__(self, root: str = "./data", val_size: int = 180, split_seed: int = 0, download: bool = False):
        super().__init__(root, val_size, split_seed, download)

    def load_splits(self):
        from sklearn.datasets import load_digits

        digits = load_digits()
        x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
        y = torch.tensor(digits.target, dtype=torch.int64)
        perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(self.split_seed + 1))
        test_idx, rest = perm[:TEST_SIZE], perm[TEST_SIZE:]
        train_rel, val_rel = split_indices(len(rest), self.val_size, self.split_seed)
        train_idx, val_idx = rest[train_rel], rest[val_rel]
        mean, std = x[train_idx].mean(), x[train_idx].std()
        x = (x - mean) / std
        return {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": (x[test_idx], y[test_idx])}
