"""Result rows: one per trained network (sparsity level x branch), results.csv and the printed table."""

from __future__ import annotations

from pathlib import Path

from lth.storage import atomic_write_csv, atomic_write_json

# The contract columns first (DESIGN.md section 4), then the rest.
COLUMNS = [
    "round",
    "branch",
    "weights_remaining",
    "es_iteration",
    "test_acc_at_es",
    "final_test_acc",
    "min_val_loss",
    "val_acc_at_es",
    "final_iteration",
    "final_val_loss",
    "train_time_s",
    "diverged",
    "diverged_reason",
]
BRANCH_ORDER = {"ticket": 0, "continued": 1, "reinit": 2, "random_prune": 3}


def sort_rows(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: (r["round"], BRANCH_ORDER.get(r["branch"], 9), r["branch"]))


def write_results(rows: list[dict], out_dir: Path) -> None:
    rows = sort_rows(rows)
    extra = []
    for row in rows:
        extra += [k for k in row if k not in COLUMNS and k not in extra]
    atomic_write_csv(Path(out_dir) / "results.csv", rows, COLUMNS + extra)
    atomic_write_json(Path(out_dir) / "results.json", rows)


def _fmt(value, spec: str) -> str:
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def format_table(rows: list[dict]) -> str:
    """A short fixed-width table of the rounds, as printed at the end of an experiment."""
    header = f"{'round':>5} {'branch':<13} {'remaining %':>11} {'es iter':>8} {'test@es':>8} {'final test':>10} {'min val loss':>12}"
    lines = [header, "-" * len(header)]
    for r in sort_rows(rows):
        flag = "  diverged" if r.get("diverged") else ""
        lines.append(
            f"{r['round']:>5} {r['branch']:<13} {_fmt(r['weights_remaining'], '11.2f')} {_fmt(r['es_iteration'], '>8')} "
            f"{_fmt(r['test_acc_at_es'], '8.4f')} {_fmt(r['final_test_acc'], '10.4f')} {_fmt(r['min_val_loss'], '12.4f')}{flag}"
        )
    return "\n".join(lines)
