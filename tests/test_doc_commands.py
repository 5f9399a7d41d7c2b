"""Every ``python -m lth.run`` command written in README.md and docs/ is accepted by the checks a run makes
before it starts (lth.run.check_command: composition, every key, the data, the output folder), so a
command copied from the docs never ends in an ``error:`` line.

As written, except: ``OUT`` (a prepared dataset) is a stand-in with ImageNet's metadata; a GPU is assumed present
(a command that asks for one is still checked in full on a CPU-only machine); the output folders are
moved to a temporary one. Shell-completion examples (``<TAB>``) and flags (``--help``, ``-sc``) are
not runs.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tests.conftest import REPO

DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
COMMAND = re.compile(r"(?:python3? -m lth\.run|lth-run)([^`|#\n]*)")


def commands() -> list[tuple[str, list[str]]]:
    found = []
    for doc in DOCS:
        text = doc.read_text().replace("\\\n", " ")  # shell line continuations
        for match in COMMAND.finditer(text):
            raw = match.group(1)
            if "<" in raw or re.search(r"(^|\s)-(?!m(\s|$)|-multirun)", raw):  # <TAB>, <sweep>; --help, -sc ...
                continue
            args = shlex.split(raw)
            if args:
                found.append((f"{doc.relative_to(REPO)}: {' '.join(args)}", args))
    return found


COMMANDS = commands()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A stand-in for ImageNet prepared by ``python -m lth.data.prepare``: its metadata (1,000 classes, 1,281,167
    training and 50,000 test images, as the checks read them from ``lth.json``, the labels and litdata's
    ``index.json``) over empty chunks. The commands are checked, never run, and the checks compare the
    documented sizes (``data.val_size=10000``, batch 1024) with the data's."""
    import json

    import numpy as np

    from lth.data.prepare import FORMAT, META

    out = tmp_path_factory.mktemp("prepared") / "out"
    sizes = {"train": 1_281_167, "test": 50_000}
    for split, n in sizes.items():
        (out / split).mkdir(parents=True)
        (out / split / "chunk-0-0.bin").write_bytes(b"")
        chunk = {"filename": "chunk-0-0.bin", "chunk_bytes": 0, "chunk_size": n}
        (out / split / "index.json").write_text(json.dumps({"chunks": [chunk]}))
        np.save(out / f"{split}-labels.npy", np.arange(n, dtype=np.int64) % 1000)
    (out / META).write_text(json.dumps({"format": FORMAT, "classes": [f"n{i:08d}" for i in range(1000)], "sizes": sizes}))
    return out


def test_the_docs_have_commands_to_check():
    assert len(COMMANDS) >= 30
    assert any("hydra/launcher=slurm" in name for name, _ in COMMANDS)  # continued lines are read whole


@pytest.mark.parametrize("args", [a for _, a in COMMANDS], ids=[n for n, _ in COMMANDS])
def test_a_documented_command_is_accepted(args, prepared, data_dir, tmp_path, monkeypatch):
    import lth.machine
    from lth.run import check_command

    monkeypatch.chdir(REPO)  # where the README's commands run (data.root=../shared/data)
    monkeypatch.setenv("LTH_DATA_DIR", str(data_dir))
    monkeypatch.setattr(lth.machine, "has_cuda", lambda: True)
    flags = [a for a in args if a in ("-m", "--multirun")]
    overrides = [f"data.path={prepared}" if a == "data.path=OUT" else a for a in args if a not in flags]
    check_command([*overrides, f"hydra.run.dir={tmp_path}/run", f"hydra.sweep.dir={tmp_path}/sweep"],
                  multirun=bool(flags))
