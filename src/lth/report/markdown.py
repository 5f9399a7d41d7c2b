"""The markdown of ``report.md``: the table of each setting, the rewind-sweep table, the unfinished
experiments and the failed sweep jobs."""

from __future__ import annotations

from typing import Any

from lth.data.facts import DATASETS
from lth.report.records import ExperimentRecord, planned_cells
from lth.report.rewind import REWIND_KEY, RewindSweep
from lth.report.settings import Setting


def _fmt(v: Any, spec: str) -> str:
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return "–" if v is None else str(v)


def _cell(row: dict, m: str, scale: float, spec: str, trials: str = "trials") -> str:
    """``mean`` or, over several trials (the row's ``trials`` key), ``mean ± std [min, max]``."""
    if m not in row:
        return "–"
    mean = _fmt(row[m] * scale, spec)
    if row.get(trials, 1) > 1:
        std = f" ± {_fmt(row[m + '_std'] * scale, spec)}" if row.get(m + "_std") is not None else ""
        return f"{mean}{std} [{_fmt(row[m + '_min'] * scale, spec)}, {_fmt(row[m + '_max'] * scale, spec)}]"
    return mean


def markdown_table(rows: list[dict]) -> str:
    """One line per (level, branch); with the instability branch, its error barrier in a last column."""
    barrier = any("instability" in r for r in rows)
    lines = ["| round | branch | % weights remaining | trials | test acc at early stop (%) | early-stop iteration | final test acc (%) | min val loss |"
             + (" error barrier (pp) |" if barrier else ""),
             "|---:|:---|---:|---:|---:|---:|---:|---:|" + ("---:|" if barrier else "")]
    for r in rows:
        trials = f"{r['trials']}" + (f" (+{r['diverged']} diverged)" if r["diverged"] else "")
        lines.append(f"| {r['round']} | {r['branch']} | {r['weights_remaining']:.2f} | {trials} | {_cell(r, 'test_acc_at_es', 100, '.2f')} | "
                     f"{_cell(r, 'es_iteration', 1, '.0f')} | {_cell(r, 'final_test_acc', 100, '.2f')} | {_cell(r, 'min_val_loss', 1, '.4f')} |"
                     + (f" {_cell(r, 'instability', 100, '.2f')} |" if barrier else ""))
    return "\n".join(lines)


def rewind_table(sweep: RewindSweep) -> str:
    """One line per (level, K): the ticket's test accuracy at early stop (%) and the instability
    branch's error barrier (percentage points), mean [min, max] over seeds."""
    lines = ["| % weights remaining | round | rewind K | trials | ticket test acc at early stop (%) | instability: error barrier (pp) |",
             "|---:|---:|---:|---:|---:|---:|"]
    for p in sweep.points:
        lines.append(f"| {p['weights_remaining']:.2f} | {p['round']} | {p[REWIND_KEY]} | {p.get('test_acc_at_es_trials', 0)} | "
                     f"{_cell(p, 'test_acc_at_es', 100, '.2f', 'test_acc_at_es_trials')} | "
                     f"{_cell(p, 'instability', 100, '.2f', 'instability_trials')} |")
    return "\n".join(lines)


def _title(setting: Setting) -> str:
    c = setting.config
    target = str(c.get("data._target_", ""))  # the dataset's name as the experiment's own figures give it
    data = DATASETS[target].name if target in DATASETS else target.rsplit(".", 1)[-1].replace("DataModule", "")
    parts = [str(c.get("model.name", "")), f"on {data}" if data else "", f"{c.get('prune.scheme', '')} pruning"]
    return " ".join(p for p in parts if p).strip()


def _ranges(levels: list[int]) -> str:
    """``[1, 2, 3, 7]`` -> ``1-3, 7``."""
    runs: list[list[int]] = []
    for lvl in sorted(set(levels)):
        if runs and lvl == runs[-1][1] + 1:
            runs[-1][1] = lvl
        else:
            runs.append([lvl, lvl])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def unfinished_table(experiments: list[ExperimentRecord]) -> str:
    lines = ["| experiment folder | seed | networks trained | still to train |", "|:---|---:|---:|:---|"]
    for e in experiments:
        by_branch: dict[str, list[int]] = {}
        for lvl, b in e.missing:
            by_branch.setdefault(b, []).append(lvl)
        todo = "; ".join(f"{b} round(s) {_ranges(lv)}" for b, lv in by_branch.items()) or "marked incomplete"
        todo = f"running now (pid {e.running}): {todo}" if e.running else todo
        planned = planned_cells(e.config)
        total = f" of {len(planned)}" if planned else ""
        lines.append(f"| `{e.path}` | {e.seed} | {len(e.rows)}{total} | {todo} |")
    return "\n".join(lines)


def failed_jobs_table(failed_jobs: list[dict]) -> list[str]:
    lines = ["| job | overrides | error |", "|---:|:---|:---|"]
    return lines + [f"| {j.get('num')} | `{j.get('overrides', '')}` | {str(j.get('error', '')).replace('|', '/')} "
                    f"(folder `{j.get('dir', '')}`, its run.log) |" for j in failed_jobs]
