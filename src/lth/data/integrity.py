"""Checksums of dataset files: corrupt or truncated files are reported before they are read.

The known MD5s are torchvision's (``MNIST.resources``, ``CIFAR10.train_list`` / ``test_list`` /
``meta``) plus those of the extracted MNIST files (which torchvision reads but only knows
through their ``.gz`` archives). Each file is hashed once per process (cached by size and
modification time). ``LTH_SKIP_DATA_CHECKSUM=1`` turns the check off.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

# MD5 of the files torchvision's MNIST reads (the gunzipped archives of MNIST.resources).
MNIST_EXTRACTED_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

_verified: dict[tuple[str, int, int], str] = {}


class DatasetCorruptError(RuntimeError):
    """A dataset file exists but its checksum is wrong."""


def md5(path: Path, chunk: int = 1 << 20) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        h = hashlib.md5()
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
        _verified[key] = h.hexdigest()
    return _verified[key]


def verify_files(folder: Path, expected: dict[str, str], name: str) -> None:
    """Check every *existing* file of ``expected`` (file name -> MD5) under ``folder``.

    Missing files are left to the loader (which reports them as not found).
    """
    if os.environ.get("LTH_SKIP_DATA_CHECKSUM") == "1":
        return
    folder = Path(folder).expanduser()
    for filename, digest in expected.items():
        path = folder / filename
        if path.is_file() and md5(path) != digest:
            raise DatasetCorruptError(
                f"{name} file {path} is corrupt (MD5 {md5(path)}, expected {digest}). Delete it and download it "
                f"again (data.download=true), or point data.root=PATH at a good copy "
                f"(LTH_SKIP_DATA_CHECKSUM=1 skips this check for a deliberately modified dataset)."
            )


# torchvision's own MD5s (MNIST.resources; CIFAR10.train_list, test_list and meta), here so that the check needs
# no torch; tests/test_validation.py compares them with torchvision's.
TORCHVISION_MD5 = {
    "MNIST": {"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
              "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
              "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
              "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
    "CIFAR-10": {"data_batch_1": "c99cafc152244af753f735de768cd75f", "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
                 "data_batch_3": "54ebc095f3ab1f0389bbae665268c751", "data_batch_4": "634d18415352ddfa80567beed471001a",
                 "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb", "test_batch": "40351d587109b95175f43aff81a1287e",
                 "batches.meta": "5ff9c542aee3614f3951f8cda6e48888"},
}
# Per dataset: (its folder under data.root, every file's MD5, the files torchvision reads).
FILES = {"MNIST": ("MNIST/raw", {**MNIST_EXTRACTED_MD5, **TORCHVISION_MD5["MNIST"]}, list(MNIST_EXTRACTED_MD5)),
         "CIFAR-10": ("cifar-10-batches-py", TORCHVISION_MD5["CIFAR-10"], list(TORCHVISION_MD5["CIFAR-10"]))}


def read_files(name: str, root: Path | str) -> tuple[Path, list[str]]:
    """The folder and names of the files torchvision reads for the dataset ``name`` (MNIST, CIFAR-10)."""
    folder, _, read = FILES[name]
    return Path(root).expanduser() / folder, read


def verify_torchvision(name: str, root: Path | str) -> None:
    """The MD5 check of the dataset ``name`` (MNIST, CIFAR-10) under ``root``."""
    folder, expected, _ = FILES[name]
    verify_files(Path(root).expanduser() / folder, expected, name)
