"""benchmarks/gpu_check.py: a verdict line per path; without CUDA every path SKIPs and it exits 0;
``--cpu`` runs the same paths on the CPU, which tests the script's own plumbing here."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from benchmarks import gpu_check
from tests.conftest import REPO

VERDICT = re.compile(r"^(PASS|FAIL|SKIP)\s+(\S+)\s+[\d.]+s\s+\S")


def run_check(*args: str, timeout: int = 900, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout, env=env)


def verdicts(stdout: str) -> dict[str, str]:
    found = {}
    for line in stdout.splitlines():
        m = VERDICT.match(line)
        if m:
            found[m.group(2)] = m.group(1)
    return found


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run for real")
def test_without_a_gpu_every_path_skips_and_exits_0():
    proc = run_check(timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert verdicts(proc.stdout) == {p: "SKIP" for p in gpu_check.PATHS}
    assert re.search(rf"gpu_check: 0 PASS, 0 FAIL, {len(gpu_check.PATHS)} SKIP in .*no GPU", proc.stdout)


def test_every_cuda_path_is_planned():
    paths = set(gpu_check.PATHS)
    assert {"quickstart", "compile", "precision:bf16-mixed", "precision:16-mixed", "ddp", "mask_zero",
            "benchmarks"} <= paths
    assert {f"model:{m}" for m in ("lenet300_100", "conv2", "conv4", "conv6", "vgg11", "vgg13", "vgg16", "vgg19",
                                   "resnet20")} <= paths
    models = {p.name[:-5] for p in (REPO / "conf" / "model").glob("*.yaml")} - {"resnet18"}  # an alias of resnet20
    assert {f"model:{m}" for m in models} <= paths, "a model config without a GPU check"


def test_random_data_module_has_the_real_shapes():
    mnist, cifar = gpu_check.RandomMNIST(val_size=16), gpu_check.RandomCIFAR10(val_size=16)
    mnist.setup()
    cifar.setup()
    assert mnist.splits["train"][0].shape[1:] == (1, 28, 28) and cifar.splits["val"][0].shape == (16, 3, 32, 32)
    assert cifar.splits["test"][0].shape[0] == 32 and cifar.input_shape == (3, 32, 32)


def test_a_failing_path_is_a_fail_verdict_with_the_error_line(tmp_path):
    job = gpu_check.Job("model:nonexistent", ["-m", "lth.run", "model=nonexistent", "logger=none",
                                              f"hydra.run.dir={tmp_path / 'run'}"], 120, run_dir=tmp_path / "run")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    v = gpu_check.execute(job, tmp_path, env, "cpu")
    assert v.status == "FAIL" and "exit 2" in v.detail and "model" in v.detail, v
    assert (tmp_path / "model_nonexistent.log").is_file()


def test_failure_detail_is_the_cause():
    ddp = ("Traceback (most recent call last):\n  File \"plan.py\"\nFileNotFoundError: [Errno 2] final.pt\n"
           "Traceback (most recent call last):\nRuntimeError: Connection closed by peer")
    assert gpu_check._tail(ddp) == "FileNotFoundError: [Errno 2] final.pt"
    assert gpu_check._tail("noise\nerror: model=x is not one of lenet300_100, ...\n") == \
        "error: model=x is not one of lenet300_100, ..."
    assert gpu_check._tail("") == "(no output)"


# One path of every kind (the model paths differ only in the model, which the GPU run covers).
CPU_PATHS = ["quickstart", "model:lenet300_100", "model:resnet20", "compile", "precision:bf16-mixed",
             "precision:16-mixed", "ddp", "mask_zero", "benchmarks"]


@pytest.mark.slow
def test_cpu_mode_runs_every_kind_of_path(tmp_path):
    """The script's plumbing on the CPU: 2-3 minutes on an idle 2-core machine."""
    proc = run_check("--cpu", "--only", ",".join(CPU_PATHS), "--out", str(tmp_path), timeout=1200)
    found = verdicts(proc.stdout)
    assert set(found) == set(CPU_PATHS), proc.stdout + proc.stderr
    assert proc.returncode == 0 and "FAIL" not in found.values(), proc.stdout + proc.stderr[-3000:]
    assert found["precision:16-mixed"] == "SKIP"  # CUDA only
    skipped = {p for p, s in found.items() if s == "SKIP"}
    assert skipped <= {"precision:16-mixed", "compile"}, proc.stdout  # compile: only without a C++ compiler
    assert "pruned weights exactly 0" in proc.stdout and "steps/s" in proc.stdout
    assert re.search(r"gpu_check: \d+ PASS, 0 FAIL, \d+ SKIP in \d+s on cpu", proc.stdout)
