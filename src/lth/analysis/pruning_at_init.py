"""Pruning at initialization (SNIP, GraSP, SynFlow, magnitude) and the 2021 sanity checks.

A mask is computed from θ0 before any training, by a per-weight score, to a given number of
surviving weights; then the masked network is trained like a ticket. Frankle, Dziugaite, Roy &
Carbin (ICLR 2021, "Pruning Neural Networks at Initialization: Why are We Missing the Mark?")
compare these masks with IMP and three ablations: shuffle each layer's mask
(:func:`shuffle_within_layers`), re-initialise the surviving weights (:func:`reinit_survivors`)
and invert the scores (``invert=True``: keep the lowest-scoring weights).

Conventions of this module
- ``names`` are the non-exempt prunable tensors (conv / linear weights); ``keep`` is the number
  of weights that survive among them (the caller takes it from the ticket's mask at the same
  level, so that totals match exactly). Selection is *global* over ``names``.
- Every score is "higher = more important = kept". For GraSP that is ``θ ⊙ Hg``, the negation of
  the paper's ``S(-θ) = -θ ⊙ Hg`` whose *highest* values the paper removes.
- The given model is never modified: scoring works on a deep copy, on the model's device.
  Scores come back on the CPU.
- Ties are broken as in :mod:`lth.pruning.magnitude`: among equal scores the weight that comes
  first (tensor order of ``names``, then flat index) is pruned first, so counts are exact and
  results deterministic.

docs/RESEARCH.md gives the formulas with their sources and every deviation from the papers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lth.pruning.magnitude import prune_smallest
from lth.pruning.mask import Mask
from lth.pruning.prunable import prunable_tensors

ScoreFn = Callable[..., dict[str, Tensor]]
Batches = Iterable[tuple[Tensor, Tensor]]

#: GraSP divides the logits by this temperature before the loss (the authors' code, T=200).
GRASP_TEMPERATURE = 200.0
#: SynFlow's number of prune-score iterations in the paper's experiments.
SYNFLOW_ITERATIONS = 100
METHODS = ("snip", "grasp", "synflow", "magnitude_init")


# ----------------------------------------------------------------------------- helpers
def _device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


def _scoring_copy(model: nn.Module) -> nn.Module:
    """A deep copy for gradient scores: BatchNorm in train mode (batch statistics, as in the
    training the mask is for), dropout off (deterministic scores), gradients enabled."""
    work = copy.deepcopy(model)
    work.train()
    for m in work.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    return work


def _params(model: nn.Module, names: Sequence[str]) -> list[Tensor]:
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}")
    return [params[n] for n in names]


def _batches_on(batches: Batches | None, device: torch.device, method: str) -> list[tuple[Tensor, Tensor]]:
    if batches is None:
        raise ValueError(f"{method} scores need training batches (batches=None was given)")
    out = [(x.to(device), y.to(device)) for x, y in batches]
    if not out:
        raise ValueError(f"{method} scores need at least one training batch")
    return out


# ----------------------------------------------------------------------------- scoring data
#: Examples per class SNIP and GraSP score on: the 2021 paper's code (``snip10`` / ``grasp10`` in its
#: scripts) and GraSP's own configs (``samples_per_class: 10``); SynFlow's repo draws 10 x classes.
EXAMPLES_PER_CLASS = 10


def class_balanced_sample(x: Tensor, y: Tensor, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """``per_class`` examples of every class of ``(x, y)``: the first ones of each class in a seeded
    random order (as the 2021 paper's code: shuffle the training set with the seed, keep the first
    ``per_class`` of each label). Returned in that order, on ``x``'s device; deterministic for a seed.
    Raises ValueError when a class has fewer than ``per_class`` examples."""
    if per_class < 1:
        raise ValueError(f"per_class must be at least 1, not {per_class}")
    gen = torch.Generator().manual_seed(int(seed))
    labels = y.cpu()
    order = torch.randperm(len(labels), generator=gen)
    shuffled = labels[order]
    keep = []
    for c in torch.unique(labels).tolist():
        where = order[shuffled == c]
        if len(where) < per_class:
            raise ValueError(f"class {c} has {len(where)} training examples, fewer than {per_class} per class")
        keep.append(where[:per_class])
    chosen = torch.cat(keep)
    chosen = order[torch.isin(order, chosen)]  # back into the shuffled order
    index = chosen.to(x.device)
    return x[index], y[index]


# ----------------------------------------------------------------------------- scores
def magnitude_scores(model: nn.Module, names: Sequence[str]) -> dict[str, Tensor]:
    """``|θ|`` of each tensor in ``names`` (magnitude pruning at initialization)."""
    params = _params(model, names)
    return {n: p.detach().abs().cpu().clone() for n, p in zip(names, params)}


def snip_scores(model: nn.Module, names: Sequence[str], batches: Batches) -> dict[str, Tensor]:
    """SNIP's connection sensitivity ``|g ⊙ θ|`` (Lee, Ajanthan & Torr, ICLR 2019).

    ``g = ∂L/∂θ`` of the mean cross-entropy, summed over ``batches`` (the paper uses one
    mini-batch). SNIP's score ``|∂L(c ⊙ θ)/∂c|`` at ``c = 1`` is exactly ``|g ⊙ θ|``; the
    paper's normalisation by the sum over all weights does not change the ranking and is left out.
    """
    work = _scoring_copy(model)
    params = _params(work, names)
    grads = [torch.zeros_like(p) for p in params]
    for x, y in _batches_on(batches, _device(work), "snip"):
        loss = F.cross_entropy(work(x), y)
        for acc, g in zip(grads, torch.autograd.grad(loss, params)):
            acc.add_(g)
    return {n: (g * p.detach()).abs().cpu() for n, g, p in zip(names, grads, params)}


def grasp_scores(
    model: nn.Module, names: Sequence[str], batches: Batches, *, temperature: float = GRASP_TEMPERATURE
) -> dict[str, Tensor]:
    """GraSP's score with "higher = keep": ``θ ⊙ Hg`` (Wang, Zhang & Grosse, ICLR 2020).

    The paper scores ``S(-θ) = -θ ⊙ Hg`` and removes the weights with the *highest* S (they
    reduce the gradient norm the least, or raise it); this returns ``-S`` so that, like the
    other scores, the highest values are kept. ``g`` is the gradient of the loss over all
    ``batches`` (summed), ``H`` the Hessian; ``Hg`` is the gradient of ``g_stopped · ∇L`` (a
    Hessian-vector product, summed over the batches). As in the authors' code the logits are
    divided by ``temperature`` (200) before the cross-entropy, and ``g`` and ``H`` run over all
    conv/linear weights of the network (not only ``names``: exempt tensors still carry
    gradient). The authors' normalisation by ``|Σ S|`` does not change the ranking and is left out.
    """
    work = _scoring_copy(model)
    data = _batches_on(batches, _device(work), "grasp")
    all_names = list(dict.fromkeys([t.name for t in prunable_tensors(work)] + list(names)))
    params = _params(work, all_names)
    g_stopped = [torch.zeros_like(p) for p in params]
    for x, y in data:
        loss = F.cross_entropy(work(x) / temperature, y)
        for acc, g in zip(g_stopped, torch.autograd.grad(loss, params)):
            acc.add_(g)
    hg = [torch.zeros_like(p) for p in params]
    for x, y in data:
        loss = F.cross_entropy(work(x) / temperature, y)
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((gs * g).sum() for gs, g in zip(g_stopped, grads))
        for acc, h in zip(hg, torch.autograd.grad(dot, params)):
            acc.add_(h)
    by_name = {n: (p.detach() * h).cpu() for n, p, h in zip(all_names, params, hg)}
    return {n: by_name[n] for n in names}


@torch.no_grad()
def _linearize(model: nn.Module) -> None:
    """SynFlow's linearised network: every floating parameter and buffer replaced by its absolute value."""
    for t in list(model.parameters()) + list(model.buffers()):
        if torch.is_floating_point(t):
            t.abs_()


