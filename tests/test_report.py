"""lth.report: experiments that differ only in seed aggregate as trials; figures and report.md."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lth.lottery import Lottery
from lth.report import find_experiments, group_settings, main, pick_levels, report
from tests.conftest import FAST, compose_config

TINY = ["experiment=quickstart", *FAST, "prune.rounds=1", "train.iterations=20", "eval_every=10", "controls=[reinit]"]


@pytest.fixture(scope="module")
def seed_runs(tmp_path_factory) -> Path:
    """Two seeds of one setting plus one other setting (prune=global), as a sweep would leave them."""
    root = tmp_path_factory.mktemp("sweep")
    for name, extra in (("seed0", ["seed=0"]), ("seed1", ["seed=1"]), ("global", ["seed=0", "prune=global"])):
        Lottery(compose_config([*TINY, *extra]), root / name).run()
    return root


def _csv(path: Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def test_seeds_group_as_trials(seed_runs):
    settings = group_settings(find_experiments([seed_runs]))
    sizes = sorted(len(s.experiments) for s in settings)
    assert sizes == [1, 2]
    two = next(s for s in settings if len(s.experiments) == 2)
    assert sorted(e.seed for e in two.experiments) == [0, 1]
    assert "prune.scheme=layerwise" in two.label


def test_report_mean_min_max_match_per_seed_results(seed_runs, tmp_path):
    md = report([seed_runs], tmp_path / "rep", levels=[100, 80])
    summary = _csv(tmp_path / "rep" / "summary.csv")
    per_seed = [_csv(seed_runs / s / "results.csv") for s in ("seed0", "seed1")]
    layerwise = [r for r in summary if "layerwise" in r["setting"]]
    assert len(layerwise) == 3  # round 0 ticket, round 1 ticket and reinit
    for agg in layerwise:
        vals = {m: [float(r[m]) for rows in per_seed for r in rows
                    if r["branch"] == agg["branch"] and int(r["round"]) == int(agg["round"])]
                for m in ("test_acc_at_es", "es_iteration", "min_val_loss")}
        assert int(agg["trials"]) == 2 and agg["seeds"] == "0 1"
        for m, v in vals.items():
            assert len(v) == 2
            assert float(agg[m]) == pytest.approx(sum(v) / 2)
            assert float(agg[f"{m}_min"]) == pytest.approx(min(v))
            assert float(agg[f"{m}_max"]) == pytest.approx(max(v))
    text = md.read_text()
    assert "| 1 | reinit |" in text and "[" in text  # mean [min, max]
    figs = sorted(p.name for p in (tmp_path / "rep" / "figures").glob("*.png"))
    assert len(figs) == 5  # 2 settings x (sparsity figure, learning curves) + comparison
    for p in (tmp_path / "rep" / "figures").glob("*.png"):
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 10_000
        assert f"figures/{p.name}" in text


def test_cli_on_one_experiment_folder(seed_runs, capsys):
    assert main([str(seed_runs / "global"), "--levels", "100,80"]) == 0
    assert (seed_runs / "global" / "report.md").exists()
    assert (seed_runs / "global" / "figures").is_dir()
    assert "Report written to" in capsys.readouterr().out


def test_cli_without_results_fails_cleanly(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "no results.csv" in capsys.readouterr().err


def test_pick_levels():
    levels = [100.0, 80.2, 64.4, 51.7, 41.6, 33.5, 27.0, 21.8]
    assert pick_levels(levels, [100, 50, 20]) == [100.0, 51.7, 21.8]
    assert len(pick_levels(levels, None)) == 5 and pick_levels(levels, None)[0] == 100.0
