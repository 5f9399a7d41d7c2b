"""Reports over experiments and sweeps: ``python -m lth.report PATH... [--out DIR] [--levels ...]``.

Every ``results.csv`` under the given paths (searched recursively) is one experiment; its
``config.yaml`` beside it says what was run. Experiments whose configurations differ only in
``seed`` are *trials* of the same setting and are aggregated: mean with min/max over seeds.
Written to ``--out`` (default: the single PATH given, else ``outputs/reports/<hash>``)::

    report.md                    a markdown table per setting, links to the figures
    summary.csv                  the aggregated rows (setting, branch, round, mean/min/max)
    figures/<setting>_lottery_ticket.png   test acc at early stop + early-stop iteration
                                           vs % weights remaining (log axis), ticket vs controls
    figures/<setting>_learning_curves.png  test accuracy vs iteration at chosen levels
    figures/compare_lottery_ticket.png     the ticket of every setting (when more than one)

The Hydra callback :class:`SweepCallback` (registered in ``conf/config.yaml``) runs this over
the sweep folder when a ``-m`` sweep ends, and pins the sweep folder name for the jobs.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("lth")

METRICS = ("test_acc_at_es", "es_iteration", "final_test_acc", "min_val_loss", "val_acc_at_es")


# ---------------------------------------------------------------------- loading
@dataclass
class ExperimentRecord:
    path: Path
    config: dict
    rows: list[dict]

    @property
    def seed(self):
        return self.config.get("seed")


@dataclass
class Setting:
    """Experiments that differ only in seed."""

    key: str
    config: dict
    experiments: list[ExperimentRecord] = field(default_factory=list)
    label: str = ""
    slug: str = ""


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


def find_experiments(paths: list[Path | str]) -> list[ExperimentRecord]:
    found: dict[Path, ExperimentRecord] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        candidates = [p / "results.csv"] if (p / "results.csv").exists() else sorted(p.rglob("results.csv"))
        for csv_path in candidates:
            exp_dir = csv_path.parent.resolve()
            if exp_dir in found:
                continue
            rows = read_csv(csv_path)
            if rows:
                found[exp_dir] = ExperimentRecord(exp_dir, _load_config(exp_dir), rows)
    return list(found.values())


def _flatten(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def setting_config(config: dict) -> dict:
    """The saved configuration as the setting it belongs to: ``lth.identity``'s definition of the
    experiment (the same one that names its folder and its W&B group), without the seed."""
    from lth.identity import identity_config

    return {k: v for k, v in _flatten(identity_config(config)).items() if k != "seed"}


def group_settings(experiments: list[ExperimentRecord]) -> list[Setting]:
    groups: dict[str, Setting] = {}
    for exp in experiments:
        cfg = setting_config(exp.config) if exp.config else {"path": str(exp.path)}
        key = json.dumps(cfg, sort_keys=True, default=str)
        groups.setdefault(key, Setting(key, cfg)).experiments.append(exp)
    settings = list(groups.values())
    # Label each setting by what distinguishes it from the others.
    varying = sorted({k for s in settings for k in s.config if len({json.dumps(t.config.get(k), default=str) for t in settings}) > 1})
    for i, s in enumerate(settings):
        s.experiments.sort(key=lambda e: (str(e.seed), str(e.path)))
        if varying:
            s.label = ", ".join(f"{k}={_short(s.config.get(k))}" for k in varying if k not in ("data._target_", "model.arch._target_"))
        if not s.label:
            c = s.config
            s.label = " ".join(str(x) for x in (c.get("model.name"), c.get("prune.scheme")) if x) or s.experiments[0].path.name
        s.slug = f"s{i + 1}_" + re.sub(r"[^A-Za-z0-9.=+-]+", "_", s.label)[:60].strip("_")
    return settings


def _short(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)


# ---------------------------------------------------------------------- aggregation
def aggregate(setting: Setting) -> list[dict]:
    """One row per (branch, round): mean/min/max of every metric over the setting's trials."""
    cells: dict[tuple, list[dict]] = {}
    for exp in setting.experiments:
        for r in exp.rows:
            cells.setdefault((r["branch"], int(r["round"])), []).append(r)
    out = []
    for (branch, rnd), rows in cells.items():
        ok = [r for r in rows if not r.get("diverged")]
        agg = {"setting": setting.label, "branch": branch, "round": rnd, "trials": len(ok), "diverged": len(rows) - len(ok),
               "seeds": " ".join(str(exp.seed) for exp in setting.experiments
                                 if any(int(r["round"]) == rnd and r["branch"] == branch for r in exp.rows)),
               "weights_remaining": sum(float(r["weights_remaining"]) for r in rows) / len(rows)}
        for m in METRICS:
            vals = [float(r[m]) for r in ok if isinstance(r.get(m), (int, float)) and not math.isnan(float(r[m]))]
            if vals:
                agg[m] = sum(vals) / len(vals)
                agg[f"{m}_min"] = min(vals)
                agg[f"{m}_max"] = max(vals)
        out.append(agg)
    from lth.lottery.branches import order

    return sorted(out, key=lambda r: (r["round"], order(r["branch"]), r["branch"]))


