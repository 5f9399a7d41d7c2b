"""Algorithms of the follow-up research, as library code (docs/RESEARCH.md).

- :mod:`lth.analysis.instability`: linear mode connectivity / error barrier
  (Frankle, Dziugaite, Roy & Carbin, ICML 2020).
- :mod:`lth.analysis.pruning_at_init`: SNIP, GraSP, SynFlow and magnitude masks at
  initialization, and the sanity checks of Frankle, Dziugaite, Roy & Carbin (ICLR 2021).
"""

from lth.analysis.instability import error_barrier, interpolate_state, path_errors, recompute_batchnorm_stats
from lth.analysis.pruning_at_init import (
    ScoreFn,
    grasp_scores,
    magnitude_scores,
    mask_from_scores,
    pruning_at_init_mask,
    reinit_survivors,
    shuffle_within_layers,
    snip_scores,
    synflow_mask,
    synflow_scores,
)

__all__ = [
    "ScoreFn",
    "error_barrier",
    "grasp_scores",
    "interpolate_state",
    "magnitude_scores",
    "mask_from_scores",
    "path_errors",
    "pruning_at_init_mask",
    "recompute_batchnorm_stats",
    "reinit_survivors",
    "shuffle_within_layers",
    "snip_scores",
    "synflow_mask",
    "synflow_scores",
]
