"""The branch registry: every kind of network trained at a sparsity level, one class each.

A branch decides, at a level, its **mask**, its **starting state** (every parameter and buffer),
its **start iteration**, its **data order**, whether its final weights are kept, and how it is
drawn in figures. The lottery (``lth.lottery.plan``) trains every selected branch at every level,
in registry order. Branches are not part of an experiment's identity (``lth.identity``): adding
one to a finished experiment trains only its networks.

To add a branch: subclass :class:`Branch` in one file, decorate it with :func:`register`, import
that file in ``lth/lottery/registry.py`` (which assembles the registry), and give it a config switch
and tests.
"""

from __future__ import annotations

import hashlib
from functools import cached_property
from typing import TYPE_CHECKING, ClassVar

import torch

from lth.distributed import sync_mask
from lth.figures import register_branch_style
from lth.pruning import Mask, random_mask_like

if TYPE_CHECKING:
    from lth.lottery.plan import Lottery

REGISTRY: dict[str, type[Branch]] = {}


def register(cls: type[Branch]) -> type[Branch]:
    REGISTRY[cls.name] = cls
    register_branch_style(cls.name, **cls.style)
    return cls


def branch_seed(seed: int, level: int, branch: str, purpose: str = "") -> int:
    """A seed for a branch's random draw, distinct for every (seed, level, branch, purpose).

    31 bits: data orders multiply it by ~1e6 (``lth.data.stream``) and must stay in int64."""
    digest = hashlib.sha256(f"{seed}/{level}/{branch}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") >> 1


class Branch:
    name: ClassVar[str]
    style: ClassVar[dict] = {}  # matplotlib style: color, marker, linestyle, label
    control: ClassVar[bool] = True  # selectable with controls=[...]
    first_level: ClassVar[int] = 1
    keep_final: ClassVar[bool] = False  # save final.pt (weights later levels or analyses need)
    settings: ClassVar[tuple[str, ...]] = ()  # the analysis.* keys it reads: they key its folder

    @cached_property
    def key(self) -> str:
        """The branch's folder name at a level: its name, plus a digest of its ``settings`` when it has some
        (``snip-3fa9c2d1``), so a result computed under other settings is never taken for this one."""
        from lth.identity import branch_digest

        return f"{self.name}-{branch_digest(self.lot.cfg, self.settings)}" if self.settings else self.name

    def __init__(self, lottery: Lottery):
        self.lot = lottery

    def mask(self, level: int) -> Mask:
        return self.lot.ticket_mask(level)

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        return self.lot.rewind_state

    def start_iteration(self, level: int) -> int:
        return self.lot.rewind

    def data_seed(self, level: int) -> int:
        return self.lot.seed  # every round sees the same data order: rounds differ only in their mask

    def finish(self, level: int, row: dict) -> dict:
        """Add analyses to a freshly trained row (e.g. instability); default: nothing."""
        return row

    def own_mask(self, level: int, draw) -> Mask:
        """A mask of this branch's own, computed once by ``draw()`` and saved in its folder."""
        path = self.lot.layout.branch_mask(level, self.key)
        if path.exists():
            return sync_mask(Mask(self.lot.layout.read(path)))
        mask = sync_mask(draw())  # DDP: rank 0's mask on every rank (checked by checksum)
        mask.save(path)
        return mask


@register
class Ticket(Branch):
    """IMP's winning ticket; level 0 is the dense network trained from θ0."""

    name = "ticket"
    style = dict(color="tab:blue", marker="o", linestyle="-", label="winning ticket", zorder=4)
    control = False
    first_level = 0
    keep_final = True

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        return self.lot.theta0 if level == 0 else self.lot.rewind_state

    def start_iteration(self, level: int) -> int:
        return 0 if level == 0 else self.lot.rewind


@register
class Continued(Branch):
    """Strategy 2's search: keeps training the pruned network between rounds (``strategy=continue``)."""

    name = "continued"
    style = dict(color="tab:purple", marker="v", linestyle="-", label="continued training (search)")
    control = False
    keep_final = True

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        return self.lot.final_weights(level - 1, "continued" if level > 1 else "ticket")


@register
class Reinit(Branch):
    """Control: the ticket's mask with a fresh random initialisation θ0'."""

    name = "reinit"
    style = dict(color="tab:orange", marker="s", linestyle="--", label="random reinit")

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        return self.lot.new_model(branch_seed(self.lot.seed, level, self.name)).state_dict()


@register
class RandomPrune(Branch):
    """Control: a random mask with the ticket's per-tensor counts, from θ0 (θK)."""

    name = "random_prune"
    style = dict(color="tab:green", marker="^", linestyle="--", label="random pruning")

    def mask(self, level: int) -> Mask:
        seed = branch_seed(self.lot.seed, level, self.name)
        return self.own_mask(level, lambda: random_mask_like(self.lot.ticket_mask(level), seed))


def selected(cfg) -> list[str]:
    """The branches an experiment trains, in registry order: the ticket, Strategy 2's search, the
    controls, and the analyses switched on."""
    wanted = {"ticket", *(str(c) for c in cfg.get("controls", []) or [])}
    if cfg.get("strategy", "reset") == "continue":
        wanted.add("continued")
    for name, cls in REGISTRY.items():
        switch = getattr(cls, "switch", None)  # branches switched on by a boolean key (instability=true)
        if switch and cfg.get(switch, False):
            wanted.add(name)
    return [name for name in REGISTRY if name in wanted]


def order(branch: str) -> int:
    names = list(REGISTRY)
    return names.index(branch) if branch in names else len(names)


def controls() -> tuple[str, ...]:
    """The registered branches that ``controls=[...]`` selects."""
    return tuple(name for name, cls in REGISTRY.items() if cls.control)
