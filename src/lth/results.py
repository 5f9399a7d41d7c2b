"""Result rows: one per trained network (sparsity level x branch), results.csv and the printed table."""

from __future__ import annotations

from pathlib import Path

from lth.storage import CorruptFileError, atomic_write_csv, atomic_write_json, read_json

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


def sort_rows(rows: list[dict], order) -> list[dict]:
    """By level, then by ``order(branch)`` (the lottery's branch registry order)."""
    return sorted(rows, key=lambda r: (r["round"], order(r["branch"]), r["branch"]))


def write_results(rows: list[dict], out_dir: Path) -> None:
    """results.csv and results.json of ``rows``, in their order."""
    extra = []
    for row in rows:
        extra += [k for k in row if k not in COLUMNS and k not in extra]
    atomic_write_csv(Path(out_dir) / "results.csv", rows, COLUMNS + extra)
    atomic_write_json(Path(out_dir) / "results.json", rows)


def _fmt(value, spec: str) -> str:
    """``value`` in ``spec``; one that does not fit it (a diverged network's missing entry) right-aligned as text."""
    try:
        return format(value, spec)
    except (TypeError, ValueError):
        width = "".join(c for c in spec.split(".")[0] if c.isdigit())
        return format(str(value), f">{width}" if width else "")


def format_table(rows: list[dict]) -> str:
    """A short fixed-width table of ``rows`` in their order, as printed at the end of an experiment."""
    barrier = any("instability" in r for r in rows)
    width = max([16, *(len(str(r["branch"])) for r in rows)])  # magnitude_init_shuffle: 22
    header = (f"{'round':>5} {'branch':<{width}} {'remaining %':>11} {'es iter':>8} {'test@es':>8} {'final test':>10} "
              f"{'min val loss':>12}" + (f" {'barrier':>8}" if barrier else ""))
    lines = [header, "-" * len(header)]
    for r in rows:
        flag = "  diverged" if r.get("diverged") else ""
        extra = f" {_fmt(r['instability'], '8.4f')}" if barrier and "instability" in r else ""
        lines.append(
            f"{r['round']:>5} {r['branch']:<{width}} {_fmt(r['weights_remaining'], '11.2f')} {_fmt(r.get('es_iteration', '-'), '>8')} "
            f"{_fmt(r.get('test_acc_at_es', '-'), '>8.4f')} {_fmt(r.get('final_test_acc', '-'), '>10.4f')} "
            f"{_fmt(r.get('min_val_loss', '-'), '>12.4f')}"
            f"{extra}{flag}"
        )
    return "\n".join(lines)


ROW_KEYS = {"round": int, "branch": str, "weights_remaining": (int, float), "diverged": bool}


def read_row(path: Path) -> dict:
    """A branch's ``row.json``, checked: a damaged one raises CorruptFileError saying what to do."""
    fix = (f"delete {Path(path).parent} and re-run the same command to retrain that network "
           f"(nothing else is lost)")
    try:
        row = read_json(path)
    except (CorruptFileError, UnicodeDecodeError) as exc:
        raise CorruptFileError(f"{path} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(row, dict):
        raise CorruptFileError(f"{path} holds {type(row).__name__}, not a result row; {fix}")
    for key, kind in ROW_KEYS.items():
        if not isinstance(row.get(key), kind) or (kind is int and isinstance(row.get(key), bool)):
            raise CorruptFileError(f"{path} has no valid {key!r} entry; {fix}")
    return row
