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
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from lth.storage import CorruptFileError, read_json

# experiment.json "format": 1 (no field) was lth 0.1's layout; 2 kept prune.rounds in the experiment's
# identity and the analysis.* settings out of it; 3 keys every network by what determines it.
FORMAT = 3


class Layout:
    def __init__(self, root: Path | str):
        self.root = Path(root)

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
    try:
        marker = read_json(path)
    except CorruptFileError:
        marker = None
    if not isinstance(marker, dict) or not isinstance(marker.get("config_hash"), str):
        raise CorruptFileError(f"{path} is damaged (not the JSON object lth writes); if the folder's config.yaml "
                               f"matches this command, delete {path.name} and re-run, else choose another folder")
    if marker.get("format", 1) != FORMAT:
        raise ValueError(f"{layout.root} predates lth's folder format {FORMAT} (it has format {marker.get('format', 1)}: "
                         f"experiments keyed by what determines each network): it cannot be continued. Re-run the command without "
                         f"hydra.run.dir to start it in a new folder, or keep using the lth that wrote it for that one")
    if marker["config_hash"] != digest:
        raise ValueError(f"{layout.root} holds an experiment with another configuration (hash "
                         f"{marker['config_hash']}, this one is {digest}). Choose another folder with "
                         f"hydra.run.dir=PATH, or move that one away.")
    return True


@contextlib.contextmanager
def experiment_lock(folder: Path):
    """One writer per experiment: an exclusive ``flock`` on ``<folder>/.lock``, which holds the owner's
    pid. The kernel drops it when the process ends, however it ends, so a killed run never blocks a resume."""
    from lth.lottery.plan import ExperimentError

    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise ExperimentError(f"another lth process (pid {pid}) is running this experiment in {folder}; wait for "
                                  f"it to finish, or stop it (kill {pid}) and re-run this command to continue") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
