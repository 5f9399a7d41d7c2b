"""Rewind sweeps: settings that differ only in ``rewind_iteration`` (K), e.g. from
``python -m lth.run -m rewind_iteration=0,100,500,2000 instability=true``.

For each sweep and each chosen sparsity level: the ticket's test accuracy at early stop and the
``instability`` branch's error barrier (where trained), mean with min/max, std and 95% CI over seeds,
against K.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from lth.report.settings import STATS, Setting, pick_levels

REWIND_KEY = "rewind_iteration"


@dataclass
class RewindSweep:
    settings: list[Setting]  # one per K, ascending
    label: str = ""  # what sets this sweep apart from the report's other settings ("" when nothing does)
    points: list[dict] = field(default_factory=list)  # one per (level, K), see rewind_points

    @property
    def rewinds(self) -> list[int]:
        return [int(s.config[REWIND_KEY]) for s in self.settings]

    @property
    def has_instability(self) -> bool:
        return any("instability" in p for p in self.points)


def _stats(prefix: str, row: dict | None, out: dict, key: str) -> None:
    """Copy ``key`` with its spread (min, max, std, CI) and the row's trial count from an aggregated row,
    as ``prefix*``."""
    if row and key in row:
        out[prefix] = row[key]
        out.update({f"{prefix}_{k}": row[f"{key}_{k}"] for k in STATS if f"{key}_{k}" in row})
        out[f"{prefix}_trials"] = row["trials"]


def rewind_points(settings: list[Setting], rows: dict[str, list[dict]], levels: list[float] | None) -> list[dict]:
    """At the chosen levels (nearest to ``levels``, % weights remaining; by default a spread), one
    point per (round, K): ``round, weights_remaining, rewind_iteration``, the ticket's
    ``test_acc_at_es`` and the instability branch's ``instability`` (each with ``_min``, ``_max``,
    ``_trials``). ``rows``: each setting's aggregated rows by ``Setting.key``."""
    remaining: dict[int, list[float]] = {}
    for s in settings:
        for r in rows[s.key]:
            if r["branch"] == "ticket" and "test_acc_at_es" in r:
                remaining.setdefault(r["round"], []).append(r["weights_remaining"])
    level_of = {rnd: sum(v) / len(v) for rnd, v in remaining.items()}
    chosen = set(pick_levels(list(level_of.values()), levels))
    points = []
    for rnd in sorted(level_of):
        if level_of[rnd] not in chosen:
            continue
        for s in settings:
            cells = {r["branch"]: r for r in rows[s.key] if r["round"] == rnd}
            point = {"round": rnd, "weights_remaining": level_of[rnd], REWIND_KEY: int(s.config[REWIND_KEY])}
            _stats("test_acc_at_es", cells.get("ticket"), point, "test_acc_at_es")
            _stats("instability", cells.get("instability"), point, "instability")
            points.append(point)
    return points


def rewind_sweeps(settings: list[Setting], rows: dict[str, list[dict]], levels: list[float] | None = None
                  ) -> list[RewindSweep]:
    """The groups of at least two settings that differ only in ``rewind_iteration``, with their points."""
    groups: dict[str, list[Setting]] = {}
    for s in settings:
        if REWIND_KEY not in s.config:
            continue
        rest = {k: v for k, v in s.config.items() if k != REWIND_KEY}
        groups.setdefault(json.dumps(rest, sort_keys=True, default=str), []).append(s)
    sweeps = []
    for group in groups.values():
        if len({s.config[REWIND_KEY] for s in group}) < 2:
            continue
        group.sort(key=lambda s: int(s.config[REWIND_KEY]))
        label = ", ".join(part for part in group[0].label.split(", ") if not part.startswith(f"{REWIND_KEY}="))
        sweeps.append(RewindSweep(group, label, rewind_points(group, rows, levels)))
    return sweeps
