"""``report()``: the finished experiments under some folders, aggregated into ``report.md``,
``summary.csv`` and ``figures/`` (see the package's docstring for what each holds)."""

from __future__ import annotations

import hashlib
from pathlib import Path

from lth.report.markdown import _title, failed_jobs_table, markdown_table, rewind_table, unfinished_table
from lth.report.records import find_experiments, read_csv
from lth.report.rewind import rewind_sweeps
from lth.report.settings import ANALYSIS_METRICS, METRICS, STATS, aggregate, group_settings, mean_curve, pick_levels


def report(paths: list[Path | str], out: Path | str | None = None, levels: list[float] | None = None,
           failed_jobs: list[dict] | None = None, found: list | None = None) -> Path:
    """Aggregate the finished experiments under ``paths``; returns the written ``report.md``.

    Unfinished experiments (planned levels or branches missing from ``results.csv``) are listed in
    their own section, not aggregated; ``failed_jobs`` (from a sweep) are named in another. ``found``:
    the experiments of ``find_experiments(paths)`` when the caller has them already.
    """
    import lth.lottery.registry  # noqa: F401  (the registered branches' styles, for the figures)
    from lth.figures import curve_metric, plot_learning_curves, plot_sparsity_figure
    from lth.report.figures import plot_rewind_sweep
    from lth.storage import atomic_write_csv, atomic_write_text

    found = find_experiments(paths) if found is None else found
    failed_jobs = list(failed_jobs or [])
    if not found and not failed_jobs:
        raise FileNotFoundError(f"no experiment under {', '.join(map(str, paths))} (none has an intact results.csv or experiment.json)")
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

    counted = sum(len(s.experiments) for s in settings)
    copies = f" (and {len(experiments) - counted} copies of them, counted once)" if counted < len(experiments) else ""
    md = ["# Lottery-ticket report", "",
          f"{counted} finished experiment(s){copies} in {len(settings)} setting(s); experiments that differ only in "
          "seed are trials: mean ± standard deviation with [min, max] over seeds; the figures draw the 95% "
          "confidence interval of the mean (Student's t), summary.csv has all of them."
          + (f" **{len(unfinished)} unfinished** experiment(s) are listed at the end, not counted." if unfinished else "")
          + (f" **{len(failed_jobs)} sweep job(s) failed** (listed at the end)." if failed_jobs else ""), ""]
    summary: list[dict] = []
    rows_of: dict[str, list[dict]] = {}
    compare: dict[str, list[dict]] = {}
    for s in settings:
        rows = rows_of[s.key] = aggregate(s)
        summary += rows
        series: dict[str, list[dict]] = {}
        for r in rows:
            if r["trials"] and "test_acc_at_es" in r:
                series.setdefault(r["branch"], []).append(r)
        if "ticket" in series:
            compare[s.label] = series["ticket"]
        title = _title(s)
        n = len(s.experiments)
        lt = fig_dir / f"{s.slug}_lottery_ticket.png"
        band = f" (mean and 95% CI over {n} seeds)" if n > 1 else ""
        plot_sparsity_figure(series, lt, f"{title}{band}", band=("_ci_low", "_ci_high"))

        ticket_levels = [r["weights_remaining"] for r in rows if r["branch"] == "ticket"]
        chosen = pick_levels(ticket_levels, levels)
        paths = {}  # level -> the trials' ticket curves
        for lvl in chosen:
            rnd = next(r["round"] for r in rows if r["branch"] == "ticket" and r["weights_remaining"] == lvl)
            paths[lvl] = [e.path / f"round_{rnd:02d}" / "ticket" / "curve.csv" for e in s.experiments]
        test_curve = all(e.config.get("test_curve", False) for e in s.experiments)
        key = "val_acc" if not test_curve else curve_metric(  # one metric for all levels
            [read_csv(p) for ps in paths.values() for p in ps if p.exists()], test_curve)
        curves = {f"{lvl:.1f}%": c for lvl, ps in paths.items() if (c := mean_curve(ps, key))}
        lc = fig_dir / f"{s.slug}_learning_curves.png"
        plot_learning_curves(curves, lc, f"{title}: ticket learning curves{band}", band=("_ci_low", "_ci_high"),
                             test_curve=test_curve)

        md += [f"## {s.label}", "", f"{title}; {n} trial(s), seeds {', '.join(str(e.seed) for e in s.experiments)}.", "",
               markdown_table(rows), "",
               f"![lottery ticket]({lt.relative_to(out).as_posix()})", "",
               f"![learning curves]({lc.relative_to(out).as_posix()})", "",
               "<details><summary>experiment folders</summary>", ""]
        md += [f"- `{e.path}` (seed {e.seed})" for e in s.experiments] + ["", "</details>", ""]
    if len(compare) > 1:
        cmp_fig = fig_dir / "compare_lottery_ticket.png"
        plot_sparsity_figure(compare, cmp_fig, "winning tickets of every setting (mean and 95% CI over seeds)",
                             band=("_ci_low", "_ci_high"))
        md[4:4] = [f"![all settings]({cmp_fig.relative_to(out).as_posix()})", ""]
    sweeps = rewind_sweeps(settings, rows_of, levels)
    for i, sweep in enumerate(sweeps):
        name = "rewind_sweep" if len(sweeps) == 1 else f"rewind_sweep_{i + 1}"
        fig = fig_dir / f"{name}.png"
        head = _title(sweep.settings[0]) + (f", {sweep.label}" if sweep.label else "")
        plot_rewind_sweep(sweep, fig, f"{head}: rewinding to iteration K")
        md += [f"## Rewind sweep{': ' + sweep.label if sweep.label else ''}", "",
               f"{head}; rewind iteration K = {', '.join(map(str, sweep.rewinds))}. The ticket's test accuracy at early "
               "stop and, where the `instability` branch was trained (`instability=true`), its error barrier: the "
               "test error on the linear path between the ticket and a copy trained with other SGD noise, above the "
               "mean of the ends' errors (stable below 2 percentage points). Mean ± standard deviation [min, max] "
               "over seeds; the figure's error bars: the 95% confidence interval.", "",
               rewind_table(sweep), "", f"![rewind sweep]({fig.relative_to(out).as_posix()})", ""]
    if unfinished:
        md += ["## Unfinished experiments", "",
               "Not all of their planned networks are trained, so they are not reported as results above. "
               "Re-run each one's command to continue it (one running now goes on by itself: report again when it "
               "ends).", "", unfinished_table(unfinished), ""]
    if failed_jobs:
        md += ["## Failed sweep jobs", "", *failed_jobs_table(failed_jobs), ""]
    cols = ["setting", "branch", "round", "weights_remaining", "trials", "diverged", "seeds"]
    cols += [c for m in METRICS for c in (m, *(f"{m}_{k}" for k in STATS))]
    cols += [c for m in ANALYSIS_METRICS if any(m in r for r in summary) for c in (m, *(f"{m}_{k}" for k in STATS))]
    atomic_write_csv(out / "summary.csv", summary, cols)
    md_path = out / "report.md"
    atomic_write_text(md_path, "\n".join(md) + "\n")
    return md_path
