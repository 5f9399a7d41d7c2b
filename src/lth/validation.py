"""Checks of the composed configuration before any training starts."""

from __future__ import annotations

from omegaconf import DictConfig


class ConfigError(ValueError):
    """A setting is wrong; the message names it and says how to fix it."""


def validate_config(cfg: DictConfig) -> None:
    def positive_int(key: str, value) -> None:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ConfigError(f"{key}={value!r} must be a positive integer")

    positive_int("train.iterations", cfg.train.iterations)
    positive_int("train.batch_size", cfg.train.batch_size)
    positive_int("eval_every", cfg.eval_every)
    positive_int("prune.rounds", cfg.prune.rounds)
    if not 0 <= int(cfg.rewind_iteration) < int(cfg.train.iterations):
        raise ConfigError(
            f"rewind_iteration={cfg.rewind_iteration} must be in [0, train.iterations={cfg.train.iterations})"
        )
    if cfg.strategy not in ("reset", "continue"):
        raise ConfigError(f"strategy={cfg.strategy!r} must be reset or continue")
    for c in cfg.controls:
        if c not in ("reinit", "random_prune"):
            raise ConfigError(f"controls contains {c!r}; choose from [reinit, random_prune]")
