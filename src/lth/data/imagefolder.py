"""Image datasets larger than memory (ImageNet), streamed with Lightning's litdata.

``data=imagefolder data.path=OUT`` reads what ``python -m lth.data.prepare SRC OUT`` wrote (a local
folder or an object-store URL litdata reads: ``s3://``, ``gs://``, ``azure://``, ``local:``):

- **train**: ``OUT/train`` less ``data.val_size`` images held out by ``data.split_seed`` (the same
  split in every round and run), streamed by litdata's ``StreamingDataset`` (chunk-level shuffle
  seeded by the round's data seed) through a ``StreamingDataLoader`` with ``data.num_workers``
  processes. With ``train.augment=true`` each image gets the standard ImageNet augmentation
  (``RandomResizedCrop(data.image_size)`` + horizontal flip), drawn from a generator seeded by
  (data seed, epoch, image): the batches of iteration ``i`` are a function of the data seed and
  ``i`` (given ``data.num_workers``, which litdata's order depends on), so every round sees the
  same data, and a round rewound to K, or resumed from a checkpoint, continues the sequence at K
  (litdata's own resume skips the first K batches of the epoch without reading them).
- **val** (the held-out images) and **test** (``OUT/test``, ImageNet's validation images): resized
  to ``data.image_size / 0.875`` and centre-cropped, decoded in order as the evaluation asks for
  them (a few batches at a time, by ``data.num_workers`` threads).

Every image is scaled to [0, 1] and normalised with ImageNet's channel means and deviations.
Only the labels (8 bytes an image) and index arrays are held whole; images are decoded batch by
batch, so memory does not grow with the number of images (``benchmarks/stream_memory.py``).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import litdata
import numpy as np
import pytorch_lightning as pl
import torch

from lth.data.base import split_indices
from lth.data.facts import DATASETS
from lth.data.integrity import DatasetCorruptError
from lth.data.prepare import is_remote, read_metadata

MEAN = (0.485, 0.456, 0.406)  # ImageNet's per-channel statistics (torchvision's reference recipe)
STD = (0.229, 0.224, 0.225)
CROP_FRACTION = 0.875  # evaluation: resize to image_size / 0.875 (256 for 224), centre-crop image_size
_EPOCH_STRIDE = 1_000_003
_SEED_STRIDE = 7_919


def transform(image_size: int, augment: bool) -> Callable:
    """PIL image -> normalised float tensor (3, image_size, image_size)."""
    from torchvision.transforms import v2

    geometry = ([v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()] if augment else
                [v2.Resize(round(image_size / CROP_FRACTION), antialias=True), v2.CenterCrop(image_size)])
    return v2.Compose([*geometry, v2.ToImage(), v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


def decode(sample: dict, tf: Callable, seed: int | None = None) -> torch.Tensor:
    """A stored sample's image through ``tf``; ``seed`` (if given) seeds its random transformations."""
    from PIL import Image

    image = Image.open(io.BytesIO(sample["image"])).convert("RGB")
    if seed is None:
        return tf(image)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return tf(image)


def fetch(dataset: "ImageStream", index) -> dict:
    """Stored sample ``index`` of ``dataset`` (a number, or litdata's ``ChunkedIndex``); bytes litdata cannot
    parse (a damaged chunk) raise DatasetCorruptError naming the dataset. Not thread-safe (litdata's reader)."""
    try:
        return litdata.StreamingDataset.__getitem__(dataset, index)
    except (IndexError, StopIteration):  # litdata's own control flow (the end of a worker's share)
        raise
    except Exception as exc:  # noqa: BLE001 - litdata's chunk parsing raises many kinds
        raise _damaged(dataset, index, exc) from None


def decode_checked(dataset: "ImageStream", sample: dict, tf: Callable, seed: int | None = None) -> torch.Tensor:
    """:func:`decode`, an image PIL cannot read raising DatasetCorruptError naming the dataset."""
    try:
        return decode(sample, tf, seed)
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        raise _damaged(dataset, sample.get("index"), exc) from None


def _damaged(dataset: "ImageStream", index, exc: Exception) -> DatasetCorruptError:
    which = f"image {index}" if isinstance(index, (int, np.integer)) else "an image"
    return DatasetCorruptError(
        f"{which} of the prepared dataset {dataset.input_dir.url or dataset.input_dir.path} cannot be read "
        f"({exc.__class__.__name__}: {str(exc)[:120]}): the dataset is damaged; prepare it again with python -m "
        f"lth.data.prepare SRC OUT")


