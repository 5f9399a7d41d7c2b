"""data=imagefolder end to end on a few hundred generated JPEGs: prepare, stream, split, train."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import litdata
import numpy as np
import pytest
import torch

from benchmarks.stream_memory import write_image_tree
from lth.data.imagefolder import ImageFolderDataModule, transform
from lth.data.prepare import prepare
from lth.data.torchvision_files import DatasetNotFoundError
from tests.conftest import FAST, REPO, compose_config

N_TRAIN, N_TEST, CLASSES, VAL = 240, 60, 3, 40


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return write_image_tree(tmp_path_factory.mktemp("src"), N_TRAIN, N_TEST, classes=CLASSES)


@pytest.fixture(scope="module")
def prepared(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("prepared") / "out"
    prepare(tree, out, workers=1, chunk_bytes="48KB")  # several chunks, so litdata's shuffle has chunks to mix
    return out


def datamodule(path, **kw) -> ImageFolderDataModule:
    return ImageFolderDataModule(str(path), **{"val_size": VAL, "image_size": 16, "num_workers": 0, **kw}).to("cpu")


def test_prepare_stores_every_image_once_with_its_label(tree, prepared):
    for split, folder in (("train", "train"), ("test", "val")):
        expected = sorted((p.read_bytes(), int(p.parent.name.removeprefix("class")))
                          for p in (tree / folder).rglob("*.jpg"))
        ds = litdata.StreamingDataset(str(prepared / split))
        stored = [ds[i] for i in range(len(ds))]
        assert sorted((bytes(s["image"]), s["label"]) for s in stored) == expected
        assert [s["index"] for s in stored] == list(range(len(ds)))
        labels = np.load(prepared / f"{split}-labels.npy")
        assert labels.tolist() == [s["label"] for s in stored]  # the labels file lines up with the stored order
        assert labels[: len(labels) // 2].tolist() != sorted(labels[: len(labels) // 2].tolist())  # classes mixed
    assert len(list((prepared / "train").glob("chunk-*.bin"))) > 1


def test_classes_and_shape_come_from_the_data(prepared):
    dm = datamodule(prepared, image_size=20)
    assert (dm.num_classes, dm.input_shape, dm.train_file_size) == (CLASSES, (3, 20, 20), N_TRAIN)
    assert dm.sizes() == {"train": N_TRAIN - VAL, "val": VAL, "test": N_TEST}
    x, y = dm.splits["test"]
    batch = x[0:7]
    assert batch.shape == (7, 3, 20, 20) and batch.dtype == torch.float32
    assert y[0:7].tolist() == np.load(prepared / "test-labels.npy")[:7].tolist()


def _epoch_indices(dm, seed=0) -> list[int]:
    """The stored indices of one epoch's training images, recognised by their (unaugmented) pixels."""
    pixels = {}
    for split in ("train", "val"):
        x, _ = dm.splits[split]
        images = x[0 : len(x)]
        for i, img in zip(x.indices, images):
            pixels[img.numpy().tobytes()] = int(i)
    assert len(pixels) == N_TRAIN
    stream = dm.train_stream(20, seed, 10**9)
    seen = []
    for _, (x, y) in zip(range(stream.steps_per_epoch), stream.batches(0)):
        seen += [pixels[img.numpy().tobytes()] for img in x]
    return seen


def test_validation_images_are_held_out_with_a_fixed_split(prepared):
    a, b = datamodule(prepared), datamodule(prepared, split_seed=0)
    assert np.array_equal(a.val_idx, b.val_idx)  # the same split every time
    assert not set(a.val_idx) & set(a.train_idx) and len(set(a.val_idx) | set(a.train_idx)) == N_TRAIN
    assert not np.array_equal(datamodule(prepared, split_seed=1).val_idx, a.val_idx)
    seen = _epoch_indices(a)  # augmentation off: streamed images are the evaluation images, recognisable
    assert len(seen) == len(set(seen)) == (N_TRAIN - VAL) // 20 * 20  # each training image at most once
    assert set(seen) <= set(a.train_idx.tolist()) and not set(seen) & set(a.val_idx.tolist())


