"""Spread over seeds (issue #21): standard deviation and the 95% Student-t interval beside mean/min/max,
checked against an independent computation (numpy's std and a printed table of t quantiles)."""

import csv
import math

import numpy as np
import pytest

from lth.report.settings import Setting, aggregate
from lth.report.records import ExperimentRecord
from lth.report.spread import spread, t_quantile

# t(0.975, df) from a printed table (e.g. any statistics textbook's appendix), df = 1..6, 10, 30.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 10: 2.228, 30: 2.042}


def test_t_quantiles_match_the_printed_table():
    for df, t in T975.items():
        assert t_quantile(df) == pytest.approx(t, abs=5e-4)


@pytest.mark.parametrize("values", [[0.97, 0.98], [0.9712, 0.9755, 0.9731], [1.0, 2.0, 4.0, 8.0, 16.0]])
def test_spread_is_mean_sample_std_and_t_interval(values):
    st = spread(values)
    n = len(values)
    std = float(np.std(values, ddof=1))
    half = T975[n - 1] * std / math.sqrt(n)
    assert st["mean"] == pytest.approx(np.mean(values))
    assert st["std"] == pytest.approx(std)
    assert st["ci_low"] == pytest.approx(np.mean(values) - half, abs=2e-4 * half)
    assert st["ci_high"] == pytest.approx(np.mean(values) + half, abs=2e-4 * half)
    assert (st["min"], st["max"]) == (min(values), max(values))


def test_one_trial_has_no_spread():
    assert spread([0.5]) == {"mean": 0.5, "min": 0.5, "max": 0.5, "std": None, "ci_low": None, "ci_high": None}


def test_aggregate_writes_std_and_interval_per_metric(tmp_path):
    accs = [0.95, 0.97, 0.96]
    exps = [ExperimentRecord(tmp_path / f"s{i}", {"seed": i}, [
        {"branch": "ticket", "round": 0, "weights_remaining": 100.0, "test_acc_at_es": a, "es_iteration": 100 * (i + 1)}])
        for i, a in enumerate(accs)]
    (row,) = aggregate(Setting("k", {}, exps, label="x"))
    half = T975[2] * float(np.std(accs, ddof=1)) / math.sqrt(3)
    assert row["test_acc_at_es_std"] == pytest.approx(float(np.std(accs, ddof=1)))
    assert row["test_acc_at_es_ci_low"] == pytest.approx(0.96 - half, rel=1e-4)
    assert row["es_iteration_ci_high"] == pytest.approx(200 + T975[2] * 100 / math.sqrt(3), rel=1e-4)


def test_report_summary_and_figure_carry_the_interval(tmp_path):
    """End to end through report(): summary.csv columns, report.md's mean ± std, and the band drawn in
    the lottery-ticket figure spans exactly the 95% interval."""
    import matplotlib.collections

    import lth.figures as figures
    from lth.report import report

    drawn = []
    real = figures.plot_sparsity_figure

    def spy(series, path, title="", band=("_min", "_max")):
        fig = real(series, path, title, band)
        drawn.append(fig)
        return fig


    for seed, accs in enumerate([(0.95, 0.90), (0.97, 0.93), (0.96, 0.91)]):
        folder = tmp_path / "sweep" / f"seed{seed}"
        folder.mkdir(parents=True)
        (folder / "config.yaml").write_text(f"seed: {seed}\nprune: {{rounds: 1}}\nmodel: {{name: lenet}}\n")
        with open(folder / "results.csv", "w", newline="") as f:
            from lth.results import COLUMNS  # every column results.csv must hold (lth.lottery.layout checks them)

            w = csv.DictWriter(f, list(COLUMNS), restval="")
            w.writeheader()
            for rnd, (rem, acc) in enumerate(zip((100.0, 80.0), accs)):
                w.writerow({"round": rnd, "branch": "ticket", "weights_remaining": rem, "es_iteration": 100 + seed,
                            "test_acc_at_es": acc, "final_test_acc": acc, "min_val_loss": 0.1, "diverged": False})
    import unittest.mock as mock

    with mock.patch.object(figures, "plot_sparsity_figure", spy):
        md = report([tmp_path / "sweep"], tmp_path / "rep")
    with open(tmp_path / "rep" / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert {"test_acc_at_es_std", "test_acc_at_es_ci_low", "test_acc_at_es_ci_high"} <= set(rows[0])
    lvl1 = next(r for r in rows if r["round"] == "1")
    vals = [0.90, 0.93, 0.91]
    half = T975[2] * float(np.std(vals, ddof=1)) / math.sqrt(3)
    assert float(lvl1["test_acc_at_es_ci_low"]) == pytest.approx(np.mean(vals) - half, rel=1e-4)
    assert " ± " in md.read_text()
    bands = [c for c in drawn[0].axes[0].collections if isinstance(c, matplotlib.collections.PolyCollection)]
    assert bands, "no band drawn"
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(100 * (np.mean(vals) - half), rel=1e-4)
    lvl0 = [0.95, 0.97, 0.96]
    assert max(ys) == pytest.approx(100 * (np.mean(lvl0) + T975[2] * np.std(lvl0, ddof=1) / math.sqrt(3)), rel=1e-4)


def test_mean_learning_curve_carries_std_and_interval(tmp_path):
    from lth.report.settings import mean_curve

    curves = {0: [0.90, 0.95], 1: [0.92, 0.96], 2: [0.91, 0.99]}  # seed -> test_acc at iterations 100, 200
    paths = []
    for seed, accs in curves.items():
        path = tmp_path / f"curve{seed}.csv"
        path.write_text("iteration,test_acc\n" + "".join(f"{100 * (i + 1)},{a}\n" for i, a in enumerate(accs)))
        paths.append(path)
    out = mean_curve(paths)
    for i, point in enumerate(out):
        vals = [c[i] for c in curves.values()]
        half = T975[2] * float(np.std(vals, ddof=1)) / math.sqrt(3)
        assert point["test_acc_std"] == pytest.approx(float(np.std(vals, ddof=1)))
        assert point["test_acc_ci_low"] == pytest.approx(np.mean(vals) - half, abs=2e-4 * half)
        assert point["test_acc_ci_high"] == pytest.approx(np.mean(vals) + half, abs=2e-4 * half)
