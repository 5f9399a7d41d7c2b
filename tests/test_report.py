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


def test_settings_are_labelled_by_what_tells_them_apart(seed_runs, tmp_path):
    """Without Hydra's record, by the keys whose values differ: not the keys a setting does not read
    (None), not prune.rates repeating model.rates; run by Hydra, by the overrides as the user wrote them."""
    labels = sorted(s.label for s in group_settings(find_experiments([seed_runs])))
    assert labels == ["model.global_rate=0.2, prune.scheme=global",
                      "model.rates.conv=0.0, model.rates.fc=0.2, model.rates.output=0.1, prune.scheme=layerwise"]
    import shutil

    sweep = shutil.copytree(seed_runs, tmp_path / "sweep")
    for name, overrides in (("seed0", "[experiment=quickstart, seed=0, prune=layerwise]"),
                            ("seed1", "[experiment=quickstart, seed=1, prune=layerwise]"),
                            ("global", "[experiment=quickstart, seed=0, prune=global, trainer=cpu]")):
        (sweep / name / ".hydra").mkdir()
        (sweep / name / ".hydra" / "overrides.yaml").write_text(overrides)
    assert sorted(s.label for s in group_settings(find_experiments([sweep]))) == ["prune=global", "prune=layerwise"]


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
    assert "lenet300_100 on digits layerwise pruning; 2 trial(s)" in text  # the model's name, though not in the identity;
    # the data as the experiment's own figures name it
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
    assert "no experiment under" in capsys.readouterr().err


def test_pick_levels():
    levels = [100.0, 80.2, 64.4, 51.7, 41.6, 33.5, 27.0, 21.8]
    assert pick_levels(levels, [100, 50, 20]) == [100.0, 51.7, 21.8]
    assert len(pick_levels(levels, None)) == 5 and pick_levels(levels, None)[0] == 100.0


# ---------------------------------------------------------------------- rewind sweeps
def test_rewind_sweep_figure_and_table_match_each_experiments_results(tmp_path):
    """Settings that differ only in rewind_iteration: figures/rewind_sweep.png and a table of the ticket's
    test accuracy at early stop and the instability branch's error barrier per K and level."""
    root = tmp_path / "rewind"
    rewinds = (0, 10, 20)
    for k in rewinds:
        Lottery(compose_config(["experiment=quickstart", *FAST, "controls=[]", "train.iterations=40", "eval_every=10",
                                "prune.rounds=1", "instability=true", f"rewind_iteration={k}"]), root / f"k{k}").run()
    text = report([root]).read_text()
    fig = root / "figures" / "rewind_sweep.png"
    assert fig.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.stat().st_size > 10_000
    assert "## Rewind sweep" in text and "](figures/rewind_sweep.png)" in text
    section = text.split("## Rewind sweep", 1)[1]
    assert "Mean ± standard deviation [min, max] over seeds" in section  # what its cells hold
    table = [line for line in section.splitlines() if line.startswith("| ") and line[2].isdigit()]
    cells = {(int(c[1]), int(c[2])): c for c in ([x.strip() for x in line.strip("|").split("|")] for line in table)}
    assert sorted(cells) == [(rnd, k) for rnd in (0, 1) for k in rewinds]
    for k in rewinds:
        rows = {(int(r["round"]), r["branch"]): r for r in _csv(root / f"k{k}" / "results.csv")}
        for rnd in (0, 1):
            remaining, _, _, trials, acc, barrier = cells[(rnd, k)]
            ticket, copy = rows[(rnd, "ticket")], rows[(rnd, "instability")]
            assert remaining == f"{float(ticket['weights_remaining']):.2f}" and trials == "1"
            assert acc == f"{100 * float(ticket['test_acc_at_es']):.2f}"
            assert barrier == f"{100 * float(copy['instability']):.2f}"
    for k in rewinds:  # each setting's own table has the barrier too (an instability study without a K sweep)
        own = next(s for s in text.split("\n## ") if s.startswith(f"rewind_iteration={k}\n"))
        rows = {(int(r["round"]), r["branch"]): r for r in _csv(root / f"k{k}" / "results.csv")}
        for rnd in (0, 1):
            line = next(x for x in own.splitlines() if x.startswith(f"| {rnd} | instability |"))
            assert line.split("|")[-2].strip() == f"{100 * float(rows[(rnd, 'instability')]['instability']):.2f}"


