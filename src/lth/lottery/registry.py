"""Every branch, registered: :mod:`lth.lottery.branches` (the base class, the ticket and its controls)
plus the branches in files of their own. Read the registry from here, never from ``branches`` alone."""

from lth.lottery import pai_branches, stability_branch  # noqa: F401  (their branches register on import)
from lth.lottery.branches import REGISTRY, controls, order, selected

__all__ = ["REGISTRY", "controls", "order", "selected"]
