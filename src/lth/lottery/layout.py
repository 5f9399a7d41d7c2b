"""Every path of an experiment folder, and the checked reading of its small files.

::

    <experiment>/
      experiment.json            identity (format, experiment hash), written when the folder is claimed
      config.yaml                the composed configuration of the latest run
      theta0.pt  theta_k.pt      θ0 and θK: every parameter and buffer
      round_NN/mask.pt           the ticket's mask at level NN (name -> bool)
      round_NN/<branch>/         curve.csv, row.json (the completion marker, written last),
                                 final.pt (ticket and continued), mask.pt (branches with their own
                                 mask), path.csv (instability), checkpoints/ while training
      results.csv results.json lottery_ticket.png learning_curves.png [instability.png]

The dense round shared by experiments that differ only in pruning or rewinding lives beside them,
in ``<parent>/.dense/<dense hash>/`` (see ``lth.lottery.dense``), and is copied into round_00/ticket.

Nothing is read back blindly: :data:`KINDS` lists every kind of file lth reads back, with where it
lies, the check it must pass (names, shapes and dtypes against the model; columns against the
schema) and how to recover from a damaged one. :meth:`Layout.read` is the one way to read them;
:meth:`Layout.verify` checks every file of an existing folder before a run uses or changes anything.
A damaged file is a :class:`~lth.storage.CorruptFileError` naming it and saying what to do.
"""

from __future__ import annotations

import contextlib
import csv
import fcntl
import fnmatch
import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lth.storage import CorruptFileError, is_writer

log = logging.getLogger("lth")

# experiment.json "format": 1 (no field) was lth 0.1's layout; 2 kept prune.rounds in the experiment's
# identity and the analysis.* settings out of it; 3 keys every network by what determines it.
FORMAT = 3


class Layout:
    def __init__(self, root: Path | str, expected: "Expected | None" = None, store: Path | None = None):
        self.root = Path(root)
        self.expected = expected  # the model's shapes, for checking tensor files (set once the model is known)
        self.store = store  # this experiment's shared dense round, <parent>/.dense/<hash> (set by the lottery)

    # experiment-wide files
    @property
    def experiment_json(self) -> Path:
        return self.root / "experiment.json"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def theta0(self) -> Path:
        return self.root / "theta0.pt"

    @property
    def theta_k(self) -> Path:
        return self.root / "theta_k.pt"

    @property
    def results_csv(self) -> Path:
        return self.root / "results.csv"

    @property
    def results_json(self) -> Path:
        return self.root / "results.json"

    def figure(self, name: str) -> Path:
        return self.root / f"{name}.png"

    def dense_store(self, digest: str) -> Path:
        return self.root.parent / ".dense" / digest

    # per level and branch
    def level(self, level: int) -> Path:
        return self.root / f"round_{level:02d}"

    def ticket_mask(self, level: int) -> Path:
        return self.level(level) / "mask.pt"

    def branch(self, level: int, branch: str) -> Path:
        return self.level(level) / branch

    def row(self, level: int, branch: str) -> Path:
        return self.branch(level, branch) / "row.json"

    def curve(self, level: int, branch: str) -> Path:
        return self.branch(level, branch) / "curve.csv"

    def final(self, level: int, branch: str) -> Path:
        return self.branch(level, branch) / "final.pt"

    def branch_mask(self, level: int, branch: str) -> Path:
        return self.branch(level, branch) / "mask.pt"

    def checkpoints(self, level: int, branch: str) -> Path:
        return self.branch(level, branch) / "checkpoints"

    def finished_rows(self) -> list[Path]:
        return sorted(self.root.glob("round_*/*/row.json"))

    # checked reading
    def kind_of(self, path: Path) -> FileKind:
        path = Path(path)
        parts = path.parts
        if ".dense" in parts[:-1]:  # <parent>/.dense/<hash>/...
            i = len(parts) - 1 - parts[::-1].index(".dense")
            rel, store = parts[i + 2:], True
        else:
            rel, store = path.relative_to(self.root).parts, False
        for kind in KINDS:
            pattern = kind.where.split("/")
            if kind.store == store and len(pattern) == len(rel) and all(map(fnmatch.fnmatchcase, rel, pattern)):
                return kind
        raise ValueError(f"{path} is no file lth reads back (lth.lottery.layout.KINDS)")

    def read(self, path: Path, lazy: bool = False) -> Any:
        """``path`` read and checked against what its kind must hold (``lazy``: tensors memory-mapped,
        for checking only). A damaged file raises CorruptFileError naming it and the way to recover."""
        kind = self.kind_of(path)
        try:
            return kind.read(Path(path), self, lazy=lazy)
        except Damaged as exc:
            fix = kind.fix.format(folder=Path(path).parent)
            raise CorruptFileError(f"{path} is damaged ({exc}); {fix}") from None
        except IsADirectoryError:
            raise CorruptFileError(f"{path} is a folder, not the {kind.name} lth wrote; move it away") from None

    def files(self, reader: str = "run") -> Iterator[tuple[FileKind, Path]]:
        """Every existing file of a kind ``reader`` reads back (the shared dense round's included)."""
        for kind in KINDS:
            base = self.store if kind.store else self.root
            if kind.reader == reader and base is not None and base.is_dir():
                # hidden entries are lth's own temporaries: half-written files, a stack's checkpoints
                # (round_NN/.stack-*/, lth.training.stacked_round: the stacked model's own state)
                yield from ((kind, p) for p in sorted(base.glob(kind.where))
                            if not any(part.startswith(".") for part in p.relative_to(base).parts))

    def verify(self, reader: str = "run") -> None:
        """Check every file ``reader`` reads back, before anything is used or changed: the first damaged
        one raises CorruptFileError; a damaged checkpoint (``redo``) is moved aside with a warning."""
        for kind, path in self.files(reader):
            if not kind.redo:
                self.read(path, lazy=True)
                continue
            if not is_writer():  # DDP: rank 0 sets a damaged checkpoint aside
                continue
            try:
                kind.read(path, self, lazy=True)
            except Damaged as exc:
                bad = path.with_suffix(".corrupt")
                path.replace(bad)
                log.warning("checkpoint %s is corrupt (%s); moved to %s, redoing that round from its start", path, exc,
                            bad.name)


