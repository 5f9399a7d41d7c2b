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


def mnist_files(root: Path | str) -> tuple[Path, dict[str, str]]:
    from torchvision.datasets import MNIST

    expected = dict(MNIST_EXTRACTED_MD5)
    expected.update({fn: digest for fn, digest in MNIST.resources})
    return Path(root).expanduser() / "MNIST" / "raw", expected


def cifar10_files(root: Path | str) -> tuple[Path, dict[str, str]]:
    from torchvision.datasets import CIFAR10

    expected = {fn: digest for fn, digest in [*CIFAR10.train_list, *CIFAR10.test_list]}
    expected[CIFAR10.meta["filename"]] = CIFAR10.meta["md5"]
    return Path(root).expanduser() / CIFAR10.base_folder, expected


def verify_mnist(root: Path | str) -> None:
    verify_files(*mnist_files(root), "MNIST")


def verify_cifar10(root: Path | str) -> None:
    verify_files(*cifar10_files(root), "CIFAR-10")


def read_files(cls, root: Path | str) -> tuple[Path, list[str]] | None:
    """The folder and names of the files torchvision's ``cls`` reads (MNIST, CIFAR10); None for others."""
    name = getattr(cls, "__name__", "")
    if name == "MNIST":
        return mnist_files(root)[0], list(MNIST_EXTRACTED_MD5)
    if name == "CIFAR10":
        folder, expected = cifar10_files(root)
        return folder, list(expected)
    return None


def verify_torchvision(cls, root: Path | str) -> None:
    """The check for a torchvision dataset class (MNIST, CIFAR10); other classes are not checked."""
    checks = {"MNIST": verify_mnist, "CIFAR10": verify_cifar10}
    check = checks.get(getattr(cls, "__name__", ""))
    if check is not None:
        check(root)
