"""The one definition of "the same experiment": folder, W&B group and report agree; branches and
speed-only settings are outside it."""

from lth.identity import dense_hash, experiment_hash, setting_hash, setting_name
from lth.report import setting_config
from lth.tracking import setting_group
from tests.conftest import compose_config


def _hash(overrides, fn=experiment_hash):
    return fn(compose_config(overrides))


def test_override_order_does_not_matter_and_results_settings_do():
    base = _hash(["model=conv2", "seed=1", "prune.rounds=3"])
    assert _hash(["prune.rounds=3", "seed=1", "model=conv2"]) == base
    assert _hash(["model=conv2", "seed=2", "prune.rounds=3"]) != base
    assert _hash(["model=conv2", "seed=1", "prune.rounds=3", "optimizer.lr=0.01"]) != base


def test_speed_only_settings_and_branches_keep_the_folder():
    base = _hash(["model=conv2"])
    for outside in ("trainer.steps_per_call=1", "mask_gradients=true", "trainer.profiler=simple",
                    "eval_batch_size=500", "checkpoint_every=50", "trainer.enable_progress_bar=false",
                    "controls=[reinit]", "controls=[reinit,random_prune]"):
        assert _hash(["model=conv2", outside]) == base, outside


def test_the_device_is_part_of_the_identity_everywhere():
    """CPU and GPU runs are not bit-identical: folder, W&B group and report all keep them apart."""
    cpu, gpu = compose_config(["trainer=cpu"]), compose_config(["trainer=gpu"])
    assert experiment_hash(cpu) != experiment_hash(gpu)
    assert setting_group(cpu) != setting_group(gpu)
    saved = [compose_config(o) for o in (["trainer=cpu"], ["trainer=gpu"])]
    from omegaconf import OmegaConf

    as_saved = [OmegaConf.to_container(c, resolve=True) for c in saved]  # what config.yaml holds
    assert setting_config(as_saved[0]) != setting_config(as_saved[1])


def test_seeds_are_trials_of_one_setting_in_wandb_and_the_report():
    a, b = compose_config(["seed=1"]), compose_config(["seed=2"])
    assert experiment_hash(a) != experiment_hash(b)
    assert setting_hash(a) == setting_hash(b) and setting_name(a) == setting_group(b)
    from omegaconf import OmegaConf

    assert setting_config(OmegaConf.to_container(a, resolve=True)) == setting_config(OmegaConf.to_container(b, resolve=True))


def test_dense_round_identity_ignores_pruning_and_rewinding_only():
    base = _hash([], dense_hash)
    for pruning in ("rewind_iteration=100", "prune=global", "prune.rounds=3", "strategy=continue", "model.rates.fc=0.3"):
        assert _hash([pruning], dense_hash) == base, pruning
    for training in ("seed=1", "optimizer.lr=0.01", "train.iterations=500", "lr_warmup=true", "eval_every=50"):
        assert _hash([training], dense_hash) != base, training
