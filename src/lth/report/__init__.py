"""Reports over experiments and sweeps: ``python -m lth.report PATH... [--out DIR] [--levels ...]``.

Every folder with a ``results.csv`` or ``experiment.json`` under the given paths (searched
recursively) is one experiment; its ``config.yaml`` beside it says what was run. An experiment is
*finished* when every network it plans (levels 0..prune.rounds of each of its branches) is in its
``results.csv``; unfinished ones are listed in their own section of the report, never averaged in
as results. An experiment whose ``results.csv``, ``results.json`` or ticket curves fail their checks
(``lth.lottery.layout.KINDS``) is skipped with one ``warning:`` line naming the file; the others are
reported. Finished experiments whose configurations differ only in ``seed`` are *trials* of the
same setting and are aggregated: mean with min/max, standard deviation and the 95% confidence
interval of the mean (Student's t over seeds, ``spread``). Written to ``--out`` (default: the single PATH given, else ``outputs/reports/<hash>``)::

    report.md                    a markdown table per setting, links to the figures
    summary.csv                  the aggregated rows (setting, branch, round; per metric mean, _min, _max,
                                 _std, _ci_low, _ci_high)
    figures/<setting>_lottery_ticket.png   test acc at early stop + early-stop iteration
                                           vs % weights remaining (log axis), ticket vs controls,
                                           95% CI bands over seeds
    figures/<setting>_learning_curves.png  validation (test_curve=true: test) accuracy vs iteration at chosen levels (95% CI bands)
    figures/compare_lottery_ticket.png     the ticket of every setting (when more than one)
    figures/rewind_sweep.png               when settings differ only in rewind_iteration: the
                                           ticket's test acc at early stop and the instability
                                           (error barrier) against K at chosen levels, with a
                                           table of the same numbers in report.md

The Hydra callback :class:`SweepCallback` (registered in ``conf/config.yaml``) runs this over
the sweep folder when a ``-m`` sweep ends, and pins the sweep folder name for the jobs. Each job's
status is recorded in ``<sweep>/.jobs/<num>.json``; a job that failed (a refused setting, missing
data, a crash) does not stop the others, and the report names it. Bad arguments of the command
line give one ``error:`` line and exit status 2.

Modules: ``records`` (finding experiments, reading them, finished or not) · ``settings`` (settings
and trials, their statistics) · ``spread`` (std and t interval) · ``rewind`` (rewind sweeps) · ``markdown`` (tables) · ``figures`` (the
rewind-sweep figure; the others are ``lth.figures``) · ``build`` (:func:`report`) · ``sweep`` (the
Hydra callback) · ``cli`` (:func:`main`).
"""

from lth.report.build import report
from lth.report.cli import main
from lth.report.markdown import markdown_table, rewind_table, unfinished_table
from lth.report.records import ExperimentRecord, find_experiments, planned_cells, read_csv
from lth.report.rewind import RewindSweep, rewind_points, rewind_sweeps
from lth.report.settings import (
    ANALYSIS_METRICS,
    METRICS,
    Setting,
    aggregate,
    group_settings,
    mean_curve,
    pick_levels,
    setting_config,
)
from lth.report.sweep import JOBS_DIR, JobFailed, SweepCallback, SweepOutcome, take_sweep_outcome

__all__ = [
    "ANALYSIS_METRICS", "JOBS_DIR", "METRICS", "ExperimentRecord", "JobFailed", "RewindSweep", "Setting",
    "SweepCallback", "SweepOutcome", "aggregate", "find_experiments", "group_settings", "main", "markdown_table",
    "mean_curve", "pick_levels", "planned_cells", "read_csv", "report", "rewind_points", "rewind_sweeps",
    "rewind_table", "setting_config", "take_sweep_outcome", "unfinished_table",
]
