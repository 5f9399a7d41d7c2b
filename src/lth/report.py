"""Reports over experiments and sweeps: ``python -m lth.report PATH... [--out DIR] [--levels ...]``.

Every folder with a ``results.csv`` or ``experiment.json`` under the given paths (searched
recursively) is one experiment; its ``config.yaml`` beside it says what was run. An experiment is
*finished* when every network it plans (levels 0..prune.rounds of each of its branches) is in its
``results.csv``; unfinished ones are listed in their own section of the report, never averaged in
as results. Finished experiments whose configurations differ only in ``seed`` are *trials* of the
same setting and are aggregated: mean with min/max over seeds. Written to ``--out`` (default: the single PATH given, else ``outputs/reports/<hash>``)::

    report.md                    a markdown table per setting, links to the figures
    summary.csv                  the aggregated rows (setting, branch, round, mean/min/max)
    figures/<setting>_lottery_ticket.png   test acc at early stop + early-stop iteration
                                           vs % weights remaining (log axis), ticket vs controls
    figures/<setting>_learning_curves.png  test accuracy vs iteration at chosen levels
    figures/compare_lottery_ticket.png     the ticket of every setting (when more than one)

The Hydra callback :class:`SweepCallback` (registered in ``conf/config.yaml``) runs this over
the sweep folder when a ``-m`` sweep ends, and pins the sweep folder name for the jobs. Each job's
status is recorded in ``<sweep>/.jobs/<num>.json``; a job that failed (a refused setting, missing
data, a crash) does not stop the others, and the report names it. Bad arguments of the command
line give one ``error:`` line and exit status 2.
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
    missing: list[tuple[int, str]] = field(default_factory=list)  # planned (level, branch) not trained yet
    marked_incomplete: bool = False  # experiment.json says so

    @property
    def seed(self):
        return self.config.get("seed")

    @property
    def finished(self) -> bool:
        return not self.missing and not self.marked_incomplete


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


def planned_cells(config: dict) -> set[tuple[int, str]] | None:
    """Every (level, branch) the experiment of ``config`` trains: levels 0..prune.rounds of each of
    its branches (``lth.lottery.branches``) from the branch's first level. None: not known."""
    try:
        rounds = int(config["prune"]["rounds"])
    except (KeyError, TypeError, ValueError):
        return None
    try:
        from lth.lottery.branches import REGISTRY, selected

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


def find_experiments(paths: list[Path | str]) -> list[ExperimentRecord]:
    """Every experiment folder under ``paths`` (one with ``results.csv`` or ``experiment.json``),
    finished or not; folders under hidden ones (``.dense``, ``.hydra``, ``.jobs``) are not experiments."""
    found: dict[Path, ExperimentRecord] = {}
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p} does not exist")
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is not a folder (give experiment or sweep folders)")
        markers = [*p.rglob("results.csv"), *p.rglob("experiment.json")]
        for marker in sorted(markers):
            exp_dir = marker.parent.resolve()
            if exp_dir in found or any(part.startswith(".") for part in marker.relative_to(p).parts[:-1]):
                continue
            rows = read_csv(exp_dir / "results.csv") if (exp_dir / "results.csv").exists() else []
            config = _load_config(exp_dir)
            found[exp_dir] = ExperimentRecord(exp_dir, config, rows, _missing(config, rows), _marked_incomplete(exp_dir))
    return list(found.values())


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
        planned = planned_cells(e.config)
        total = f" of {len(planned)}" if planned else ""
        lines.append(f"| `{e.path}` | {e.seed} | {len(e.rows)}{total} | {todo} |")
    return "\n".join(lines)


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


def report(paths: list[Path | str], out: Path | str | None = None, levels: list[float] | None = None,
           failed_jobs: list[dict] | None = None) -> Path:
    """Aggregate the finished experiments under ``paths``; returns the written ``report.md``.

    Unfinished experiments (planned levels or branches missing from ``results.csv``) are listed in
    their own section, not aggregated; ``failed_jobs`` (from a sweep) are named in another.
    """
    from lth.figures import plot_learning_curves, plot_sparsity_figure
    from lth.storage import atomic_write_csv, atomic_write_text

    found = find_experiments(paths)
    failed_jobs = list(failed_jobs or [])
    if not found and not failed_jobs:
        raise FileNotFoundError(f"no experiment under {', '.join(map(str, paths))} (no results.csv or experiment.json)")
    experiments = [e for e in found if e.finished and e.rows]
    unfinished = [e for e in found if not (e.finished and e.rows)]
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
          f"{len(experiments)} finished experiment(s) in {len(settings)} setting(s); experiments that differ only in "
          "seed are trials: mean with [min, max] over seeds."
          + (f" **{len(unfinished)} unfinished** experiment(s) are listed at the end, not counted." if unfinished else "")
          + (f" **{len(failed_jobs)} sweep job(s) failed** (listed at the end)." if failed_jobs else ""), ""]
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
    if unfinished:
        md += ["## Unfinished experiments", "",
               "Not all of their planned networks are trained, so they are not reported as results above. "
               "Re-run each one's command to continue it.", "", unfinished_table(unfinished), ""]
    if failed_jobs:
        md += ["## Failed sweep jobs", "", "| job | overrides | error |", "|---:|:---|:---|"]
        md += [f"| {j.get('num')} | `{j.get('overrides', '')}` | {str(j.get('error', '')).replace('|', '/')} "
               f"(folder `{j.get('dir', '')}`, its run.log) |" for j in failed_jobs] + [""]
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


@dataclass
class JobFailed:
    """What a sweep job that failed returns (``lth.run``): the sweep goes on and its report names it."""

    message: str
    user_error: bool = True  # a setting or file the user can fix (exit 2), else an unexpected failure (exit 1)