def mean_curve(paths: list[Path], key: str = "test_acc") -> list[dict]:
    """Mean with min/max of ``key`` over the trials' curves, at the iterations they share."""
    curves = [read_csv(p) for p in paths if p.exists()]
    curves = [c for c in curves if c and key in c[0]]
    if not curves:
        return []
    by_iter = [{int(pt["iteration"]): float(pt[key]) for pt in c} for c in curves]
    common = sorted(set.intersection(*(set(d) for d in by_iter)))
    out = []
    for it in common:
        vals = [d[it] for d in by_iter]
        out.append({"iteration": it, key: sum(vals) / len(vals), f"{key}_min": min(vals), f"{key}_max": max(vals)})
    return out


def pick_levels(available: list[float], wanted: list[float] | None, default_count: int = 5) -> list[float]:
    """The available levels nearest to ``wanted`` (% remaining); by default a spread of at most 5."""
    levels = sorted(set(available), reverse=True)
    if not levels:
        return []
    if wanted:
        picked = {min(levels, key=lambda l: abs(math.log(max(l, 1e-9)) - math.log(max(w, 1e-9)))) for w in wanted}
        return sorted(picked, reverse=True)
    if len(levels) <= default_count:
        return levels
    step = (len(levels) - 1) / (default_count - 1)
    return sorted({levels[round(i * step)] for i in range(default_count)}, reverse=True)


# ---------------------------------------------------------------------- writing
def _fmt(v: Any, spec: str) -> str:
    try:
        return format(v, spec)
    except (TypeError, ValueError):
        return "–" if v is None else str(v)


def _cell(row: dict, m: str, scale: float, spec: str) -> str:
    if m not in row:
        return "–"
    mean = _fmt(row[m] * scale, spec)
    if row.get("trials", 1) > 1:
        return f"{mean} [{_fmt(row[m + '_min'] * scale, spec)}, {_fmt(row[m + '_max'] * scale, spec)}]"
    return mean


