"""The lottery-ticket procedure: the level loop (plan), its branches, its folder layout."""

from lth.lottery.plan import ExperimentError, Lottery
from lth.lottery import pai_branches, stability_branch  # noqa: E402,F401  (their branches register on import)

__all__ = ["ExperimentError", "Lottery"]
