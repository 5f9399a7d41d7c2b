"""The lottery-ticket procedure: the level loop (plan), its branches, its folder layout (imported on first
use: the configuration's checks read :mod:`lth.lottery.layout` without torch)."""

from lth import lazy

__all__ = ["ExperimentError", "Lottery"]
__getattr__ = lazy(__name__, {"ExperimentError": "plan", "Lottery": "plan"})