def _one_line(exc: DatasetCorruptError) -> DatasetCorruptError:
    """The error raised in a loader worker, without the worker's traceback that torch's loader puts into it."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    prefix = f"{DatasetCorruptError.__module__}.{DatasetCorruptError.__name__}: "
    return DatasetCorruptError(next((line[len(prefix):] for line in reversed(lines) if line.startswith(prefix)),
                                    lines[-1] if lines else str(exc)))


def _root(path: str) -> str:
    return (path if is_remote(path) else os.path.expanduser(path)).rstrip("/")


class ImageStream(litdata.StreamingDataset):
    """litdata's ``StreamingDataset`` of ``OUT/<split>``, yielding ``(image tensor, label)``.

    With ``augment_seed``, each image's random transformations are seeded by (seed, epoch, the image's
    index in the split), whatever worker process decodes it.
    """

    def __init__(self, path: str, split: str, tf: Callable, augment_seed: int | None = None, **kwargs):
        super().__init__(f"{_root(path)}/{split}", **kwargs)
        self.tf = tf
        self.augment_seed = augment_seed

    def __getitem__(self, index):
        sample = fetch(self, index)
        seed = None
        if self.augment_seed is not None:
            seed = ((self.augment_seed * _EPOCH_STRIDE + self.current_epoch) * _SEED_STRIDE + sample["index"]) % 2**63
        return decode_checked(self, sample, self.tf, seed), sample["label"]


class LazyImages:
    """The images of one split, decoded when sliced: ``x[i:j]`` is a (j-i, 3, S, S) tensor on ``device``.

    Stands in for the image tensor of the in-memory datasets wherever lth slices images in order
    (evaluation, the instability path, BatchNorm re-estimation); only the requested slice is decoded,
    by ``workers`` threads (PIL decodes and resizes without holding the GIL).
    """

    def __init__(self, dataset: ImageStream, indices: np.ndarray, image_size: int, device: torch.device | str = "cpu",
                 workers: int = 1):
        self.dataset = dataset
        self.indices = indices
        self.shape = (len(indices), 3, image_size, image_size)
        self.device = torch.device(device)
        self.workers = max(1, workers)

    def __len__(self) -> int:
        return len(self.indices)

    def to(self, device: torch.device | str) -> "LazyImages":
        return LazyImages(self.dataset, self.indices, self.shape[-1], device, self.workers)

    def __getitem__(self, key: slice | torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Images ``x[i:j]``, or at the positions of an index tensor (pruning at init's class-balanced sample)."""
        if isinstance(key, slice):
            chosen = self.indices[key]
        else:
            chosen = self.indices[np.asarray(key.cpu() if torch.is_tensor(key) else key, dtype=np.int64)]
        samples = [fetch(self.dataset, int(i)) for i in chosen]
        tf = self.dataset.tf
        if self.workers > 1 and len(samples) > 1:
            with ThreadPoolExecutor(self.workers) as pool:
                images = list(pool.map(lambda s: decode_checked(self.dataset, s, tf), samples))
        else:
            images = [decode_checked(self.dataset, s, tf) for s in samples]
        if not images:
            return torch.empty((0, *self.shape[1:]), device=self.device)
        return torch.stack(images).to(self.device)


