"""The benchmark suite runs end to end (correctness only: no timing is asserted)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def test_benchmarks_quick_runs_end_to_end(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--quick", "--models", "LeNet-300-100", "--threads", "1", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "lth/hand" in proc.stdout and "targets:" in proc.stdout
    results = json.loads(out.read_text())
    rates = results["median_steps_per_s"]["LeNet-300-100"]
    assert set(rates) == {"hand", "mask", "dense", "torch_prune"} and all(v > 0 for v in rates.values())
    assert results["eval_s"] > 0
    assert sorted(results["memory"]["rss_mb"]) == ["0", "1", "2"]
