"""A non-editable install works from any folder: the wheel carries the configs (``lth.conf``).

The wheel is built from a copy of the project's packaging files (so the working tree gets no
``build/`` folder) and installed with ``--no-deps`` into a target folder that is put first on
``PYTHONPATH``; torch and the other dependencies come from the test's own environment, so
nothing is downloaded. Both commands then run from a folder outside the repository.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> tuple[Path, dict]:
    """(the install folder, the environment that imports lth from it)."""
    tmp = tmp_path_factory.mktemp("install")
    project = tmp / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, project / name)
    shutil.copytree(REPO / "conf", project / "conf", ignore=ignore)
    shutil.copytree(REPO / "src", project / "src", ignore=ignore)

    dist = tmp / "dist"
    built = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                  "-w", str(dist), str(project)], cwd=tmp)
    assert built.returncode == 0, built.stdout + built.stderr
    wheels = list(dist.glob("lth-*.whl"))
    assert len(wheels) == 1, built.stdout

    site = tmp / "site"
    inst = _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                 str(wheels[0])], cwd=tmp)
    assert inst.returncode == 0, inst.stdout + inst.stderr

    env = dict(os.environ, PYTHONPATH=str(site), WANDB_MODE="offline")
    env.pop("LTH_DATA_DIR", None)
    return site, env


def test_wheel_holds_every_config(installed):
    site, _ = installed
    shipped = {p.relative_to(site / "lth" / "conf").as_posix() for p in (site / "lth" / "conf").rglob("*.yaml")}
    in_repo = {p.relative_to(REPO / "conf").as_posix() for p in (REPO / "conf").rglob("*.yaml")}
    assert shipped == in_repo


def test_wheel_ships_py_typed(installed):
    site, _ = installed
    assert (site / "lth" / "py.typed").is_file()  # PEP 561: type checkers use lth's annotations


def test_installed_package_is_the_one_imported(installed, tmp_path):
    site, env = installed
    out = _run([sys.executable, "-c", "import lth, lth.run; print(lth.__file__); print(lth.run.CONFIG_DIR)"],
               cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    module_file, config_dir = out.stdout.split()
    assert Path(module_file).is_relative_to(site), module_file
    assert Path(config_dir) == (site / "lth" / "conf").resolve()


def test_help_from_outside_the_repository(installed, tmp_path):
    _, env = installed
    out = _run([sys.executable, "-m", "lth.run", "--help"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "lenet300_100" in out.stdout and "quickstart" in out.stdout, out.stdout


def test_quickstart_from_outside_the_repository(installed, tmp_path):
    _, env = installed
    run_dir = tmp_path / "run"
    out = _run([sys.executable, "-m", "lth.run", "experiment=quickstart", "prune.rounds=1", "train.iterations=50",
                "logger=none", f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    results = run_dir / "results.csv"
    assert results.is_file(), out.stdout + out.stderr
    lines = results.read_text().splitlines()
    assert lines[0].startswith("round,") or "round" in lines[0].split(",")
    assert len(lines) >= 3  # header, the dense round, round 1


def test_the_wheel_ships_the_seed_launcher_where_hydra_finds_it(installed, tmp_path):
    site, env = installed
    code = ("from hydra.core.plugins import Plugins; from hydra.plugins.launcher import Launcher; "
            "import sys; [print(sys.modules[c.__module__].__file__) for c in Plugins.instance().discover(Launcher) "
            "if c.__name__ == 'SeedStackLauncher']")
    out = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert out.returncode == 0, out.stderr
    assert Path(out.stdout.strip()).is_relative_to(site), out.stdout  # hydra/launcher=lth_seeds