def _infer_input_shape(model: nn.Module) -> tuple[int, ...]:
    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise ValueError("SynFlow needs the input shape: pass input_shape=(C, H, W) (or give the model an input_shape attribute)")


def _synflow_copy(model: nn.Module) -> nn.Module:
    work = copy.deepcopy(model).double().eval()
    _linearize(work)
    for p in work.parameters():
        p.requires_grad_(True)
        p.grad = None
    return work


def _synflow_scores_of(work: nn.Module, names: Sequence[str], shape: tuple[int, ...]) -> dict[str, Tensor]:
    params = _params(work, names)
    x = torch.ones((1, *shape), dtype=torch.float64, device=_device(work))
    grads = torch.autograd.grad(work(x).sum(), params)
    return {n: (g * p.detach()).abs().cpu() for n, g, p in zip(names, grads, params)}


def synflow_scores(
    model: nn.Module, names: Sequence[str], *, input_shape: Sequence[int] | None = None, mask: Mask | None = None
) -> dict[str, Tensor]:
    """One SynFlow score ``|∂R/∂θ ⊙ θ|`` with ``R = 1ᵀ f(1; |θ ⊙ μ|)`` (Tanaka et al., NeurIPS 2020).

    Data-free: the input is a single all-ones example of ``input_shape``; every parameter and
    buffer is replaced by its absolute value, pruned weights (``mask``) are zeroed, the network
    is in eval mode (BatchNorm uses its running statistics, dropout is off) and in float64, so
    that the product of many layers does not overflow or underflow. For a ReLU network without
    biases ``R = 1ᵀ |W_L| ... |W_1| 1``. Scores come back in float64 on the CPU.
    """
    shape = tuple(input_shape) if input_shape is not None else _infer_input_shape(model)
    work = _synflow_copy(model)
    if mask is not None:
        mask.apply_(work)
    return _synflow_scores_of(work, names, shape)