@pytest.mark.parametrize("workers", [0, 2])
def test_stream_is_a_function_of_seed_and_iteration(prepared, workers):
    dm = datamodule(prepared, num_workers=workers)
    dm.augment = True
    epoch = dm.train_stream(20, 5, 10**9).steps_per_epoch
    full = [b for _, b in zip(range(2 * epoch + 2), dm.train_stream(20, 5, 10**9).batches(0))]
    again = dm.train_stream(20, 5, 2 * epoch + 2, group=3)  # another round with the same data seed
    flat = [b for group in again for b in group]
    assert len(flat) == len(full) and all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1])
                                          for u, v in zip(full, flat))
    for k in (3, epoch, epoch + 4):  # a round rewound to K, also across an epoch boundary
        tail = dm.train_stream(20, 5, 2 * epoch + 2, position=lambda: k)
        got = [b for group in tail for b in group]
        assert all(torch.equal(u[0], v[0]) and torch.equal(u[1], v[1]) for u, v in zip(full[k:], got))
        assert len(got) == len(full) - k
    other = dm.train_stream(20, 6, 1).batch(0)
    assert not torch.equal(other[0], full[0][0])
    assert not torch.equal(full[0][0], full[epoch][0])  # epochs differ (order and augmentation)


def test_augmentation_is_the_imagenet_one(prepared):
    dm = datamodule(prepared)
    plain = dm.train_stream(20, 0, 1).batch(0)[0]
    dm.augment = True
    augmented = dm.train_stream(20, 0, 1).batch(0)[0]
    assert augmented.shape == plain.shape == (20, 3, 16, 16)
    assert not torch.equal(augmented, plain)
    names = [type(t).__name__ for t in transform(16, augment=True).transforms]
    assert names[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"] and names[-1] == "Normalize"
    assert [type(t).__name__ for t in transform(16, augment=False).transforms][:2] == ["Resize", "CenterCrop"]
    assert transform(224, augment=False).transforms[0].size == [256]  # resize to 224 / 0.875


def test_object_store_paths_stream_the_same_batches(prepared):
    """litdata's ``local:`` scheme reads through its downloader and cache, as for s3:// or gs://."""
    local, remote = datamodule(prepared), datamodule(f"local:{prepared}")
    assert remote.num_classes == CLASSES
    a, b = local.train_stream(20, 1, 1).batch(0), remote.train_stream(20, 1, 1).batch(0)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_missing_dataset_is_one_clear_error(tmp_path):
    from lth.data.facts import check_files

    with pytest.raises(DatasetNotFoundError, match="python -m lth.data.prepare"):
        check_files("lth.data.imagefolder.ImageFolderDataModule", str(tmp_path), False)
    with pytest.raises(DatasetNotFoundError, match="data.path is not set"):
        check_files("lth.data.imagefolder.ImageFolderDataModule", None, False)  # data=imagefolder without data.path


def test_prepare_refuses_bad_input_and_damages_nothing(tree, tmp_path):
    run = lambda *a: subprocess.run([sys.executable, "-m", "lth.data.prepare", *map(str, a)], capture_output=True,
                                    text=True, cwd=REPO, timeout=600)
    bad = tmp_path / "bad"
    (bad / "train" / "a").mkdir(parents=True)
    (bad / "train" / "a" / "x.jpg").write_bytes(next((tree / "train").rglob("*.jpg")).read_bytes())
    proc = run(bad, tmp_path / "out")  # no val/ folder
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and "val" in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    (bad / "val").symlink_to(bad / "train")
    (bad / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    proc = run(bad, tmp_path / "out")  # an unreadable image, found by litdata's worker
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and last.startswith("error:") and "broken.jpg" in last, proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "keep").write_text("mine")
    proc = run(tree, existing)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and (existing / "keep").read_text() == "mine"


@pytest.mark.slow  # five short trainings, SNIP scores and an instability path on the streamed data
def test_lottery_round_trains_on_a_streamed_dataset(prepared, tmp_path):
    from lth.lottery import Lottery
    from lth.validation import check

    cfg = compose_config(["model=conv2", "data=imagefolder", f"data.path={prepared}", f"data.val_size={VAL}",
                          "data.image_size=16", "data.num_workers=0", *FAST, "prune.rounds=1", "train.iterations=20",
                          "train.batch_size=20", "train.augment=true", "eval_every=10", "checkpoint_every=10",
                          "eval_batch_size=50", "rewind_iteration=5", "controls=[snip]", "instability=true"])
    check(cfg)
    rows = Lottery(cfg, tmp_path / "exp").run()
    by = {(r["round"], r["branch"]): r for r in rows}
    assert {(0, "ticket"), (1, "ticket"), (1, "snip"), (1, "instability")} <= set(by)
    assert by[1, "ticket"]["weights_remaining"] < 100.0
    assert all(0.0 <= r["test_acc_at_es"] <= 1.0 and r["es_iteration"] in (5, 10, 20) for r in rows if r["round"])
    assert by[0, "ticket"]["final_test_acc"] > 1 / CLASSES + 0.2  # the colour cast is learnt: it really trained
    assert by[1, "instability"]["instability"] >= 0.0  # the error barrier, evaluated on the streamed test images


@pytest.mark.slow  # prepares two datasets and measures each in a fresh process
def test_memory_benchmark_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.stream_memory", "--images", "40", "--size", "32",
                           "--crop", "24", "--batch-size", "10", "--reps", "1", "--json", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "peak RSS ratio (4x the images)" in proc.stdout
    result = __import__("json").loads(out.read_text())
    assert (result["small"]["images"], result["large"]["images"]) == (40, 160)
    assert (result["small"]["streamed"], result["large"]["streamed"]) == (30, 140)  # whole batches of 10, 10% held out


def _checked(prepared, *overrides):
    """lth's checks before a run (:func:`lth.validation.check`) on a streamed-data configuration."""
    from lth.validation import check

    check(compose_config(["data=imagefolder", f"data.path={prepared}", f"data.val_size={VAL}", "data.image_size=16",
                          "data.num_workers=0", *FAST, "prune.rounds=1", "train.batch_size=20", *overrides]))


def test_settings_that_do_not_fit_the_prepared_data_are_refused_before_the_run(prepared):
    """The training file's size, the classes and the input shape of a prepared dataset are read from its
    lth.json by the checks, so sizes, shapes and exempt patterns are refused as for the built-in data
    (they were found only once the run had started: a traceback, exit 1)."""
    from lth.validation import ConfigError

    _checked(prepared)  # fits
    cases = {("data.val_size=240",): "data.val_size=240 must be smaller than the 240 examples",
             ("train.batch_size=201",): "train.batch_size=201 is larger than the training set of data=imagefolder (200",
             ("model=conv6", "data.image_size=4"): "model=conv6 does not fit data=imagefolder (input (3, 4, 4), 3 classes)",
             ("model=resnet20", "model.exempt=[output,nothing*]"): "'nothing*', which matches no prunable tensor"}
    for overrides, message in cases.items():
        with pytest.raises(ConfigError, match=re.escape(message)):
            _checked(prepared, *overrides)


def test_a_damaged_prepared_dataset_is_one_clear_error(prepared, tmp_path):
    """A half-copied or damaged prepared folder is named before the run starts (litdata waited for a missing
    or short chunk, then raised; the others were tracebacks)."""
    import shutil

    from lth.validation import ConfigError

    chunk = sorted((prepared / "train").glob("chunk-*.bin"))[-1]
    damages = {"missing chunk": (lambda d: (d / "train" / chunk.name).unlink(), f"{chunk.name} is missing"),
               "short chunk": (lambda d: os.truncate(d / "train" / chunk.name, 100), "holds 100 bytes, not the"),
               "no index": (lambda d: (d / "test" / "index.json").unlink(), "test/index.json is missing or unreadable"),
               "cut lth.json": (lambda d: (d / "lth.json").write_text('{"format": 1, "cla'), "lth.json is damaged"),
               "cut labels": (lambda d: (d / "train-labels.npy").write_bytes((prepared / "train-labels.npy").read_bytes()[:90]),
                              "train-labels.npy is damaged"),
               "other labels": (lambda d: np.save(d / "test-labels.npy", np.zeros(3, np.int64)),
                                f"test-labels.npy does not hold the {N_TEST} labels of {CLASSES} classes")}
    for name, (damage, message) in damages.items():
        copy = tmp_path / name.replace(" ", "_")
        shutil.copytree(prepared, copy)
        damage(copy)
        with pytest.raises(ConfigError, match=re.escape(message)) as raised:
            _checked(copy)
        assert "python -m lth.data.prepare" in str(raised.value), name
    proc = subprocess.run([sys.executable, "-m", "lth.run", "data=imagefolder", f"data.path={tmp_path / 'short_chunk'}",
                           "data.image_size=16", f"data.val_size={VAL}", *FAST, f"hydra.run.dir={tmp_path / 'exp'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1 and "not the" in proc.stderr, proc.stderr
    assert not (tmp_path / "exp").exists()


def test_the_data_order_does_not_depend_on_the_free_memory(prepared, monkeypatch):
    """litdata lowers a local dataset's loader workers to what MemAvailable fits (256 MB each), and its order
    depends on the number of workers: on a machine with little free memory the same seed and
    data.num_workers streamed other batches (a warning only), and a resume elsewhere continued another order."""
    import litdata.streaming.posix_fast as posix_fast

    def epoch_labels(dm):
        stream = dm.train_stream(20, 5, 10**9)
        return [y.tolist() for _, (_, y) in zip(range(stream.steps_per_epoch), stream.batches(0))]

    monkeypatch.delenv("LITDATA_POSIX_MAX_WORKERS", raising=False)
    ample = epoch_labels(datamodule(prepared, num_workers=2))
    monkeypatch.setattr(posix_fast, "available_ram_bytes", lambda *a: 300 * 2**20)  # room for one worker
    assert posix_fast.posix_max_data_workers(requested=2) == 1  # what litdata would do
    assert epoch_labels(datamodule(prepared, num_workers=2)) == ample
    assert ample != epoch_labels(datamodule(prepared, num_workers=1))  # the order does depend on the workers


def test_litdatas_info_lines_are_not_shown(prepared, caplog):
    """Each training on a streamed dataset printed litdata's 'POSIX-fast ... mmap chunks in place' and
    'max_cache_size is unset' INFO lines (several per level) among lth's own."""
    import logging

    from lth.quiet import LITDATA_LOG_RULES, LibraryMessageFilter, quiet

    def litdata_lines() -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.INFO):
            datamodule(prepared).train_stream(20, 5, 1).batch(0)
        return [r.getMessage() for r in caplog.records if r.name.startswith("litdata")]

    for name in LITDATA_LOG_RULES:  # as without lth.quiet
        logger = logging.getLogger(name)
        logger.filters = [f for f in logger.filters if not isinstance(f, LibraryMessageFilter)]
    shown = litdata_lines()
    assert any("POSIX-fast" in m for m in shown) and any("max_cache_size is unset" in m for m in shown), shown
    quiet()
    assert litdata_lines() == []


def test_prepare_refuses_an_unwritable_or_full_output_and_bad_chunk_sizes(tree, tmp_path, capsys, monkeypatch):
    """An output folder that cannot be written was a traceback; a bad --chunk-bytes a traceback after OUT.partial
    was made (and left); a disk too small hung for ever (litdata's workers wait for the chunk they could not
    write); a write failing part-way left OUT.partial. Each is now one error: line, exit 2, nothing written."""
    import errno
    import shutil as shutil_module

    import litdata

    from lth.data.prepare import main

    def refused(*argv) -> str:
        capsys.readouterr()
        assert main([str(a) for a in argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: "), err
        assert [p.name for p in tmp_path.iterdir()] == ["file"], list(tmp_path.iterdir())
        return err[0]

    (tmp_path / "file").write_text("not a folder")
    assert "could not write" in refused(tree, tmp_path / "file" / "out", "--workers", "1")
    for size in ("abc", "0MB", "-5MB", "1.5.3MB"):
        assert f"--chunk-bytes {size!r} is not a size" in refused(tree, tmp_path / "out", f"--chunk-bytes={size}")
    total = sum(p.stat().st_size for p in tree.rglob("*.jpg"))
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: __import__("types").SimpleNamespace(free=total))
    assert f"the {N_TRAIN + N_TEST:,} images as they are" in refused(tree, tmp_path / "out", "--workers", "1")
    monkeypatch.undo()

    def full_disk(*args, output_dir, **kwargs):
        Path(output_dir).mkdir(parents=True)
        (Path(output_dir) / "chunk-0-0.bin").write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", str(Path(output_dir) / "chunk-0-1.bin"))

    monkeypatch.setattr(litdata, "optimize", full_disk)
    assert "No space left on device" in refused(tree, tmp_path / "out", "--workers", "1")


@pytest.mark.parametrize("workers", [0, 2])
def test_a_chunk_damaged_inside_is_one_clear_error_where_it_is_read(prepared, tmp_path, workers):
    """A chunk of the right size whose bytes are damaged (bit rot, a bad copy) ended the run in litdata's or PIL's
    traceback (exit 1), from a loader worker with the worker's traceback inside; it is one DatasetCorruptError
    line (lth.run: error:, exit 2) wherever it is read, training batches and evaluation slices alike."""
    import shutil

    from lth.data.integrity import DatasetCorruptError

    copy = tmp_path / "rotten"
    shutil.copytree(prepared, copy)
    for chunk in (copy / "train").glob("chunk-*.bin"):
        data = bytearray(chunk.read_bytes())
        data[16:] = b"A" * (len(data) - 16)
        chunk.write_bytes(bytes(data))
    _checked(copy)  # the sizes are right: only reading finds it
    dm = datamodule(copy, num_workers=workers)
    for read in (lambda: dm.train_stream(20, 5, 1).batch(0), lambda: dm.splits["val"][0][0:5]):
        with pytest.raises(DatasetCorruptError) as raised:
            read()
        message = str(raised.value)
        assert "\n" not in message and f"of the prepared dataset {copy}/train cannot be read (" in message, message
        assert message.endswith("the dataset is damaged; prepare it again with python -m lth.data.prepare SRC OUT")


def test_no_evaluation_thread_beside_a_streamed_datasets_loader_processes():
    """litdata forks its loader processes at every epoch; a fork while lth's evaluation thread ran (the CPU
    default, eval_beside_training=auto, where a core is free) deadlocked the training for good."""
    from lth.training.round import eval_beside_training

    def beside(*overrides) -> bool:
        cfg = compose_config(["data=imagefolder", "data.path=OUT", *FAST, *overrides])
        return eval_beside_training(cfg, torch.device("cpu"), alone=True)

    with mock_cores(4):
        assert beside("data.num_workers=0")  # in-process decoding: the thread as elsewhere
        assert not beside("data.num_workers=2") and not beside("data.num_workers=2", "eval_beside_training=true")


def mock_cores(n: int):
    from unittest import mock

    return mock.patch("os.sched_getaffinity", lambda pid: set(range(n)))


@pytest.mark.slow  # a short streamed training in a fresh process, three epochs of loader processes
def test_a_streamed_training_with_loader_processes_ends(prepared, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "lth.run", "data=imagefolder", f"data.path={prepared}",
                           "data.image_size=16", f"data.val_size={VAL}", "data.num_workers=2", "train.augment=true",
                           "train.batch_size=20", "train.iterations=30", "eval_every=10", "prune.rounds=0", *FAST,
                           "eval_beside_training=auto", f"hydra.run.dir={tmp_path / 'exp'}"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "exp" / "results.csv").exists()


def test_a_round_resumed_on_streamed_data_gives_no_warning_about_its_loader(prepared, tmp_path, recwarn):
    """Lightning warned, at every mid-round resume on a streamed dataset, that the loader 'is not resumable. This can
    cause unreliable results': the round continues at its step by lth's own position (tested), and says so."""
    from lth.lottery import Lottery
    from tests.test_resume import Interrupt, InterruptAt

    cfg = compose_config(["data=imagefolder", f"data.path={prepared}", f"data.val_size={VAL}", "data.image_size=16",
                          "data.num_workers=0", *FAST, "prune.rounds=1", "train.iterations=30", "train.batch_size=20",
                          "eval_every=10", "checkpoint_every=10", "trainer.steps_per_call=5"])
    lottery = Lottery(cfg, tmp_path / "exp")
    lottery.extra_callbacks.append(InterruptAt("round_01/ticket", 15))
    with pytest.raises(Interrupt):
        lottery.run()
    recwarn.clear()
    Lottery(cfg, tmp_path / "exp").run()
    assert not [str(w.message) for w in recwarn if "not resumable" in str(w.message)]
