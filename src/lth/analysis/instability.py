"""Instability analysis: linear mode connectivity of two trained copies of one network.

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket Hypothesis",
ICML 2020. From one starting point (θ_K and a mask) two copies are trained under different SGD
noise (data order, augmentation) to W1 and W2. The error is evaluated along the straight line
``(1 - α) W1 + α W2`` for evenly spaced α in [0, 1] (30 values in the paper); the *error barrier
height* is the largest error on that path minus the mean of the two ends' errors. A network is
*stable* (linearly mode connected) when the barrier is about 0 (the paper's threshold is 2%).

What is interpolated is the whole ``state_dict``: parameters and floating buffers (BatchNorm
running mean and variance). ``bn="interpolate"`` (the default, what interpolating the network's
state does) evaluates with the interpolated running statistics; ``bn="recompute"`` re-estimates
them for every interpolated network on training inputs first. docs/RESEARCH.md says why the
default is what it is.

Nothing here trains; the lead's experiment loop trains the two copies and calls
:func:`path_errors` and :func:`error_barrier`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from lth.training.evaluation import evaluate
from lth.pruning.mask import Mask

#: The paper evaluates 30 evenly spaced values of α (the ends included).
PAPER_POINTS = 30
BN_MODES = ("interpolate", "recompute")


def interpolate_state(a: Mapping[str, Tensor], b: Mapping[str, Tensor], alpha: float) -> dict[str, Tensor]:
    """``(1 - alpha) * a + alpha * b`` for every floating tensor; other tensors taken from ``a``.

    Integer buffers (BatchNorm's ``num_batches_tracked``) cannot be interpolated and come from
    ``a``. ``alpha=0`` gives exactly ``a`` and ``alpha=1`` exactly ``b`` (so the ends of a path
    reproduce the two networks' errors bit for bit).
    """
    if a.keys() != b.keys():
        missing = sorted(set(a) ^ set(b))
        raise ValueError(f"the two states hold different tensors: {missing[:5]}")
    alpha = float(alpha)
    out: dict[str, Tensor] = {}
    for name, ta in a.items():
        tb = b[name]
        if ta.shape != tb.shape:
            raise ValueError(f"{name}: shapes differ ({tuple(ta.shape)} vs {tuple(tb.shape)})")
        if torch.is_floating_point(ta):
            tb = tb.to(device=ta.device, dtype=ta.dtype)
            out[name] = (1.0 - alpha) * ta + alpha * tb
        else:
            out[name] = ta.clone()
    return out


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


@torch.no_grad()
def recompute_batchnorm_stats(model: nn.Module, train_x: Tensor, batch_size: int) -> None:
    """Re-estimate every BatchNorm's running mean and variance on ``train_x`` (in place).

    The statistics are reset and accumulated as a cumulative average (``momentum=None``) over
    ``train_x`` in batches of ``batch_size``, with only the BatchNorm layers in train mode (so
    dropout, if any, stays off). The model is left in eval mode with its momenta restored.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for i in range(0, len(train_x), batch_size):
            model(train_x[i : i + batch_size])
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
        model.eval()


def path_errors(
    model: nn.Module,
    a: Mapping[str, Tensor],
    b: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    points: int = PAPER_POINTS,
    batch_size: int = 1000,
    bn: str = "interpolate",
    train_x: Tensor | None = None,
    mask: Mask | None = None,
) -> list[dict]:
    """Error and loss on ``(x, y)`` at ``points`` evenly spaced α from 0 (= ``a``) to 1 (= ``b``).

    Returns one ``{"alpha", "error", "loss"}`` per α, ``error = 1 - accuracy``, evaluated with
    :func:`lth.training.evaluation.evaluate` (eval mode, mean cross-entropy). ``model`` is only the
    architecture: the work is done on a copy of it (on the model's device), so ``model`` keeps
    its parameters, buffers and train/eval mode.

    ``bn="interpolate"``: the interpolated BatchNorm running statistics are used as they are.
    ``bn="recompute"``: before each evaluation the running statistics are re-estimated on
    ``train_x`` (:func:`recompute_batchnorm_stats`, in batches of ``batch_size``). For a network
    without BatchNorm the two agree exactly. ``mask``, when given, is applied to every
    interpolated network (both ends share it, so this only guards against a mismatched pair).
    """
    if bn not in BN_MODES:
        raise ValueError(f"bn must be one of {BN_MODES}, not {bn!r}")
    if points < 2:
        raise ValueError("points must be at least 2 (the two ends)")
    recompute = bn == "recompute" and _has_batchnorm(model)
    if recompute and train_x is None:
        raise ValueError('bn="recompute" needs train_x (training inputs to estimate BatchNorm statistics on)')
    work = copy.deepcopy(model)
    device = next(work.parameters()).device
    x, y = x.to(device), y.to(device)
    if recompute:
        train_x = train_x.to(device)
    results = []
    for i in range(points):
        alpha = i / (points - 1)
        work.load_state_dict(interpolate_state(a, b, alpha))
        if mask is not None:
            mask.apply_(work)
        if recompute:
            recompute_batchnorm_stats(work, train_x, batch_size)
        loss, acc = evaluate(work, x, y, batch_size)
        results.append({"alpha": alpha, "error": 1.0 - acc, "loss": loss})
    return results


def error_barrier(errors: Sequence[float] | Sequence[Mapping]) -> float:
    """The paper's error barrier height: max error on the path minus the mean of the ends' errors.

    ``errors`` is the error at evenly spaced α with the two ends first and last (a list of
    floats, or :func:`path_errors`'s dicts). It is not clipped at 0, as in the paper; since the
    ends are on the path, the maximum is at least the larger end and the barrier is never
    negative anyway.
    """
    values = [float(e["error"]) if isinstance(e, Mapping) else float(e) for e in errors]
    if len(values) < 2:
        raise ValueError("need the errors of at least the two ends")
    return max(values) - 0.5 * (values[0] + values[-1])