# ----------------------------------------------------------------------------- masks
def mask_from_scores(scores: dict[str, Tensor], keep: int, base: Mask, *, invert: bool = False) -> Mask:
    """Keep exactly ``keep`` weights of the tensors in ``scores``, chosen globally by score.

    Only weights alive in ``base`` can be kept (for a dense ``base`` that is every weight). The
    ``keep`` highest-scoring ones survive; ``invert=True`` keeps the ``keep`` *lowest* instead
    (the 2021 paper's "inverted scores" ablation). Tensors of ``base`` that are not in ``scores``
    (the exempt ones) are copied from ``base`` unchanged. Among equal scores the earliest weight
    (order of ``scores``, then flat index) is pruned first.
    """
    names = list(scores)
    unknown = [n for n in names if n not in base]
    if unknown:
        raise KeyError(f"scored tensors not in the base mask: {unknown}")
    if not names:
        if keep:
            raise ValueError(f"keep={keep} but no tensors were scored")
        return Mask({name: m.clone() for name, m in base.items()})
    for n in names:
        if scores[n].shape != base[n].shape:
            raise ValueError(f"{n}: score shape {tuple(scores[n].shape)} != mask shape {tuple(base[n].shape)}")
    if any(torch.isnan(scores[n]).any() for n in names):
        raise ValueError("scores contain NaN")
    n_alive = sum(int(base[n].sum()) for n in names)
    if not 0 <= keep <= n_alive:
        raise ValueError(f"keep={keep} but only {n_alive} weights are alive in the base mask")
    ranking = {n: -scores[n].double() if invert else scores[n].double() for n in names}
    return prune_smallest(base, ranking, n_alive - keep)


