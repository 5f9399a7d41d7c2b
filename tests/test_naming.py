"""Experiment identity: the same settings find the same folder; speed-only settings do not change it."""

from lth.naming import config_hash
from tests.conftest import compose_config


def _hash(overrides):
    return config_hash(compose_config(overrides))


def test_override_order_does_not_matter_and_results_settings_do():
    base = _hash(["model=conv2", "seed=1", "prune.rounds=3"])
    assert _hash(["prune.rounds=3", "seed=1", "model=conv2"]) == base
    assert _hash(["model=conv2", "seed=2", "prune.rounds=3"]) != base
    assert _hash(["model=conv2", "seed=1", "prune.rounds=3", "optimizer.lr=0.01"]) != base


def test_speed_only_settings_keep_the_folder():
    base = _hash(["model=conv2"])
    for speed_only in ("trainer.steps_per_call=1", "mask_gradients=true", "trainer.profiler=simple",
                       "eval_batch_size=500", "checkpoint_every=50", "trainer.enable_progress_bar=false"):
        assert _hash(["model=conv2", speed_only]) == base, speed_only
