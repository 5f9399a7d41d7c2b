"""``python -m lth.run``: one Hydra job = one lottery-ticket experiment.

Examples::

    python -m lth.run experiment=quickstart
    python -m lth.run model=conv2 controls=[reinit,random_prune]
    python -m lth.run model=vgg19 prune=global lr_warmup=true -m
"""

from __future__ import annotations

import logging
import sys

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth.naming import register_resolvers

register_resolvers()
log = logging.getLogger("lth")

# The configs live in the repository's top-level conf/ (the package is installed editable).
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    from lth.experiment import Experiment, ExperimentError
    from lth.validation import ConfigError, validate_config

    try:
        validate_config(cfg)
        out_dir = HydraConfig.get().runtime.output_dir
        Experiment(cfg, out_dir).run()
    except (ConfigError, ExperimentError) as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
