"""The lottery-ticket procedure: the level loop (plan), its branches, its folder layout."""

from lth.lottery.plan import ExperimentError, Lottery

__all__ = ["ExperimentError", "Lottery"]
