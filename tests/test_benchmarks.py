"""The benchmark suite runs end to end (correctness only: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from benchmarks import probes
from lth.machine import missing_compiler
from tests.conftest import REPO

COMPILER = missing_compiler("cpu") is None  # optimizer.compile=true variants need a C++ compiler


def results_stacked(path):
    return json.loads(path.read_text())["stacked"]


def test_benchmarks_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--models", "LeNet-300-100", "--threads", "1", "--json", str(out),
         "--sections", "steps,memory,stacked", *(["--compiled"] if COMPILER else [])],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lth/hand" in proc.stdout and "targets:" in proc.stdout
    assert "2 stacked:" in proc.stdout and results_stacked(out)["2"] > 0  # (8): two LeNets stacked
    results = json.loads(out.read_text())
    rates = results["median_steps_per_s"]["LeNet-300-100"]
    compiled = {"mask_compiled", "dense_compiled"} if COMPILER else set()
    assert set(rates) == {"hand", "mask", "dense", "torch_prune", *compiled} and all(v > 0 for v in rates.values())
    assert ("optimizer.compile=true" in proc.stdout) == COMPILER
    assert results["eval_s"] > 0
    assert sorted(results["memory"]["rss_mb"]) == ["0", "1", "2"]


@pytest.mark.slow
def test_benchmarks_of_a_round_and_a_level_run_and_compare_like_with_like(tmp_path):
    """(6) a real round under each evaluation variant and (7) a level in workers against one after
    another: the results they time are the same (test accuracy, early-stopping iteration, rows)."""
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--threads", "1", "--json", str(out), "--sections", "round,level",
         "--data-root", str(tmp_path / "no-mnist-here")],  # the embedded digits: fast
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    variants = [v for v in results["round"] if v != "iterations"]
    assert len(variants) == 3 and all(len(results["round"][v]) == 1 for v in variants)
    measured = {(p["test_acc_at_es"], p["es_iteration"], p["final_test_acc"]) for v in variants for p in results["round"][v]}
    assert len(measured) == 1  # the same round, evaluated three ways
    assert results["round"][variants[0]][0]["evaluations"] > results["round"][variants[1]][0]["evaluations"] or \
        measured.pop()[1] == results["round"]["iterations"]  # fewer test passes unless every point was a new minimum
    level = results["level"]
    assert level["identical_results"] is True and max(level["workers"].values()) >= 2
    assert all(t > 0 for ts in level["times"].values() for t in ts)
    assert "(6) evaluation share" in proc.stdout and "(7) one level" in proc.stdout


def test_probes_keep_pruned_weights_at_zero_and_time_every_evaluation_method():
    for variant in ("dense", "multiply", "grad_hook", "survivors"):
        assert probes.masked_lenet_loop(variant, keep=0.1, steps=5, warmup=2) > 0  # asserts pruned weights stayed 0
    for method in ("dense-1000", "csr", "bag", "bag-prepared"):
        assert probes.first_layer_eval(method, density=0.1) > 0
    if COMPILER:  # verifies that the masked variants kept pruned weights at 0
        ratios = probes.paired_optimizer_ratios(rounds=2, chunk=2)
        assert set(ratios) == {"multiply", "compiled_dense", "compiled_mask"} and all(r > 0 for r in ratios.values())
    bar = probes.progress_bar_cost(reps=1, steps=20, warmup=20)
    assert set(bar) == {"no bar", "bar", "ratio"} and all(v > 0 for v in bar.values())
    x, w, b = torch.randn(50, 784), torch.randn(300, 784) * (torch.rand(300, 784) < 0.1), torch.randn(300)
    (out,) = probes.embedding_bag_linear([x.t().contiguous()], w, b)
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=0, atol=1e-4)  # the same layer


def test_the_startup_breakdown_accounts_for_the_whole_command(data_dir):
    """benchmarks/startup.py (BENCHMARKS.md, "Where an experiment's time goes"): every phase is timed inside the
    process, and what they leave of the whole command (the rest) is not negative."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--repeats", "1", "--iterations", "100",
                           "--data-root", str(data_dir)], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    phases = {line[:54].strip(): float(line[54:].split()[0]) for line in proc.stdout.splitlines()[1:]}
    assert {"command checked", "torch, Lightning, lth imported", "data loaded and checked",
            "trainings (Lightning's Trainer included)", "results and figures written"} <= set(phases)
    assert phases["trainings (Lightning's Trainer included)"] > 0 and phases["torch, Lightning, lth imported"] > 0
    assert all(v >= 0 for v in phases.values()), phases  # the rest = whole command - the timed phases
