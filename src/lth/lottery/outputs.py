"""What an experiment leaves beside its rounds: results.csv/json, the figures, the printed table."""

from __future__ import annotations

from pathlib import Path

from lth.figures import plot_learning_curves, plot_sparsity_figure
from lth.lottery.registry import order
from lth.results import format_table, sort_rows, write_results


def collect_rows(lot, rows: list[dict], write: bool = False) -> list[dict]:
    """This run's rows plus every other finished row in the folder (a branch trained by an earlier
    run with other controls stays in results.csv), but only one computed under this run's settings: a
    branch keyed by its settings (``snip-<digest>``) counts only in the folder of today's digest."""
    seen = {(r["round"], r["branch"]) for r in rows}
    extra = []
    for path in lot.layout.finished_rows():
        row = lot.layout.read(path)
        if (row["round"], row["branch"]) not in seen and row["round"] <= lot.rounds \
                and path.parent.name == lot.branch_keys.get(row["branch"], path.parent.name):
            seen.add((row["round"], row["branch"]))
            extra.append(row)
    out = sort_rows(rows + extra, order)
    if write:
        write_results(out, lot.dir)
    return out


def write_outputs(lot, rows: list[dict], draw: bool = True) -> list[Path]:
    """results.csv/json and (``draw``) the figures; the paths of the figures written."""
    rows = collect_rows(lot, rows, write=True)
    if not draw:
        return []
    ok = [r for r in rows if not r.get("diverged")]
    series: dict[str, list[dict]] = {}
    for r in ok:
        series.setdefault(r["branch"], []).append(r)
    title = f"{lot.cfg.model.name} on {lot.datamodule.name}: {lot.cfg.prune.scheme} pruning"
    figures = [lot.layout.figure("lottery_ticket"), lot.layout.figure("learning_curves")]
    plot_sparsity_figure(series, figures[0], title)
    curves = {}
    for r in ok:
        path = lot.layout.curve(r["round"], r["branch"])
        if r["branch"] == "ticket" and path.exists():
            curves[f"{r['weights_remaining']:.3g}%"] = lot.layout.read(path)
    plot_learning_curves(curves, figures[1], f"{title}: ticket learning curves", test_curve=bool(lot.cfg.test_curve))
    for branch in lot.branches:  # branches with figures of their own (instability)
        figures += branch.figures(rows) if hasattr(branch, "figures") else []
    return figures


def print_summary(lot, rows: list[dict]) -> None:
    print(f"\nLottery-ticket experiment {lot.name}\n{format_table(sort_rows(rows, order))}\n\nResults in {lot.dir}", flush=True)
