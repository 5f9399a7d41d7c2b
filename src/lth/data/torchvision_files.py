"""Open a torchvision dataset from existing files, downloading only when allowed.

Errors name the folder that was searched and how to point ``data.root`` at the files.
"""

from __future__ import annotations

import os
from pathlib import Path


class DatasetNotFoundError(RuntimeError):
    pass


def _not_found(name: str, root_path: Path, reason: str, env_hint: str) -> DatasetNotFoundError:
    return DatasetNotFoundError(
        f"{name} files not found under {root_path.resolve()} ({reason}). "
        f"Set data.root=PATH (or the {env_hint} environment variable) to the folder that holds them, "
        f"or allow data.download=true."
    )


def _all_present(name: str, root_path: Path) -> bool:
    from lth.data.integrity import read_files

    folder, files = read_files(name, root_path)
    return all((folder / f).is_file() for f in files)


def check_torchvision_files(name: str, root: str, download: bool, env_hint: str = "LTH_DATA_DIR") -> None:
    """Before anything is loaded: the files of ``name`` (MNIST, CIFAR-10) are intact (MD5) and present, or may be
    downloaded. Needs no torch."""
    from lth.data.integrity import read_files, verify_torchvision

    root_path = Path(root).expanduser()
    verify_torchvision(name, root_path)
    files = read_files(name, root_path)
    if download:
        return
    missing = [f for f in files[1] if not (files[0] / f).is_file()]
    if missing:
        raise _not_found(name, root_path, f"missing: {', '.join(str(files[0] / f) for f in missing[:3])}"
                         + (", ..." if len(missing) > 3 else ""), env_hint)


def open_torchvision(cls, root: str, train: bool, download: bool, name: str, env_hint: str = "LTH_DATA_DIR"):
    from lth.data.integrity import DatasetCorruptError, verify_torchvision

    root_path = Path(root).expanduser()
    verify_torchvision(name, root_path)  # corrupt files are reported (DatasetCorruptError) before they are read
    try:
        return cls(str(root_path), train=train, download=False)
    except RuntimeError as missing:
        if _all_present(name, root_path):  # present but unreadable: a download would not help (nor be tried)
            raise DatasetCorruptError(
                f"{name} files under {root_path.resolve()} are present but cannot be read ({missing}): one is "
                f"truncated or damaged. Delete the damaged file and download it again (data.download=true), or point "
                f"data.root=PATH at a good copy (the MD5 check, which names the file, is off: "
                f"LTH_SKIP_DATA_CHECKSUM=1)."
                if os.environ.get("LTH_SKIP_DATA_CHECKSUM") == "1" else
                f"{name} files under {root_path.resolve()} are present but cannot be read ({missing}): one is "
                f"truncated or damaged. Delete it and download it again (data.download=true), or point "
                f"data.root=PATH at a good copy."
            ) from None
        if not download:
            raise _not_found(name, root_path, str(missing), env_hint) from None
    before = _tree(root_path)
    try:
        return cls(str(root_path), train=train, download=True)
    except Exception as exc:
        _remove_new(root_path, before)  # no half-made folder (or partial file) from the failed download
        reason = " ".join(f"{exc.__class__.__name__}: {exc}".split())  # torchvision's message spans lines
        raise DatasetNotFoundError(
            f"{name} files not found under {root_path.resolve()} and the download failed ({reason[:300]}). "
            f"Set data.root=PATH (or {env_hint}) to a folder that holds them."
        ) from None


def _tree(root: Path) -> set[Path] | None:
    """Every path under ``root`` (None when ``root`` does not exist)."""
    if not root.exists():
        return None
    return {Path(d) / n for d, dirs, files in os.walk(root) for n in dirs + files}


def _remove_new(root: Path, before: set[Path] | None) -> None:
    """Remove what appeared under ``root`` since ``before`` (``root`` itself if it was new)."""
    import shutil

    if before is None:
        shutil.rmtree(root, ignore_errors=True)
        return
    for path in sorted(_tree(root) or (), key=lambda p: len(p.parts)):
        if path not in before and path.exists():
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
