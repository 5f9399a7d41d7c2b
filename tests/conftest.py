"""Shared fixtures: the real data in ../shared/data, Hydra composition, quiet offline W&B."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lth.identity import register_resolvers
from lth.run import CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

register_resolvers()
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real MNIST / CIFAR-10 files beside the project (never downloaded in tests)."""
    root = Path(os.environ.get("LTH_TEST_DATA_DIR", SHARED_DATA))
    if not (root / "MNIST").exists():
        pytest.fail(f"test data not found under {root}; set LTH_TEST_DATA_DIR to the folder with MNIST/ and cifar-10-batches-py/")
    return root


def compose_config(overrides: list[str]):
    """Compose conf/config.yaml with ``overrides`` as the command line would (no run dir)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides)


# Settings that keep test experiments small and quiet.
FAST = ["logger=none", "trainer=cpu", "trainer.enable_progress_bar=false"]


@pytest.fixture
def compose_cfg():
    return compose_config
