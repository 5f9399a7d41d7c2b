"""Open a torchvision dataset from existing files, downloading only when allowed.

Errors name the folder that was searched and how to point ``data.root`` at the files.
"""

from __future__ import annotations

from pathlib import Path


class DatasetNotFoundError(RuntimeError):
    pass


def open_torchvision(cls, root: str, train: bool, download: bool, name: str, env_hint: str = "LTH_DATA_DIR"):
    from lth.data.integrity import verify_torchvision

    root_path = Path(root).expanduser()
    verify_torchvision(cls, root_path)  # corrupt files are reported (DatasetCorruptError) before they are read
    try:
        return cls(str(root_path), train=train, download=False)
    except RuntimeError as missing:
        if not download:
            raise DatasetNotFoundError(
                f"{name} files not found under {root_path.resolve()} ({missing}). "
                f"Set data.root=PATH (or the {env_hint} environment variable) to the folder that holds them, "
                f"or allow data.download=true."
            ) from None
    try:
        return cls(str(root_path), train=train, download=True)
    except Exception as exc:
        raise DatasetNotFoundError(
            f"{name} files not found under {root_path.resolve()} and the download failed "
            f"({exc.__class__.__name__}: {exc}). Set data.root=PATH (or {env_hint}) to a folder that holds them."
        ) from None