def synflow_mask(
    model: nn.Module,
    names: Sequence[str],
    keep: int,
    *,
    iterations: int = SYNFLOW_ITERATIONS,
    base: Mask | None = None,
    input_shape: Sequence[int] | None = None,
    invert: bool = False,
) -> Mask:
    """Iterative SynFlow: ``iterations`` rounds of score-then-prune down to ``keep`` weights.

    Algorithm 1 of Tanaka et al. (2020): after round ``k`` of ``n`` the fraction of the
    (initially alive) weights left is ``(keep / alive) ** (k / n)`` (the exponential schedule),
    each round re-scoring the network masked by the previous round's mask. Counts are rounded
    to whole weights and the last round keeps exactly ``keep``. ``base`` (default: dense) gives
    the starting mask and the tensors outside ``names``; no data is used. ``invert=True``
    inverts every round's selection.
    """
    if iterations < 1:
        raise ValueError("iterations must be at least 1")
    mask = Mask({n: m.clone() for n, m in (base if base is not None else Mask.dense(model)).items()})
    alive = sum(int(mask[n].sum()) for n in names)
    if not 0 <= keep <= alive:
        raise ValueError(f"keep={keep} but only {alive} weights are alive")
    shape = tuple(input_shape) if input_shape is not None else _infer_input_shape(model)
    work = _synflow_copy(model)  # one linearised float64 copy; each round's mask only removes weights
    for k in range(1, iterations + 1):
        if k == iterations or alive == 0:
            target = keep
        else:
            target = max(keep, int(round(alive * (keep / alive) ** (k / iterations))))
        mask.apply_(work)
        scores = _synflow_scores_of(work, names, shape)
        mask = mask_from_scores(scores, target, mask, invert=invert)
    return mask


def shuffle_within_layers(mask: Mask, seed: int, names: Sequence[str] | None = None) -> Mask:
    """The "random shuffling" ablation: each tensor's mask permuted at random (its count kept).

    Tensors not in ``names`` (default: all) are copied unchanged. Deterministic for a seed.
    """
    gen = torch.Generator().manual_seed(seed)
    chosen = set(mask) if names is None else set(names)
    out = Mask()
    for name, m in mask.items():
        if name in chosen:
            flat = m.flatten().cpu()
            out[name] = flat[torch.randperm(flat.numel(), generator=gen)].view_as(m)
        else:
            out[name] = m.clone()
    return out


def reinit_survivors(build: Callable[[int], nn.Module], seed: int, mask: Mask | None = None) -> dict[str, Tensor]:
    """The "reinitialization" ablation: a fresh ``state_dict`` drawn with ``seed`` (and masked).

    ``build(seed)`` must return the architecture initialised from ``seed`` (e.g.
    ``lambda s: build_model(arch, shape, classes, s)``); pass a seed other than the ticket's.
    The mask keeps the same weights, now with new initial values from the same distribution.
    """
    fresh = build(seed)
    if mask is not None:
        mask.apply_(fresh)
    return {k: v.detach().clone() for k, v in fresh.state_dict().items()}


# ----------------------------------------------------------------------------- entry point
def pruning_at_init_mask(
    method: str,
    model: nn.Module,
    names: Sequence[str],
    keep: int,
    base: Mask,
    batches: Batches | None = None,
    *,
    invert: bool = False,
    iterations: int = SYNFLOW_ITERATIONS,
    input_shape: Sequence[int] | None = None,
) -> Mask:
    """The mask of ``method`` at ``model``'s current weights (θ0), keeping ``keep`` of ``names``.

    ``method``: ``snip`` and ``grasp`` need ``batches`` (training batches); ``synflow`` (iterative,
    ``iterations`` rounds) and ``magnitude_init`` use none. ``invert`` applies the
    inverted-scores ablation. For SynFlow on a conv network, ``input_shape`` (C, H, W) is taken
    from the argument, else the model's ``input_shape`` attribute, else the shape of the first
    batch if any are given (their values are never used).
    """
    names = list(names)
    if method == "synflow":
        if input_shape is None and getattr(model, "input_shape", None) is None and batches is not None:
            first = next(iter(batches), None)
            if first is not None:
                input_shape = tuple(first[0].shape[1:])
        return synflow_mask(model, names, keep, iterations=iterations, base=base, input_shape=input_shape, invert=invert)
    if method == "snip":
        scores = snip_scores(model, names, batches)
    elif method == "grasp":
        scores = grasp_scores(model, names, batches)
    elif method == "magnitude_init":
        scores = magnitude_scores(model, names)
    else:
        raise ValueError(f"unknown pruning-at-initialization method {method!r}; one of {METHODS}")
    return mask_from_scores(scores, keep, base, invert=invert)
