"""A LightningDataModule whose splits are tensors held whole on the training device."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as pl
import torch

from lth.data.stream import Augment, BatchStream


def split_indices(n: int, val_size: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices: ``val_size`` examples drawn with the fixed ``split_seed``."""
    if not 0 < val_size < n:
        raise ValueError(f"data.val_size={val_size} must be between 1 and {n - 1}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
    return perm[val_size:].sort().values, perm[:val_size].sort().values


class OnDeviceDataModule(pl.LightningDataModule):
    """Subclasses implement :meth:`load_splits`, returning normalised float images and int64 labels."""

    name = "data"
    input_shape: tuple[int, ...] = ()
    num_classes = 10
    # Examples in the training file, before data.val_size of them are held out (None: unknown until
    # loaded). lth.validation checks val_size and train.batch_size against it without loading data.
    train_file_size: int | None = None

    @classmethod
    def check_files(cls, root: str, download: bool) -> None:
        """Raise the loader's error now if the dataset's files are missing (and may not be downloaded)
        or corrupt, without reading them into memory. Default: nothing to check."""

    def __init__(self, root: str = "./data", val_size: int = 5000, split_seed: int = 0, download: bool = False):
        super().__init__()
        self.root = root
        self.val_size = val_size
        self.split_seed = split_seed
        self.download = download
        self.augment: Augment | None = None
        self.splits: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def load_splits(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def with_validation_split(self, train: tuple[torch.Tensor, torch.Tensor],
                              test: tuple[torch.Tensor, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The splits, with ``val_size`` examples of the training file held out by ``split_seed``."""
        x, y = train
        train_idx, val_idx = split_indices(len(y), self.val_size, self.split_seed)
        return {"train": (x[train_idx], y[train_idx]), "val": (x[val_idx], y[val_idx]), "test": test}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load_splits()

    def to(self, device: torch.device | str) -> "OnDeviceDataModule":
        self.setup()
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
        return self

    def sizes(self) -> dict[str, int]:
        return {k: len(y) for k, (_, y) in self.splits.items()}

    def train_stream(
        self, batch_size: int, seed: int, end: int, position: Callable[[], int] = lambda: 0, length: int | None = None,
        group: int = 1,
    ) -> BatchStream:
        x, y = self.splits["train"]
        return BatchStream(x, y, batch_size, seed, end, position, self.augment, length, group)