# ---------------------------------------------------------------------- unfinished experiments
def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report.md", "summary.csv", "figures"))
    return dst


def _keep_rows(folder: Path, keep) -> None:
    rows = _csv(folder / "results.csv")
    with open(folder / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(r for r in rows if keep(r))


def test_unfinished_experiments_are_listed_not_reported_as_results(seed_runs, tmp_path, capsys):
    root = tmp_path / "runs"
    _copy(seed_runs / "seed0", root / "seed0")
    _copy(seed_runs / "seed1", root / "seed1")
    partial = _copy(seed_runs / "seed1", root / "partial")  # an interrupted trial of the same setting: round 1 missing
    _keep_rows(partial, lambda r: r["round"] == "0")
    started = root / "started"  # claimed, nothing trained yet
    started.mkdir()
    (started / "experiment.json").write_text((seed_runs / "seed0" / "experiment.json").read_text())
    (started / "config.yaml").write_text((seed_runs / "seed0" / "config.yaml").read_text())
    found = {e.path.name: e for e in find_experiments([root])}
    assert {n: e.finished for n, e in found.items()} == {"seed0": True, "seed1": True, "partial": False, "started": False}
    assert found["partial"].missing == [(1, "reinit"), (1, "ticket")]

    assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert "Unfinished (not reported as results; re-run each one's command to continue it): " in out
    assert str(partial.resolve()) in out and str(started.resolve()) in out
    text = (root / "report.md").read_text()
    assert "2 finished experiment(s) in 1 setting(s)" in text and "**2 unfinished** experiment(s)" in text
    results, _, unfinished = text.partition("## Unfinished experiments")
    assert "partial" not in results and "started" not in results
    assert f"| `{partial.resolve()}` | 1 | 1 of 3 | ticket round(s) 1; reinit round(s) 1 |" in unfinished \
        or f"| `{partial.resolve()}` | 1 | 1 of 3 | reinit round(s) 1; ticket round(s) 1 |" in unfinished
    assert f"| `{started.resolve()}` | 0 | 0 of 3 |" in unfinished
    assert {r["trials"] for r in _csv(root / "summary.csv")} == {"2"}  # the partial trial is not averaged in


def test_a_running_experiment_is_named_running_not_to_be_re_run(seed_runs, tmp_path, capsys):
    import os

    from lth.lottery.layout import experiment_lock

    root = tmp_path / "runs"
    _copy(seed_runs / "seed0", root / "seed0")
    running = _copy(seed_runs / "seed1", root / "running")
    _keep_rows(running, lambda r: r["round"] == "0")
    with experiment_lock(running):  # its lth process is still training it
        assert main([str(root)]) == 0
    out = capsys.readouterr().out
    assert f"Running now (not reported as results yet; report again when they end): {running.resolve()} " \
           f"(pid {os.getpid()})" in out and "re-run each one's command" not in out
    assert f"| running now (pid {os.getpid()}): " in (root / "report.md").read_text()


def test_experiment_json_marked_incomplete_and_all_unfinished(seed_runs, tmp_path):
    import json

    exp = _copy(seed_runs / "seed0", tmp_path / "only")
    marker = json.loads((exp / "experiment.json").read_text())
    (exp / "experiment.json").write_text(json.dumps({**marker, "complete": False}))
    md = report([tmp_path])  # nothing finished: still a report, which says so
    text = md.read_text()
    assert "0 finished experiment(s)" in text and "marked incomplete" in text


def test_a_diverged_search_is_finished_up_to_where_it_stopped(seed_runs, tmp_path):
    exp = _copy(seed_runs / "seed0", tmp_path / "div")
    rows = _csv(exp / "results.csv")
    with open(exp / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerow({**rows[0], "diverged": "True", "diverged_reason": "loss became nan"})
    assert find_experiments([exp])[0].finished  # the dense round diverged: nothing more was possible


@pytest.mark.parametrize("argv,message", [
    ([], "error: the following arguments are required: paths (see lth-report --help)"),
    (["{tmp}", "--bogus"], "error: unrecognized arguments: --bogus (see lth-report --help)"),
    (["{tmp}", "--levels", "abc"], "error: --levels 'abc' is not a number"),
    (["{tmp}", "--levels", "150"], "error: --levels 150 is not a percentage of weights remaining in (0, 100]"),
    (["{tmp}/nope"], "does not exist"),
    (["{tmp}/a_file"], "is not a folder"),
    (["{tmp}", "--out", "{tmp}/a_file"], "is a file, not a folder"),
    (["{tmp}"], "error: no experiment under"),
])
def test_cli_bad_arguments_one_error_line(argv, message, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    assert main([a.format(tmp=tmp_path) for a in argv]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], captured.err
    assert "Traceback" not in captured.out + captured.err


def test_learning_curves_draw_validation_without_test_curve_whatever_the_test_points(seed_runs, tmp_path, monkeypatch):
    """With test_curve=false the test split is evaluated only at new validation minima, which in a short
    training can be every point (and every point of one level but not of another): the experiment's
    and the report's learning curves still draw the validation accuracy, as the README says (they drew
    "test accuracy" when every point happened to have one, and the report failed on a mix of levels)."""
    import lth.figures
    from lth.lottery import outputs

    root = tmp_path / "runs"
    for s in ("seed0", "seed1"):
        _copy(seed_runs / s, root / s)
    dense = [_csv(root / s / "round_00" / "ticket" / "curve.csv") for s in ("seed0", "seed1")]
    assert all(p["test_acc"] != "nan" for c in dense for p in c)  # every point a new minimum: all tested
    path = root / "seed1" / "round_01" / "ticket" / "curve.csv"
    rows = _csv(path)
    rows[1]["test_acc"] = rows[1]["test_loss"] = "nan"  # a point that was not a new minimum at level 1
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    drawn = []

    def spy(real):
        return lambda *a, **k: drawn.append(real(*a, **k)) or drawn[-1]

    monkeypatch.setattr(lth.figures, "plot_learning_curves", spy(lth.figures.plot_learning_curves))
    report([root], tmp_path / "rep")
    ax = drawn[-1].axes[0]
    assert ax.get_ylabel() == "validation accuracy (%)"
    mean_val = [100 * (float(a["val_acc"]) + float(b["val_acc"])) / 2 for a, b in zip(*dense)]
    assert list(ax.lines[0].get_ydata()) == pytest.approx(mean_val)  # level 100%: the seeds' mean validation accuracy

    monkeypatch.setattr(outputs, "plot_learning_curves", spy(outputs.plot_learning_curves))
    Lottery(compose_config([*TINY, "seed=0"]), root / "seed0").run()  # finished: redraws its figures
    ax = drawn[-1].axes[0]
    assert ax.get_ylabel() == "validation accuracy (%)"
    assert list(ax.lines[0].get_ydata()) == pytest.approx([100 * float(p["val_acc"]) for p in dense[0]])


def test_a_copy_of_an_experiment_is_one_trial_not_two(seed_runs, tmp_path, caplog):
    """The same experiment found twice (a sweep and its backup copy given together, or a run copied to another
    folder) counted as two trials of its seed: 'seeds 0, 0, 1', a mean weighted towards the copied seed and a
    standard deviation and confidence interval over copies."""
    import shutil

    shutil.copytree(seed_runs / "seed0", tmp_path / "backup" / "seed0")
    plain = report([seed_runs], tmp_path / "plain")
    with caplog.at_level("WARNING", logger="lth"):
        both = report([seed_runs, tmp_path / "backup"], tmp_path / "both")
    assert _csv(tmp_path / "both" / "summary.csv") == _csv(tmp_path / "plain" / "summary.csv")
    text = both.read_text()
    assert "2 trial(s), seeds 0, 1." in text and "3 finished experiment(s) (and 1 copies of them, counted once)" in text
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "the same experiment as" in warnings[0] and "counted once" in warnings[0], warnings