class StreamedBatches:
    """Groups of ``(x, y)`` training batches for iterations ``[position(), end)``, streamed by litdata.

    The drop-in for :class:`lth.data.stream.BatchStream` (same arguments, ``len``, ``batch(i)``).
    Iteration ``i`` is batch ``i mod S`` of epoch ``i // S`` (``S`` full batches an epoch; the
    remainder of an epoch is dropped), epochs shuffled by litdata from the data seed.
    """

    def __init__(self, make_loader: Callable[[], "litdata.StreamingDataLoader"], batch_size: int, end: int,
                 position: Callable[[], int] = lambda: 0, length: int | None = None, group: int = 1):
        if group < 1:
            raise ValueError(f"group={group} must be at least 1")
        self.make_loader = make_loader
        self.batch_size = batch_size
        self.end = end
        self.position = position
        self._length = length if length is not None else end
        self.group = group
        self.steps_per_epoch = len(make_loader())
        if self.steps_per_epoch < 1:
            raise ValueError(f"train.batch_size={batch_size} is larger than the training set")

    def __len__(self) -> int:
        return -(-self._length // self.group)

    def state_dict(self) -> dict:
        """Nothing to save: a resumed round streams from its step (``position``, the trainer's iteration). Having
        it tells Lightning the loader resumes (it warned otherwise, at every mid-round resume, of unreliable results)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """See :meth:`state_dict`."""

    def batches(self, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batches of iterations ``start, start + 1, ...`` (endless)."""
        epoch, offset = divmod(start, self.steps_per_epoch)
        loader = self.make_loader()
        if offset:  # litdata's resume: the epoch's first `offset` batches are skipped unread
            yielded = offset * self.batch_size
            loader.dataset.set_epoch(epoch + 1)  # litdata counts epochs from 1
            loader.load_state_dict({"dataset": loader.dataset.state_dict(yielded, loader.num_workers, self.batch_size),
                                    "current_epoch": epoch + 1, "num_samples_yielded": yielded,
                                    "latest_worker_idx": (offset - 1) % max(1, loader.num_workers)})
        else:
            loader.current_epoch = epoch  # its __iter__ moves on to epoch + 1
        while True:
            count = offset
            try:
                for x, y in loader:
                    yield x, torch.as_tensor(y, dtype=torch.int64)
                    count += 1
            except DatasetCorruptError as exc:
                raise _one_line(exc) from None
            if count != self.steps_per_epoch:
                raise RuntimeError(f"litdata streamed {count} batches in an epoch, expected {self.steps_per_epoch}")
            offset = 0

    def batch(self, iteration: int) -> tuple[torch.Tensor, torch.Tensor]:
        return next(self.batches(iteration))

    def __iter__(self) -> Iterator[list[tuple[torch.Tensor, torch.Tensor]]]:
        start = self.position()
        stream = self.batches(start)
        for first in range(start, self.end, self.group):
            yield [next(stream) for _ in range(min(self.group, self.end - first))]


class ImageFolderDataModule(pl.LightningDataModule):
    """A dataset written by ``python -m lth.data.prepare``, streamed (see the module docstring).

    The number of classes, the input shape (3, ``image_size``, ``image_size``) and the training
    file's size come from the data, once it is opened (they are instance attributes).
    """

    # () and None: known once the data is opened (instance attributes below)
    name, train_file_size, input_shape, num_classes, files = DATASETS["lth.data.imagefolder.ImageFolderDataModule"]

    def __init__(self, path: str | None, val_size: int = 10_000, split_seed: int = 0, image_size: int = 224,
                 num_workers: int = 4, root: str | None = None, download: bool = False, cache_dir: str | None = None):
        super().__init__()
        meta, self.labels = read_metadata(path, cache_dir)
        self.path = str(path)
        self.val_size = val_size
        self.split_seed = split_seed
        self.image_size = image_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.classes = list(meta["classes"])
        self.num_classes = len(self.classes)
        self.input_shape = (3, image_size, image_size)
        self.train_file_size = int(meta["sizes"]["train"])
        self.train_idx, self.val_idx = (i.numpy() for i in split_indices(self.train_file_size, val_size, split_seed))
        self.augment = None  # set by the experiment when train.augment=true: the ImageNet augmentation is used
        self.device = torch.device("cpu")
        self.splits: dict[str, tuple[LazyImages, torch.Tensor]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        tf = transform(self.image_size, augment=False)
        train = ImageStream(self.path, "train", tf, cache_dir=self.cache_dir)
        test = ImageStream(self.path, "test", tf, cache_dir=self.cache_dir)
        test_idx = np.arange(len(self.labels["test"]))
        y = {s: torch.from_numpy(self.labels[s]) for s in ("train", "test")}
        parts = {"train": (train, self.train_idx, y["train"]), "val": (train, self.val_idx, y["train"]),
                 "test": (test, test_idx, y["test"])}
        self.splits = {s: (LazyImages(ds, idx, self.image_size, self.device, self.num_workers), labels[idx])
                       for s, (ds, idx, labels) in parts.items()}

    def to(self, device: torch.device | str) -> "ImageFolderDataModule":
        self.setup()
        self.device = torch.device(device)
        self.splits = {k: (x.to(device), y.to(device)) for k, (x, y) in self.splits.items()}
        return self

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train_idx), "val": len(self.val_idx), "test": len(self.labels["test"])}

    def train_dataset(self, seed: int) -> ImageStream:
        """The training images (validation ones left out), shuffled by litdata from ``seed``."""
        augment = self.augment is not None
        full = ImageStream(self.path, "train", transform(self.image_size, augment), seed if augment else None,
                           cache_dir=self.cache_dir, shuffle=True, seed=seed, drop_last=True)
        return full.subset(self.train_idx.tolist())

    def train_stream(
        self, batch_size: int, seed: int, end: int, position: Callable[[], int] = lambda: 0, length: int | None = None,
        group: int = 1,
    ) -> StreamedBatches:
        if batch_size > len(self.train_idx):
            raise ValueError(f"train.batch_size={batch_size} is larger than the training set "
                             f"({len(self.train_idx)} examples)")
        rank_batch = _rank_batch(batch_size)

        def make_loader():
            # litdata lowers a local dataset's workers to what the free memory fits, and its order depends on
            # their number: data.num_workers is kept exactly (the order is part of the experiment's identity)
            with mock.patch.dict(os.environ, {"LITDATA_POSIX_MAX_WORKERS": "0"}):
                return litdata.StreamingDataLoader(self.train_dataset(seed), batch_size=rank_batch,
                                                   num_workers=self.num_workers, drop_last=True,
                                                   pin_memory=self.device.type == "cuda")

        return StreamedBatches(make_loader, rank_batch, end, position, length, group)


def _rank_batch(batch_size: int) -> int:
    """Each DDP rank streams its own shard (litdata splits the data by rank): ``batch_size / world`` each."""
    import torch.distributed as dist

    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    if batch_size % world:
        raise ValueError(f"train.batch_size={batch_size} must be divisible by the {world} DDP processes")
    return batch_size // world
