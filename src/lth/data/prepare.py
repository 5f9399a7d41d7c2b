"""Turn an image-folder tree into a litdata optimized dataset that ``data=imagefolder`` streams.

    python -m lth.data.prepare SRC OUT [--workers N] [--chunk-bytes 64MB]

``SRC`` has the ImageNet layout: ``SRC/train/<class>/<image>`` and ``SRC/val/<class>/<image>``
(classes are the sub-folder names, sorted, as torchvision's ``ImageFolder`` numbers them). Each
image's file bytes are stored as they are (no re-encoding) with its label, in ``litdata.optimize``
chunks: ``OUT/train`` from ``SRC/train`` and ``OUT/test`` from ``SRC/val`` (the papers report
ImageNet's validation images as test accuracy; lth's own validation split, for early stopping,
is held out of ``OUT/train`` by ``data.val_size`` when training). ``OUT/lth.json`` records the
classes and the split sizes, ``OUT/<split>-labels.npy`` the labels in the stored order (a fixed
random permutation of the files, so that litdata's chunks mix the classes).

Everything is written under ``OUT.partial`` and renamed to ``OUT`` at the end: an interrupted or
failed run leaves no half-written ``OUT``. ``OUT`` may then be copied to an object store
(``s3://...``, ``gs://...``) and given as ``data.path``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

FORMAT = 1
META = "lth.json"
SPLITS = {"train": "train", "test": "val"}  # stored split -> SRC sub-folder
STORE_ORDER_SEED = 0
START_METHOD = "fork" if "fork" in mp.get_all_start_methods() else "spawn"


def is_remote(path: str) -> bool:
    return "://" in path or path.startswith("local:")


def read_metadata(path: str | None, cache_dir: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """``lth.json`` and the label arrays of a prepared dataset (fetched with litdata's downloader if remote);
    DatasetNotFoundError where there is none. Needs no torch for a local folder (lth's checks call it)."""
    from lth.data.integrity import DatasetCorruptError
    from lth.data.torchvision_files import DatasetNotFoundError

    if path in (None, "", "None"):
        raise DatasetNotFoundError("data.path is not set: data=imagefolder streams a dataset written by "
                                   "python -m lth.data.prepare SRC OUT; set data.path=OUT")
    names = [META, "train-labels.npy", "test-labels.npy"]
    if is_remote(path):
        from litdata.streaming.downloader import get_downloader

        local = tempfile.mkdtemp(prefix="lth-meta-", dir=cache_dir)
        downloader = get_downloader(path, local, [])
        try:
            for name in names:
                downloader.download_file(f"{path.rstrip('/')}/{name}", os.path.join(local, name))
        except Exception as exc:  # noqa: BLE001 - each object store raises its own
            raise DatasetNotFoundError(f"no prepared dataset at data.path={path} ({exc.__class__.__name__}: {exc}); "
                                       f"write one with python -m lth.data.prepare SRC OUT") from None
        folder = local
    else:
        folder = os.path.expanduser(path)
        missing = [n for n in names if not os.path.isfile(os.path.join(folder, n))]
        if missing:
            raise DatasetNotFoundError(
                f"no prepared dataset at data.path={path} ({os.path.join(folder, missing[0])} is missing); write one "
                f"with python -m lth.data.prepare SRC OUT (SRC/train/<class>/*.jpg, SRC/val/<class>/*.jpg)")
    damaged = (f"; prepare it again: remove {path} and run python -m lth.data.prepare SRC {path}"
               if not is_remote(path) else "; prepare it again with python -m lth.data.prepare SRC OUT")
    try:
        with open(os.path.join(folder, META)) as f:
            meta = json.load(f)
        if not isinstance(meta, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:
        raise DatasetCorruptError(f"{os.path.join(folder, META)} is damaged ({exc}){damaged}") from None
    if meta.get("format") != FORMAT:
        raise DatasetNotFoundError(f"{path} was prepared by another lth version (format {meta.get('format')}, "
                                   f"expected {FORMAT}); prepare it again with python -m lth.data.prepare")
    labels = {}
    for split in SPLITS:
        file = os.path.join(folder, f"{split}-labels.npy")
        try:
            labels[split] = np.load(file, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetCorruptError(f"{file} is damaged ({exc}){damaged}") from None
    if problem := _inconsistent(meta, labels) or (None if is_remote(path) else _missing_chunks(folder, meta)):
        raise DatasetCorruptError(f"the prepared dataset at data.path={path} is damaged: {problem}{damaged}")
    return meta, labels


def _inconsistent(meta: dict, labels: dict[str, np.ndarray]) -> str | None:
    """What in ``lth.json`` and the label files does not agree (None if all does)."""
    classes, sizes = meta.get("classes"), meta.get("sizes")
    if not (isinstance(classes, list) and classes and isinstance(sizes, dict)
            and all(isinstance(sizes.get(s), int) for s in SPLITS)):
        return f"{META} lacks its classes or split sizes"
    for split, y in labels.items():
        if y.shape != (sizes[split],) or y.dtype.kind not in "iu" or (y.size and not 0 <= y.min() <= y.max() < len(classes)):
            return f"{split}-labels.npy does not hold the {sizes[split]:,} labels of {len(classes)} classes {META} records"
    return None


def _missing_chunks(folder: str, meta: dict) -> str | None:
    """The first chunk of a local prepared dataset that is missing or not of the size its ``index.json`` records
    (a half-copied folder; litdata would wait for it), or an index that does not hold the recorded images."""
    for split in SPLITS:
        index = os.path.join(folder, split, "index.json")
        try:
            with open(index) as f:
                chunks = json.load(f)["chunks"]
            files = [(os.path.join(folder, split, c["filename"]), int(c["chunk_bytes"]), int(c["chunk_size"]))
                     for c in chunks]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{index} is missing or unreadable ({exc.__class__.__name__}: {exc})"
        for file, size, _ in files:
            if not os.path.isfile(file):
                return f"{file} is missing"
            if os.path.getsize(file) != size:
                return f"{file} holds {os.path.getsize(file):,} bytes, not the {size:,} its index.json records"
        if sum(n for *_, n in files) != meta["sizes"][split]:
            return f"{index} lists {sum(n for *_, n in files):,} images, not the {meta['sizes'][split]:,} of {META}"
    return None



class PrepareError(ValueError):
    pass


def image_files(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[tuple[str, int]]]:
    """The classes (sorted sub-folders, or the given ones) and ``(file, label)`` for every image below them."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    if not folder.is_dir():
        raise PrepareError(f"{folder} is not a folder: the source needs train/<class>/*.jpg and val/<class>/*.jpg")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir())
    if not found:
        raise PrepareError(f"{folder} has no class sub-folders (expected {folder}/<class>/*.jpg)")
    if classes is None:
        classes = found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise PrepareError(f"{folder} has classes that train/ lacks: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    items = [(str(f), index[c]) for c in found for f in sorted((folder / c).rglob("*"))
             if f.is_file() and f.suffix.lower() in IMG_EXTENSIONS]
    if not items:
        raise PrepareError(f"{folder} holds no images ({', '.join(IMG_EXTENSIONS)})")
    return classes, items


def unreadable(path: str) -> str | None:
    """Why ``path`` is not a readable image (None if it is)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            img.verify()
    except Exception as exc:  # noqa: BLE001 - PIL raises many kinds
        return f"{path} is not a readable image ({exc})"
    return None


def read_sample(item: tuple[str, int, int]) -> dict:
    """One stored sample: the file's bytes, its label and its position in the split (which seeds its
    augmentation when training)."""
    path, label, index = item
    return {"image": Path(path).read_bytes(), "label": int(label), "index": int(index)}


def prepare(src: Path | str, out: Path | str, workers: int = 1, chunk_bytes: str = "64MB") -> dict:
    """Write ``out`` from ``src`` (see the module docstring); returns the metadata written to ``lth.json``."""
    if not re.fullmatch(r"\s*\d*\.?\d+\s*[kmgt]?b?\s*", str(chunk_bytes), re.IGNORECASE) or \
            not float(re.sub(r"[^\d.]", "", str(chunk_bytes))) > 0:
        raise PrepareError(f"--chunk-bytes {chunk_bytes!r} is not a size: give e.g. 64MB, 512KB or 1GB")
    src, out = Path(src), Path(out)
    if out.exists():
        raise PrepareError(f"{out} already exists; remove it or choose another output folder")
    classes, _ = image_files(src / "train")
    listed = {split: image_files(src / folder, classes)[1] for split, folder in SPLITS.items()}
    # Every image is checked before anything is written (a failing litdata worker would leave its
    # helper processes behind).
    with mp.get_context(START_METHOD).Pool(workers) as pool:
        paths = [p for items in listed.values() for p, _ in items]
        bad = [reason for reason in pool.imap(unreadable, paths, chunksize=64) if reason]
    if bad:
        raise PrepareError(f"{len(bad)} unreadable image(s): {bad[0]}" + (" ..." if len(bad) > 1 else ""))
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)  # left by an interrupted run: never a finished dataset
    _check_space(out, sum(os.path.getsize(p) for p in paths), len(paths))
    try:
        _write(partial, listed, workers, chunk_bytes)
    except BaseException:  # a full disk, an unwritable folder, Ctrl-C: no half-written folder stays
        shutil.rmtree(partial, ignore_errors=True)
        raise
    meta = {"format": FORMAT, "classes": classes, "sizes": {s: len(i) for s, i in listed.items()}}
    (partial / META).write_text(json.dumps(meta, indent=1))
    os.replace(partial, out)
    return meta


def _check_space(out: Path, image_bytes: int, images: int) -> None:
    """Refuse before writing where the images (stored as they are) do not fit beside ``out``: litdata's
    workers wait forever for a chunk that a full disk kept them from writing."""
    needed = int(image_bytes * 1.01) + 64 * images + (1 << 20)  # chunk headers, labels, indexes
    parent = next((p for p in [out.parent, *out.parent.parents] if p.exists()), Path("."))
    free = shutil.disk_usage(parent).free
    if free < needed:
        raise PrepareError(f"{out} needs about {needed / 2**20:,.1f} MiB (the {images:,} images as they are) and "
                           f"{parent} has {free / 2**20:,.1f} MiB free; free space or choose another output folder")


def _write(partial: Path, listed: dict[str, list[tuple[str, int]]], workers: int, chunk_bytes: str) -> None:
    """Each split's images as litdata chunks and its labels, under ``partial``."""
    import litdata

    partial.mkdir(parents=True)
    for split, items in listed.items():
        # Stored in a fixed random order, so that every chunk mixes the classes: litdata's shuffle
        # permutes chunks and items within a chunk, and a worker streams from a few chunks at a time.
        # keep_data_ordered + no reordering keep this order, so the labels file lines up with it.
        items = [items[i] for i in np.random.default_rng(STORE_ORDER_SEED).permutation(len(items))]
        litdata.optimize(fn=read_sample, inputs=[(p, y, i) for i, (p, y) in enumerate(items)],
                         output_dir=str(partial / split), chunk_bytes=chunk_bytes, num_workers=workers,
                         keep_data_ordered=True, reorder_files=False, verbose=False, start_method=START_METHOD)
        np.save(partial / f"{split}-labels.npy", np.array([label for _, label in items], dtype=np.int64))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lth.data.prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="image-folder tree: SRC/train/<class>/*.jpg and SRC/val/<class>/*.jpg")
    parser.add_argument("out", help="output folder (must not exist)")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 1) // 2),
                        help="processes reading the images (default: half the CPUs)")
    parser.add_argument("--chunk-bytes", default="64MB", help="size of litdata's chunks (default 64MB)")
    args = parser.parse_args(argv)
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        meta = prepare(args.src, args.out, args.workers, args.chunk_bytes)
    except PrepareError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable or full output folder
        print(f"error: could not write {exc.filename or args.out} ({exc.strerror or exc}); nothing was kept: "
              f"free space or choose another output folder, and run it again", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(meta['classes'])} classes, {meta['sizes']['train']:,} train and "
          f"{meta['sizes']['test']:,} test images")
    return 0


if __name__ == "__main__":
    sys.exit(main())