def check_experiment_json(layout: Layout, digest: str) -> bool:
    """True when the folder already holds this experiment; False when it is new.

    Raises CorruptFileError for a damaged marker and ValueError (with the message to show) for a
    folder of another configuration or of an older lth.
    """
    path = layout.experiment_json
    if not path.exists():
        if any(layout.root.glob("round_*")):
            raise ValueError(f"{layout.root} holds rounds but no experiment.json; move it away or choose another "
                             f"folder with hydra.run.dir=PATH")
        return False
    marker = layout.read(path)
    if marker.get("format", 1) != FORMAT:
        raise ValueError(f"{layout.root} predates lth's folder format {FORMAT} (it has format {marker.get('format', 1)}: "
                         f"experiments keyed by what determines each network): it cannot be continued. Re-run the command without "
                         f"hydra.run.dir to start it in a new folder, or keep using the lth that wrote it for that one")
    if marker["config_hash"] != digest:
        raise ValueError(f"{layout.root} holds an experiment with another configuration (hash "
                         f"{marker['config_hash']}, this one is {digest}). Choose another folder with "
                         f"hydra.run.dir=PATH, or move that one away.")
    return True


# ------------------------------------------------------------------ checked reading
class Damaged(ValueError):
    """What is wrong with a file (raised by a kind's check; :meth:`Layout.read` names the file)."""


@dataclass(frozen=True)
class Expected:
    """What this experiment's tensor files must hold: the model's state (name -> shape, dtype) and
    its prunable tensors (the names and shapes of a mask)."""

    state: dict
    prunable: dict

    @classmethod
    def of(cls, model) -> "Expected":
        from lth.pruning.prunable import prunable_tensors

        state = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
        return cls(state, {t.name: state[t.name][0] for t in prunable_tensors(model)})


