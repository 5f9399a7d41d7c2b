"""What lth knows of each built-in dataset before reading it, without torch: its name, the size of its
training file, its input shape and classes, and the files it reads. The data modules take their
attributes from here, and the configuration's checks (:mod:`lth.validation`) read them without
importing a data module."""

from __future__ import annotations

from typing import NamedTuple


class Facts(NamedTuple):
    name: str
    train_file_size: int | None  # examples in the training file, before data.val_size of them are held out
    input_shape: tuple[int, ...]  # () when known only once the data is opened
    num_classes: int | None
    files: str | None = None  # its files' check: a torchvision dataset's (MNIST, CIFAR-10), or "prepared"


DIGITS_TEST_SIZE = 360  # the fixed test set of scikit-learn's 1,797 digits
DATASETS = {
    "lth.data.MNISTDataModule": Facts("mnist", 60_000, (1, 28, 28), 10, "MNIST"),
    "lth.data.CIFAR10DataModule": Facts("cifar10", 50_000, (3, 32, 32), 10, "CIFAR-10"),
    "lth.data.DigitsDataModule": Facts("digits", 1797 - DIGITS_TEST_SIZE, (1, 8, 8), 10),
    # lth.data.prepare's format: the size, shape and classes are read from the data when it is opened
    "lth.data.imagefolder.ImageFolderDataModule": Facts("imagefolder", None, (), None, "prepared"),
}


def facts(target: str) -> Facts:
    """The facts of the data module ``target`` (a ``_target_``): from the table, or read off its class."""
    if target in DATASETS:
        return DATASETS[target]
    import hydra.utils

    dm = hydra.utils.get_class(target)
    return Facts(getattr(dm, "name", "?"), getattr(dm, "train_file_size", None), getattr(dm, "input_shape", ()),
                 getattr(dm, "num_classes", None))


def data_facts(data: dict) -> Facts:
    """The facts of the configured ``data`` (its ``data.*`` settings): :func:`facts`, with a prepared dataset's
    size, classes and input shape (a local folder's) (3, ``data.image_size``, ``data.image_size``) read from its ``lth.json``, so
    that the checks that need them run before anything is written. Unreadable metadata leaves them unknown
    (the check of the data's files reports it)."""
    d = facts(data["_target_"])
    if d.files != "prepared":
        return d
    from lth.data.prepare import is_remote, read_metadata

    path = data.get("path")
    if not isinstance(path, str) or is_remote(path):  # an object store's: known once the data is opened
        return d
    try:
        meta, _ = read_metadata(path)
        size, classes = int(meta["sizes"]["train"]), len(meta["classes"])
    except Exception:  # noqa: BLE001 - missing or damaged: check_files names it
        return d
    side = data.get("image_size")
    return d._replace(train_file_size=size, num_classes=classes,
                      input_shape=(3, side, side) if isinstance(side, int) and side >= 1 else ())


def check_files(target: str, root: str | None, download: bool) -> None:
    """Raise the data module's error now if its files are missing (and may not be downloaded) or corrupt, without
    reading them: without torch for the built-in datasets, else by the class's ``check_files``."""
    if target not in DATASETS:
        import hydra.utils

        return getattr(hydra.utils.get_class(target), "check_files", lambda *_: None)(root, download)
    files = DATASETS[target].files
    if files == "prepared":  # data.root is data.path
        from lth.data.prepare import read_metadata

        read_metadata(root)
    elif files:
        from lth.data.torchvision_files import check_torchvision_files

        check_torchvision_files(files, root, download)
