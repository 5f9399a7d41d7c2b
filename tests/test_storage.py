"""Atomic outputs: a failed save leaves the previous file intact; everything loads with weights_only=True."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import lth.storage as storage
from lth.storage import CorruptFileError, atomic_torch_save, atomic_write_json, atomic_write_text, load_tensors, read_json

PACKAGE = Path(storage.__file__).resolve().parent


def test_failed_rename_keeps_the_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"round": 1})
    before = path.read_bytes()

    def full_disk(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(storage.os, "replace", full_disk)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_json(path, {"round": 2})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_failed_write_keeps_the_previous_tensor_file(tmp_path, monkeypatch):
    path = tmp_path / "mask.pt"
    atomic_torch_save({"w": torch.ones(3)}, path)
    before = path.read_bytes()
    real_fsync = os.fsync

    def io_error(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(storage.os, "fsync", io_error)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.setattr(storage.os, "fsync", real_fsync)
    assert path.read_bytes() == before
    assert torch.equal(load_tensors(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["mask.pt"]


def test_written_files_are_readable_by_others(tmp_path):
    path = tmp_path / "a.txt"
    atomic_write_text(path, "x")
    assert path.stat().st_mode & 0o044 == 0o044 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_truncated_or_garbage_files_raise_corrupt_file_error(tmp_path):
    path = tmp_path / "theta0.pt"
    atomic_torch_save({"w": torch.ones(100)}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(CorruptFileError, match="theta0.pt is corrupt"):
        load_tensors(path)
    bad_json = tmp_path / "row.json"
    bad_json.write_text('{"round": ')
    with pytest.raises(CorruptFileError):
        read_json(bad_json)


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"f": os.getcwd}, path)  # a callable: needs unpickling arbitrary objects
    with pytest.raises(CorruptFileError):
        load_tensors(path)


def test_no_torch_load_without_weights_only_true():
    offenders = []
    for py in PACKAGE.rglob("*.py"):
        text = py.read_text()
        for match in re.finditer(r"torch\.load\(", text):
            call = text[match.start(): text.find(")", match.end()) + 1]
            depth, i = 0, match.end() - 1
            for i in range(match.end() - 1, len(text)):  # the whole call, nested parentheses included
                depth += {"(": 1, ")": -1}.get(text[i], 0)
                if depth == 0:
                    break
            call = text[match.start(): i + 1]
            if "``" in text[max(0, match.start() - 2): match.start()]:
                continue  # documentation
            if not re.search(r"weights_only\s*=\s*True", call):
                offenders.append(f"{py.relative_to(PACKAGE)}: {call}")
    assert not offenders, offenders