def _load_pt(path: Path, lazy: bool) -> Any:
    import torch

    try:  # lazy (mmap): only the names, shapes and dtypes are read, not the values
        return torch.load(path, map_location="cpu", weights_only=True, mmap=lazy)
    except FileNotFoundError:
        raise
    except Exception as exc:  # truncated, garbage, pickled code, not a tensor file
        raise Damaged(f"not a tensor file lth wrote ({exc.__class__.__name__}: {str(exc)[:120]})") from None


def _tensors(obj: Any, expected: dict, what: str, dtype=None) -> dict:
    """``obj`` must be {name: tensor} with exactly ``expected``'s names, shapes and dtypes (any floating
    dtype for a floating tensor: ``trainer.precision=bf16-true`` trains and saves in bfloat16)."""
    import torch

    if not isinstance(obj, dict):
        raise Damaged(f"holds {type(obj).__name__}, not {what}")
    missing, extra = sorted(set(expected) - set(obj)), sorted(set(obj) - set(expected), key=str)
    if missing or extra:
        raise Damaged(f"not {what}: " + "; ".join(
            s for s in (f"missing {', '.join(missing[:3])}" if missing else "",
                        f"unexpected {', '.join(map(str, extra[:3]))}" if extra else "") if s))
    for name, want in expected.items():
        t = obj[name]
        shape, kind = (want, dtype) if dtype is not None else want
        if not isinstance(t, torch.Tensor):
            raise Damaged(f"{name} is a {type(t).__name__}, not a tensor")
        same_kind = t.dtype == kind or (t.dtype.is_floating_point and kind.is_floating_point)  # *-true precisions
        if tuple(t.shape) != tuple(shape) or not same_kind:
            raise Damaged(f"not {what}: {name} is {tuple(t.shape)} {t.dtype}, expected {tuple(shape)} {kind}")
    return obj


def _expected(layout: "Layout") -> Expected:
    if layout.expected is None:
        raise RuntimeError("Layout.expected is not set: the model's shapes are needed to check tensor files")
    return layout.expected


def read_state(path: Path, layout: "Layout", lazy: bool = False) -> dict:
    return _tensors(_load_pt(path, lazy), _expected(layout).state, "every parameter and buffer of this model")


def read_mask(path: Path, layout: "Layout", lazy: bool = False) -> dict:
    import torch

    return _tensors(_load_pt(path, lazy), _expected(layout).prunable, "a mask of this model's prunable tensors",
                    dtype=torch.bool)