@dataclass
class SweepOutcome:
    """How a sweep ended, for ``lth.run.main``'s exit status and last line."""

    jobs: int
    failed: list[dict]
    report: Path | None = None
    common: set[str] = field(default_factory=set)  # the overrides every job shares (left out of job names)

    def summary(self) -> str:
        names = "; ".join(f"job {j.get('num')} ({_job_name(j, self.common)})" for j in self.failed)
        where = f"the sweep report {self.report} covers the others" if self.report else "no report was written"
        return (f"{len(self.failed)} of {self.jobs} sweep jobs failed ({names}); each one's error is above and in its "
                f"folder's run.log, and {where}")


_SWEEP_OUTCOME: SweepOutcome | None = None


def _job_name(record: dict, common: set[str]) -> str:
    return " ".join(o for o in str(record.get("overrides", "")).split() if o not in common) or "no overrides"


def take_sweep_outcome() -> SweepOutcome | None:
    """The outcome of the sweep that just ended in this process (once), or None."""
    global _SWEEP_OUTCOME
    outcome, _SWEEP_OUTCOME = _SWEEP_OUTCOME, None
    return outcome


JOBS_DIR = ".jobs"  # <sweep>/.jobs/<num>.json: each job's status, written where the job ran


def _job_records(sweep_dir: Path) -> list[dict]:
    out = []
    for path in sorted((sweep_dir / JOBS_DIR).glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


class SweepCallback(_HydraCallback):
    """Pins the sweep folder for every job of a ``-m`` sweep, records each job's status, and writes one
    report at its root: the finished experiments, the unfinished ones and the failed jobs."""

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
        try:  # the job records of an earlier run of this sweep
            for old in (Path(str(config.hydra.sweep.dir)) / JOBS_DIR).glob("*.json"):
                old.unlink()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not clear the sweep's old job records (%s)", exc)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """``wandb.finish()`` after every job, so the next job of a multirun starts its own run; in a sweep,
        the job's status is recorded at the sweep root."""
        from lth.tracking import _quiet_finish

        _quiet_finish()
        try:
            if str(config.hydra.mode) not in ("MULTIRUN", "RunMode.MULTIRUN"):
                return
            from hydra.core.utils import JobStatus

            from lth.storage import atomic_write_json

            value = getattr(job_return, "_return_value", None)
            record = {"num": int(config.hydra.job.num), "overrides": " ".join(job_return.overrides or []),
                      "dir": str(config.hydra.runtime.output_dir), "status": "done"}
            if job_return.status == JobStatus.FAILED:
                record.update(status="failed", error=f"{value.__class__.__name__}: {value}", user_error=False)
            elif isinstance(value, JobFailed):
                record.update(status="failed", error=value.message, user_error=value.user_error)
            atomic_write_json(Path(str(config.hydra.sweep.dir)) / JOBS_DIR / f"{record['num']}.json", record)
        except Exception as exc:  # noqa: BLE001 - the record is a convenience; the job's own files are intact
            log.warning("could not record the sweep job's status (%s: %s)", exc.__class__.__name__, exc)

    def on_multirun_end(self, config, **kwargs) -> None:
        global _SWEEP_OUTCOME
        from lth.identity import SWEEP_ENV

        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = _job_records(sweep_dir)
        failed = [r for r in records if r.get("status") == "failed"]
        md = None
        try:
            if self.report:
                md = report([sweep_dir], sweep_dir, self.levels, failed_jobs=failed)
                log.info("Sweep report: %s", md)
                print(f"\nSweep report: {md}", flush=True)
        except FileNotFoundError as exc:
            log.warning("no sweep report: %s", exc)
        except Exception as exc:  # the jobs' results are on disk whatever happens here
            log.warning("the sweep report failed (%s: %s); run  python -m lth.report %s", exc.__class__.__name__, exc,
                        config.hydra.sweep.dir)
        finally:
            os.environ.pop(SWEEP_ENV, None)
        common = set.intersection(*(set(str(r.get("overrides", "")).split()) for r in records)) \
            if len(records) > 1 else set()
        _SWEEP_OUTCOME = SweepOutcome(len(records), failed, md, common)


# ---------------------------------------------------------------------- CLI
class _Parser(argparse.ArgumentParser):
    """Bad arguments: one ``error:`` line (and where to find the usage), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _levels(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    out = []
    for x in (x for v in values for x in v.replace(",", " ").split() if x):
        try:
            level = float(x)
        except ValueError:
            raise ValueError(f"--levels {x!r} is not a number: give %% of weights remaining, e.g. --levels 100 51.2 21"
                             ) from None
        if not 0 < level <= 100:
            raise ValueError(f"--levels {x} is not a percentage of weights remaining in (0, 100], e.g. --levels 100 21")
        out.append(level)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="lth-report", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="experiment or sweep folders (searched for results.csv)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the single PATH, else outputs/reports/<hash>)")
    parser.add_argument("--levels", nargs="*", default=None,
                        help="%% weights remaining for the learning curves, e.g. --levels 100 51.2 21 7 (nearest levels are used)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        levels = _levels(args.levels)
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file, not a folder")
        unfinished = [e for e in find_experiments(args.paths) if not (e.finished and e.rows)]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        md = report(args.paths, args.out, levels)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: could not write the report ({exc.strerror or exc}: {exc.filename}); choose another folder "
              f"with --out DIR", file=sys.stderr)
        return 2
    print(md.read_text())
    if unfinished:
        print(f"Unfinished (not reported as results; re-run each one's command to continue it): "
              f"{', '.join(str(e.path) for e in unfinished)}")
    print(f"Report written to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
