"""Peak memory of a streamed epoch does not grow with the dataset's size (issue 21, data=imagefolder).

    python -m benchmarks.stream_memory                  # 1,000 and 4,000 training images of 128x128
    python -m benchmarks.stream_memory --images 250 --reps 1   # quick

Writes two image-folder trees (``train/<class>/*.jpg``, ``val/<class>/*.jpg``) of N and 4N
training images (and N/4, N test images), prepares both with ``python -m lth.data.prepare``,
then for each runs a fresh process that opens ``data=imagefolder``, streams one epoch of training
batches (ImageNet augmentation on) and evaluates a small network on the validation and test
images, the way a round does. Each process reports its peak resident memory (``ru_maxrss``;
with ``--workers`` > 0, the largest streaming worker's too). The sizes alternate across
repetitions and the minimum per size is reported, beside the bytes that holding the training
images as one float32 tensor (as ``data=mnist`` and ``data=cifar10`` do) would take.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python benchmarks/stream_memory.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_image_tree(root: Path | str, n_train: int, n_val: int, classes: int = 3, size: int = 24,
                     seed: int = 0) -> Path:
    """``root/train/class<c>/<i>.jpg`` and ``root/val/...``: noise images whose class is a colour cast."""
    import numpy as np
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for split, count in (("train", n_train), ("val", n_val)):
        for i in range(count):
            c = i % classes
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (size, size + i % 5, 3), dtype=np.uint8)  # sizes vary a little
            pixels[..., c % 3] = np.clip(pixels[..., c % 3].astype(int) // 4 + 180, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


def measure(path: str, image_size: int, workers: int, batch_size: int) -> dict:
    """In this process: one epoch streamed + val/test evaluated; peak RSS in MiB."""
    import torch

    from lth.data.imagefolder import ImageFolderDataModule, read_metadata
    from lth.models import ConvNet
    from lth.training.evaluation import evaluate

    dm = ImageFolderDataModule(path, val_size=max(1, read_metadata(path)[0]["sizes"]["train"] // 10),
                               image_size=image_size, num_workers=workers).to("cpu")
    dm.augment = True
    stream = dm.train_stream(batch_size, seed=0, end=10**9)
    model = ConvNet(dm.input_shape, dm.num_classes, depth=2, hidden=(32,))
    seen = 0
    for i, (x, y) in zip(range(stream.steps_per_epoch), stream.batches(0)):
        with torch.no_grad():
            model(x)
        seen += len(y)
    for split in ("val", "test"):
        evaluate(model, *dm.splits[split], batch_size)
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"images": dm.train_file_size, "streamed": seen, "peak_rss_mib": round(own, 1),
            "worker_peak_rss_mib": round(children, 1) if workers else None,
            "in_memory_mib": round(dm.sizes()["train"] * 3 * image_size**2 * 4 / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=1000, help="N: the smaller set's training images (4N the larger)")
    parser.add_argument("--size", type=int, default=128, help="stored image side in pixels")
    parser.add_argument("--crop", type=int, default=112, help="data.image_size")
    parser.add_argument("--workers", type=int, default=0, help="data.num_workers")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # internal: the child process
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.crop, args.workers, args.batch_size)))
        return 0

    from lth.data.prepare import prepare

    with tempfile.TemporaryDirectory(prefix="lth-stream-bench-") as tmp:
        paths = {}
        for n in (args.images, 4 * args.images):
            src = write_image_tree(Path(tmp) / f"src{n}", n, max(4, n // 4), classes=10, size=args.size)
            paths[n] = str(Path(tmp) / f"out{n}")
            prepare(src, paths[n], workers=1, chunk_bytes="256KB")
        results: dict[int, list[dict]] = {n: [] for n in paths}
        for rep in range(args.reps):
            for n in (paths if rep % 2 == 0 else list(paths)[::-1]):
                proc = subprocess.run([sys.executable, "-m", "benchmarks.stream_memory", "--measure", paths[n],
                                       "--crop", str(args.crop), "--workers", str(args.workers),
                                       "--batch-size", str(args.batch_size)],
                                      capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1],
                                      env={**os.environ, "PYTHONWARNINGS": "ignore"})
                if proc.returncode:
                    print(proc.stdout + proc.stderr, file=sys.stderr)
                    return 1
                results[n].append(json.loads(proc.stdout.strip().splitlines()[-1]))
    small, large = (min(results[n], key=lambda r: r["peak_rss_mib"]) for n in paths)
    print(f"{'training images':>16} {'streamed/epoch':>15} {'peak RSS MiB':>13} {'worker peak MiB':>16} "
          f"{'as one tensor MiB':>18}")
    for r in (small, large):
        print(f"{r['images']:>16,} {r['streamed']:>15,} {r['peak_rss_mib']:>13.1f} "
              f"{r['worker_peak_rss_mib'] if r['worker_peak_rss_mib'] is not None else '-':>16} {r['in_memory_mib']:>18.1f}")
    ratio = large["peak_rss_mib"] / small["peak_rss_mib"]
    print(f"peak RSS ratio (4x the images): {ratio:.3f}  (min over {args.reps} interleaved runs per size)")
    if args.json:
        Path(args.json).write_text(json.dumps({"small": small, "large": large, "ratio": ratio, "runs": results},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