def read_checkpoint(path: Path, layout: "Layout", lazy: bool = False) -> dict:
    ckpt = _load_pt(path, lazy)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("global_step"), int) \
            or not isinstance(ckpt.get("state_dict"), dict):
        raise Damaged("not a Lightning checkpoint (no global_step or state_dict)")
    model = {k[len("model."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    _tensors(model, _expected(layout).state, "a checkpoint of this model")
    return ckpt


def read_row_of(path: Path, layout: "Layout", lazy: bool = False) -> dict:
    from lth.results import ROW_KEYS

    row = _json(path)
    if not isinstance(row, dict):
        raise Damaged(f"holds {type(row).__name__}, not a result row")
    for key, kind in ROW_KEYS.items():
        if not isinstance(row.get(key), kind) or (kind is int and isinstance(row.get(key), bool)):
            raise Damaged(f"no valid {key!r} entry")
    level, branch = _where(path, layout)
    if (row["round"], row["branch"]) != (level, re.sub(r"-[0-9a-f]{8}$", "", branch)):  # snip-<settings digest>
        raise Damaged(f"the row of round {row['round']} {row['branch']}, in the folder of round {level} {branch}")
    return row


def _where(path: Path, layout: "Layout") -> tuple[int, str]:
    """The level and branch of a file in ``round_NN/<branch>/`` (the shared dense round: 0, ticket)."""
    folder = Path(path).parent
    if folder.parent.name == ".dense":
        return 0, "ticket"
    return int(folder.parent.name[len("round_"):]), folder.name


def _json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise Damaged(f"not valid JSON ({exc.__class__.__name__}: {str(exc)[:80]})") from None


def _csv(path: Path, columns: tuple[str, ...], numeric: tuple[str, ...]) -> list[dict]:
    """A CSV lth wrote: a header with every column of ``columns``, at least one row, ``numeric`` columns numbers."""
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            rows = list(reader)
            header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise Damaged(f"not a CSV file ({exc.__class__.__name__})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise Damaged(f"no column {', '.join(missing[:3])}")
    if not rows:
        raise Damaged("no rows")
    for i, row in enumerate(rows, 2):
        if None in row or any(v is None for v in row.values()):
            raise Damaged(f"line {i} has {'more' if None in row else 'fewer'} fields than the header")
        for c in numeric:
            try:
                float(row[c])
            except ValueError:
                raise Damaged(f"line {i}: {c}={row[c]!r} is not a number") from None
    return rows


CURVE_COLUMNS = ("iteration", "train_loss", "val_loss", "val_acc", "test_loss", "test_acc")


def read_curve(path: Path, layout: "Layout" = None, lazy: bool = False) -> list[dict]:
    rows = _csv(path, CURVE_COLUMNS, CURVE_COLUMNS)
    return [{k: float(v) for k, v in row.items()} for row in rows]


def read_path(path: Path, layout: "Layout" = None, lazy: bool = False) -> list[dict]:
    columns = ("alpha", "error", "loss")
    return [{k: float(v) for k, v in row.items()} for row in _csv(path, columns, columns)]


def read_results_csv(path: Path, layout: "Layout" = None, lazy: bool = False) -> list[dict]:
    from lth.results import COLUMNS

    rows = _csv(path, tuple(COLUMNS), ("round", "weights_remaining"))
    for i, row in enumerate(rows, 2):
        if not row["round"].isdigit() or not row["branch"] or row["diverged"] not in ("True", "False"):
            raise Damaged(f"line {i} is not a result row (round={row['round']!r}, branch={row['branch']!r}, "
                          f"diverged={row['diverged']!r})")
        for c in (c for c in row if c in MEASURES or c in COLUMNS and c not in TEXT or c.startswith("remaining:")):
            try:
                float(row[c] or 0)  # empty: not measured (a diverged network, a row without the column)
            except ValueError:
                raise Damaged(f"line {i}: {c}={row[c]!r} is not a number") from None
    return rows


# results.csv's columns that hold a number where they hold anything: lth.results.COLUMNS but TEXT, MEASURES
# (written by some branches only) and remaining:<tensor>
TEXT = ("round", "branch", "diverged", "diverged_reason")  # (round is checked as a row's index above)
MEASURES = ("instability", "stacked")


def read_results_json(path: Path, layout: "Layout" = None, lazy: bool = False) -> list[dict]:
    from lth.results import ROW_KEYS

    rows = _json(path)
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise Damaged("not a list of result rows")
    for r in rows:
        if not all(isinstance(r.get(k), t) for k, t in ROW_KEYS.items()):
            raise Damaged(f"a row without valid {', '.join(ROW_KEYS)} entries")
    return rows


def read_marker(path: Path, layout: "Layout" = None, lazy: bool = False) -> dict:
    marker = _json(path)
    if not isinstance(marker, dict) or not isinstance(marker.get("config_hash"), str):
        raise Damaged("not the JSON object lth writes (no config_hash)")
    return marker


RECOMPUTE = "delete it and re-run the same command to recompute it"
RETRAIN = "delete the folder {folder} and re-run the same command to retrain that network (nothing else is lost)"
REDENSE = ("delete the folder {folder} (the dense round shared by experiments that differ only in pruning) and "
           "re-run the same command to retrain it")


@dataclass(frozen=True)
class FileKind:
    """One kind of file an experiment folder holds: where it lies, how it is read and checked, how to
    recover from a damaged one. ``where``: relative to the experiment folder (``store``: relative to
    its shared dense round, ``<parent>/.dense/<hash>/``). ``reader``: the program that reads it back
    (``run``: ``lth.run`` checks it before using anything; ``report``: ``lth.report`` skips the
    experiment). ``redo``: a damaged file is moved aside (``.corrupt``) with a warning and its work redone."""

    name: str
    where: str
    read: Callable[..., Any]
    fix: str = RECOMPUTE
    store: bool = False
    reader: str = "run"
    redo: bool = False


# Every file lth reads back. A new kind of file: one line here (the tests corrupt every kind in turn).
KINDS: tuple[FileKind, ...] = (
    FileKind("experiment marker", "experiment.json", read_marker,
             "if the folder's config.yaml matches this command, delete it and re-run, else choose another folder"),
    FileKind("θ0", "theta0.pt", read_state, f"{RECOMPUTE} (from the seed)"),
    FileKind("θK", "theta_k.pt", read_state, f"{RECOMPUTE} (from the dense round)"),
    FileKind("ticket mask", "round_*/mask.pt", read_mask),
    FileKind("branch mask", "round_*/*/mask.pt", read_mask),
    FileKind("final weights", "round_*/*/final.pt", read_state, RETRAIN),
    FileKind("result row", "round_*/*/row.json", read_row_of, RETRAIN),
    FileKind("learning curve", "round_*/*/curve.csv", read_curve, RETRAIN),
    FileKind("interpolation path", "round_*/*/path.csv", read_path, RETRAIN),
    FileKind("Lightning checkpoint", "round_*/*/checkpoints/*.ckpt", read_checkpoint, redo=True),
    FileKind("dense final weights", "final.pt", read_state, REDENSE, store=True),
    FileKind("dense result row", "row.json", read_row_of, REDENSE, store=True),
    FileKind("dense learning curve", "curve.csv", read_curve, REDENSE, store=True),
    FileKind("dense θK", "theta_*.pt", read_state, REDENSE, store=True),
    FileKind("dense checkpoint", "checkpoints/*.ckpt", read_checkpoint, store=True, redo=True),
    FileKind("results table", "results.csv", read_results_csv,
             "re-run the experiment's command to rewrite it from its rounds", reader="report"),
    FileKind("results", "results.json", read_results_json,
             "re-run the experiment's command to rewrite it from its rounds", reader="report"),
)


class ExperimentError(RuntimeError):
    """A problem the user can fix (wrong folder, diverged search, a second writer); reported without a traceback."""


def running_elsewhere(folder: Path, pid: str) -> str:
    return (f"another lth process (pid {pid}) is running this experiment in {folder}; wait for it to finish, or "
            f"stop it (kill {pid}) and re-run this command to continue")


def lock_holder(folder: Path) -> str | None:
    """The pid of the process holding ``folder``'s experiment lock, else None; read only (the lock is tried
    and released at once), for the checks before Hydra writes the job's ``.hydra/`` into the folder."""
    try:
        handle = open(folder / ".lock")
    except OSError:
        return None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return handle.read().strip() or "?"
        fcntl.flock(handle, fcntl.LOCK_UN)
    return None


_HELD: set[int] = set()  # the descriptors of the experiment locks this process holds


def _drop_inherited_locks() -> None:
    """In a forked child (a data loader's worker): its copies of the lock descriptors are pointed at
    /dev/null, so the lock ends with its owner, not with workers that outlive a killed run for a while."""
    if _HELD:
        null = os.open(os.devnull, os.O_RDONLY)
        for fd in _HELD:
            os.dup2(null, fd)
        os.close(null)
        _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


@contextlib.contextmanager
def experiment_lock(folder: Path):
    """One writer per experiment: an exclusive ``flock`` on ``<folder>/.lock``, which holds the owner's
    pid. The kernel drops it when the process ends, however it ends (forked children do not keep it), so a
    killed run never blocks a resume."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            raise ExperimentError(running_elsewhere(folder, handle.read().strip() or "?")) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        _HELD.add(handle.fileno())
        try:
            yield
        finally:
            _HELD.discard(handle.fileno())
            fcntl.flock(handle, fcntl.LOCK_UN)