def markdown_table(rows: list[dict]) -> str:
    lines = ["| round | branch | % weights remaining | trials | test acc at early stop (%) | early-stop iteration | final test acc (%) | min val loss |",
             "|---:|:---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        trials = f"{r['trials']}" + (f" (+{r['diverged']} diverged)" if r["diverged"] else "")
        lines.append(f"| {r['round']} | {r['branch']} | {r['weights_remaining']:.2f} | {trials} | {_cell(r, 'test_acc_at_es', 100, '.2f')} | "
                     f"{_cell(r, 'es_iteration', 1, '.0f')} | {_cell(r, 'final_test_acc', 100, '.2f')} | {_cell(r, 'min_val_loss', 1, '.4f')} |")
    return "\n".join(lines)


def _title(setting: Setting) -> str:
    c = setting.config
    data = str(c.get("data._target_", "")).rsplit(".", 1)[-1].replace("DataModule", "")
    parts = [str(c.get("model.name", "")), f"on {data}" if data else "", f"{c.get('prune.scheme', '')} pruning"]
    return " ".join(p for p in parts if p).strip()


def report(paths: list[Path | str], out: Path | str | None = None, levels: list[float] | None = None) -> Path:
    """Aggregate the experiments under ``paths``; returns the written ``report.md``."""
    from lth.figures import plot_learning_curves, plot_sparsity_figure
    from lth.storage import atomic_write_csv, atomic_write_text

    experiments = find_experiments(paths)
    if not experiments:
        raise FileNotFoundError(f"no results.csv under {', '.join(map(str, paths))}")
    if out is None:
        if len(paths) == 1:
            out = Path(paths[0])
        else:
            digest = hashlib.sha1("\n".join(sorted(str(Path(p).resolve()) for p in paths)).encode()).hexdigest()[:8]
            out = Path("outputs") / "reports" / digest
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    settings = group_settings(experiments)

    md = ["# Lottery-ticket report", "",
          f"{len(experiments)} experiment(s) in {len(settings)} setting(s); experiments that differ only in seed "
          "are trials: mean with [min, max] over seeds.", ""]
    summary: list[dict] = []
    compare: dict[str, list[dict]] = {}
    for s in settings:
        rows = aggregate(s)
        summary += rows
        series: dict[str, list[dict]] = {}
        for r in rows:
            if r["trials"] and "test_acc_at_es" in r:
                series.setdefault(r["branch"], []).append(r)
        if "ticket" in series:
            compare[s.label] = series["ticket"]
        title = _title(s)
        n = len(s.experiments)
        trials = f" (mean and min/max over {n} seeds)" if n > 1 else ""
        lt = fig_dir / f"{s.slug}_lottery_ticket.png"
        plot_sparsity_figure(series, lt, f"{title}{trials}")

        ticket_levels = [r["weights_remaining"] for r in rows if r["branch"] == "ticket"]
        chosen = pick_levels(ticket_levels, levels)
        curves = {}
        for lvl in chosen:
            rnd = next(r["round"] for r in rows if r["branch"] == "ticket" and r["weights_remaining"] == lvl)
            c = mean_curve([e.path / f"round_{rnd:02d}" / "ticket" / "curve.csv" for e in s.experiments])
            if c:
                curves[f"{lvl:.1f}%"] = c
        lc = fig_dir / f"{s.slug}_learning_curves.png"
        plot_learning_curves(curves, lc, f"{title}: ticket learning curves{trials}")

        md += [f"## {s.label}", "", f"{title}; {n} trial(s), seeds {', '.join(str(e.seed) for e in s.experiments)}.", "",
               markdown_table(rows), "",
               f"![lottery ticket]({lt.relative_to(out).as_posix()})", "",
               f"![learning curves]({lc.relative_to(out).as_posix()})", "",
               "<details><summary>experiment folders</summary>", ""]
        md += [f"- `{e.path}` (seed {e.seed})" for e in s.experiments] + ["", "</details>", ""]
    if len(compare) > 1:
        cmp_fig = fig_dir / "compare_lottery_ticket.png"
        plot_sparsity_figure(compare, cmp_fig, "winning tickets of every setting (mean, min/max over seeds)")
        md[4:4] = [f"![all settings]({cmp_fig.relative_to(out).as_posix()})", ""]
    cols = ["setting", "branch", "round", "weights_remaining", "trials", "diverged", "seeds"]
    cols += [c for m in METRICS for c in (m, f"{m}_min", f"{m}_max")]
    atomic_write_csv(out / "summary.csv", summary, cols)
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return md_path


# ---------------------------------------------------------------------- Hydra callback
try:
    from hydra.experimental.callback import Callback as _HydraCallback
except Exception:  # pragma: no cover - hydra is a dependency
    _HydraCallback = object


class SweepCallback(_HydraCallback):
    """Pins the sweep folder for every job of a ``-m`` sweep and writes one report at its root."""

    def __init__(self, report: bool = True, levels: list[float] | None = None):
        self.report = report
        self.levels = list(levels) if levels else None

    def on_multirun_start(self, config, **kwargs) -> None:
        from lth.identity import SWEEP_ENV, sweep_name

        os.environ.pop(SWEEP_ENV, None)
        try:
            os.environ[SWEEP_ENV] = sweep_name(config)
        except Exception as exc:  # never stop a sweep for its folder's name
            log.warning("could not pin the sweep folder name (%s)", exc)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """``wandb.finish()`` after every job, so the next job of a multirun starts its own run."""
        from lth.tracking import _quiet_finish

        _quiet_finish()

    def on_multirun_end(self, config, **kwargs) -> None:
        from lth.identity import SWEEP_ENV

        try:
            if self.report:
                sweep_dir = Path(str(config.hydra.sweep.dir))
                md = report([sweep_dir], sweep_dir, self.levels)
                log.info("Sweep report: %s", md)
                print(f"\nSweep report: {md}", flush=True)
        except FileNotFoundError as exc:
            log.warning("no sweep report: %s", exc)
        except Exception as exc:  # the jobs' results are on disk whatever happens here
            log.warning("the sweep report failed (%s: %s); run  python -m lth.report %s", exc.__class__.__name__, exc,
                        config.hydra.sweep.dir)
        finally:
            os.environ.pop(SWEEP_ENV, None)


# ---------------------------------------------------------------------- CLI
def _levels(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    return [float(x) for v in values for x in v.replace(",", " ").split() if x]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="lth-report", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="experiment or sweep folders (searched for results.csv)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the single PATH, else outputs/reports/<hash>)")
    parser.add_argument("--levels", nargs="*", default=None,
                        help="%% weights remaining for the learning curves, e.g. --levels 100 51.2 21 7 (nearest levels are used)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        md = report(args.paths, args.out, _levels(args.levels))
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(md.read_text())
    print(f"Report written to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
