"""Small things a user notices: the typing marker, ignored build folders, the quick start's stated time."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest

from tests.conftest import REPO


def test_py_typed_is_in_the_package_and_declared():
    assert (REPO / "src" / "lth" / "py.typed").is_file()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "py.typed" in pyproject["tool"]["setuptools"]["package-data"]["lth"]


@pytest.mark.parametrize("path", ["build/lib/lth/run.py", "dist/lth-0.1.0-py3-none-any.whl", "outputs/runs/x"])
def test_build_outputs_are_ignored(path):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    assert subprocess.run(["git", "check-ignore", "-q", path], cwd=REPO).returncode == 0, path


def test_quickstart_config_states_the_readme_time():
    readme = re.search(r"(\d+)–(\d+) s\s+on an idle 2-core CPU", (REPO / "README.md").read_text())
    assert readme, "README no longer states the quick start's time"
    config = (REPO / "conf" / "experiment" / "quickstart.yaml").read_text()
    assert f"{readme[1]}-{readme[2]} s on an idle 2-core CPU" in config
    assert "minute" not in config
