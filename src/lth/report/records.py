"""Finding experiments on disk and reading them: ``results.csv``, ``config.yaml``, finished or not.

Every folder with a ``results.csv`` or ``experiment.json`` under the given paths (searched
recursively, hidden folders such as ``.dense`` excluded) is one experiment. It is *finished* when
every network it plans (levels 0..prune.rounds of each of its branches) is in its ``results.csv``.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lth")


@dataclass
class ExperimentRecord:
    path: Path
    config: dict
    rows: list[dict]
    missing: list[tuple[int, str]] = field(default_factory=list)  # planned (level, branch) not trained yet
    marked_incomplete: bool = False  # experiment.json says so
    overrides: list[str] | None = None  # the command line's (Hydra's .hydra/overrides.yaml); None: not run by Hydra
    running: str | None = None  # the pid of the lth process writing it now (its experiment lock), else None

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def finished(self) -> bool:
        return not self.missing and not self.marked_incomplete


def _number(value: str) -> Any:
    if value in ("True", "False"):
        return value == "True"
    try:
        f = float(value)
    except (TypeError, ValueError):
        return value
    return int(f) if re.fullmatch(r"-?\d+", value or "") else f


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _load_config(exp_dir: Path) -> dict:
    path = exp_dir / "config.yaml"
    if not path.exists():
        return {}
    from omegaconf import OmegaConf

    try:
        return OmegaConf.to_container(OmegaConf.load(path), resolve=False) or {}
    except Exception as exc:  # a damaged config still lets the results be reported
        log.warning("could not read %s (%s)", path, exc)
        return {}


def _load_overrides(exp_dir: Path) -> list[str] | None:
    from omegaconf import OmegaConf

    try:
        overrides = OmegaConf.to_container(OmegaConf.load(exp_dir / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - not run by Hydra (or its record is damaged): labelled by its settings
        return None
    return [str(o) for o in overrides] if isinstance(overrides, list) else None


def planned_cells(config: dict) -> set[tuple[int, str]] | None:
    """Every (level, branch) the experiment of ``config`` trains: levels 0..prune.rounds of each of
    its branches (``lth.lottery.branches``) from the branch's first level. None: not known."""
    try:
        rounds = int(config["prune"]["rounds"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        from lth.lottery.registry import REGISTRY, selected

        firsts = {name: int(getattr(REGISTRY[name], "first_level", 1)) for name in selected(config)}
    except ImportError:  # the branches of the experiment module before lth.lottery
        names = ["ticket", *(["continued"] if config.get("strategy") == "continue" else []),
                 *[str(c) for c in config.get("controls", []) or []]]
        firsts = {n: 0 if n == "ticket" else 1 for n in names}
    return {(level, name) for name, first in firsts.items() for level in range(first, rounds + 1)}


def _missing(config: dict, rows: list[dict]) -> list[tuple[int, str]]:
    """The planned (level, branch) pairs not in ``rows``; an experiment that stopped because its
    search diverged (nothing left to prune from) is complete up to that level."""
    planned = planned_cells(config)
    if planned is None:
        return []
    done = {(int(r["round"]), str(r["branch"])) for r in rows}
    search = "continued" if config.get("strategy") == "continue" else "ticket"  # whose weights are pruned next
    stops = [int(r["round"]) for r in rows if r.get("diverged") in (True, "True")
             and r.get("branch") == (search if int(r["round"]) > 0 else "ticket")]
    if stops:
        planned = {(lvl, b) for lvl, b in planned if lvl <= min(stops)}
    return sorted(planned - done)


def _marked_incomplete(exp_dir: Path) -> bool:
    try:
        marker = json.loads((exp_dir / "experiment.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(marker, dict) and marker.get("complete") is False


def _intact(exp_dir: Path) -> bool:
    """Whether the files the report reads (results.csv/json, the ticket's curves) pass their checks
    (``lth.lottery.layout.KINDS``); a damaged experiment is skipped with one warning line."""
    from lth.lottery.layout import Layout
    from lth.storage import CorruptFileError

    layout = Layout(exp_dir)
    try:
        for _, path in layout.files("report"):
            layout.read(path)
        for path in sorted(exp_dir.glob("round_*/ticket/curve.csv")):
            layout.read(path)
    except CorruptFileError as exc:
        log.warning("warning: experiment %s skipped: %s", exp_dir, exc)
        return False
    return True


def find_experiments(paths: list[Path | str]) -> list[ExperimentRecord]:
    """Every experiment folder under ``paths`` (one with ``results.csv`` or ``experiment.json``),
    finished or not; folders under hidden ones (``.dense``, ``.hydra``, ``.jobs``) are not experiments,
    and a damaged one is skipped with a warning."""
    from lth.lottery.layout import lock_holder

    found: dict[Path, ExperimentRecord] = {}
    damaged: set[Path] = set()
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder (give experiment or sweep folders)")
        markers = [*p.rglob("results.csv"), *p.rglob("experiment.json")]
        for marker in sorted(markers):
            exp_dir = marker.parent.resolve()
            hidden = any(part.startswith(".") for part in marker.relative_to(p).parts[:-1])
            if exp_dir in found or exp_dir in damaged or hidden:
                continue
            if not _intact(exp_dir):
                damaged.add(exp_dir)
                continue
            rows = read_csv(exp_dir / "results.csv") if (exp_dir / "results.csv").exists() else []
            config = _load_config(exp_dir)
            found[exp_dir] = ExperimentRecord(exp_dir, config, rows, _missing(config, rows), _marked_incomplete(exp_dir),
                                              _load_overrides(exp_dir), lock_holder(exp_dir))
    return list(found.values())
