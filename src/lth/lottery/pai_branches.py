"""Pruning-at-initialization branches and their sanity checks (Frankle, Dziugaite, Roy & Carbin,
ICLR 2021), beside the ticket: ``controls=[snip,grasp,synflow,magnitude_init]`` (any subset).

At each level a method's mask is computed from θ0 (θK when rewinding), never from trained weights,
by the method's own scores (``lth.analysis.pruning_at_init``), keeping exactly as many of the
non-exempt weights as the ticket keeps at that level (exempt tensors stay whole, as for the
ticket); the network then trains from θ0 (θK) with the ticket's budget, schedule and data order.

Sanity checks, each a branch of its own (``controls=[snip_shuffle]`` and so on):

- ``<method>_shuffle``: the method's mask shuffled within each layer (per-layer counts kept);
- ``<method>_reinit``: the method's mask, surviving weights re-initialised (a fresh draw);
- ``<method>_invert``: the scores inverted, keeping the lowest-scoring weights.

SNIP and GraSP score ``analysis.score_examples_per_class`` examples of every class of the training
split (10, the 2021 paper's code and GraSP's), drawn class-balanced with a seed of the experiment's seed
(the same examples for every method and level), without augmentation, as one batch, the network in
train mode (BatchNorm on the batch's statistics) as in both codes.
"""

from __future__ import annotations

from lth.analysis.pruning_at_init import (METHODS, class_balanced_sample, pruning_at_init_mask,
                                         shuffle_within_layers)
from lth.lottery.branches import Branch, branch_seed, register
from lth.pruning import Mask

CHECKS = ("shuffle", "reinit", "invert")
COLORS = {"snip": "tab:red", "grasp": "tab:brown", "synflow": "tab:pink", "magnitude_init": "tab:gray"}
MARKERS = {"snip": "D", "grasp": "P", "synflow": "X", "magnitude_init": "<"}
NAMES = {"snip": "SNIP", "grasp": "GraSP", "synflow": "SynFlow", "magnitude_init": "magnitude"}
LINESTYLES = {"": ":", "shuffle": (0, (1, 3)), "reinit": (0, (3, 1, 1, 1)), "invert": (0, (5, 5))}


class PruningAtInit(Branch):
    method: str = ""
    check: str = ""  # "" | shuffle | reinit | invert

    def mask(self, level: int) -> Mask:
        return self.own_mask(level, lambda: self.draw(level))

    def draw(self, level: int) -> Mask:
        lot = self.lot
        names = lot.rule.names
        keep = sum(int(lot.ticket_mask(level)[n].sum()) for n in names)
        dense = lot.ticket_mask(0)
        model = lot.model_at(lot.rewind_state).to(lot.device)
        batches = None
        if self.method in ("snip", "grasp"):
            x, y = lot.datamodule.splits["train"]
            batches = [class_balanced_sample(x, y, int(lot.cfg.analysis.score_examples_per_class),
                                             branch_seed(lot.seed, 0, "pruning_at_init", "data"))]
        mask = pruning_at_init_mask(self.method, model, names, keep, dense, batches, invert=self.check == "invert",
                                    iterations=int(lot.cfg.analysis.synflow_iterations),
                                    input_shape=tuple(lot.datamodule.input_shape))
        if self.check == "shuffle":
            mask = shuffle_within_layers(mask, branch_seed(lot.seed, level, self.name), names)
        return mask

    def start_state(self, level: int):
        if self.check == "reinit":
            return self.lot.new_model(branch_seed(self.lot.seed, level, self.name)).state_dict()
        return self.lot.rewind_state


def _define(method: str, check: str) -> type[PruningAtInit]:
    name = f"{method}_{check}" if check else method
    label = f"{NAMES[method]} (at init)" + (f", {check}" if check else "")
    style = dict(color=COLORS[method], marker=MARKERS[method] if not check else "x", linestyle=LINESTYLES[check],
                 label=label)
    settings = {"snip": ("analysis.score_examples_per_class",), "grasp": ("analysis.score_examples_per_class",),
                "synflow": ("analysis.synflow_iterations",)}.get(method, ())
    cls = type(f"PruningAtInit_{name}", (PruningAtInit,), {"name": name, "method": method, "check": check,
                                                              "settings": settings,
                                                              "style": style, "__doc__": f"{label}: {__doc__.split(chr(10))[0]}"})
    return register(cls)


for _method in METHODS:
    for _check in ("", *CHECKS):
        _define(_method, _check)
