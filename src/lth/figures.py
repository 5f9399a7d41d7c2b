"""Figures like the paper's: test accuracy at early stop and early-stopping iteration
against % weights remaining (log axis, decreasing to the right), one line per branch."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # noqa: E402

from lth.storage import atomic_write_bytes  # noqa: E402

BRANCH_STYLE = {
    "ticket": dict(color="tab:blue", marker="o", label="winning ticket"),
    "continued": dict(color="tab:purple", marker="v", label="continued training (search)"),
    "reinit": dict(color="tab:orange", marker="s", label="random reinit"),
    "random_prune": dict(color="tab:green", marker="^", label="random pruning"),
}


def save_figure(fig, path: Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def format_pct_axis(ax, levels: list[float] | None = None) -> None:
    """Log x axis of % weights remaining, decreasing to the right, ticks at the (thinned) levels."""
    ax.set_xscale("log")
    ax.invert_xaxis()
    if levels and len(levels) > 1:
        ticks, last = [], None
        for v in levels:  # keep ticks at least ~15% apart on the log axis
            if last is None or last / v >= 1.15:
                ticks.append(v)
                last = v
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.3g}"))
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    for label in ax.get_xticklabels():
        label.set_fontsize(8)
    ax.set_xlabel("% of weights remaining")
    ax.grid(True, which="both", alpha=0.3)


def plot_sparsity_figure(series: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """``series``: branch -> points with ``weights_remaining``, ``test_acc_at_es``, ``es_iteration``
    and optionally ``*_min`` / ``*_max`` bands (mean with min/max over trials)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    cycle = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    markers = "osD^v<>px*h"
    levels: set[float] = set()
    for i, (branch, points) in enumerate(series.items()):
        pts = sorted((p for p in points if p.get("test_acc_at_es") is not None), key=lambda p: -p["weights_remaining"])
        if not pts:
            continue
        style = dict(BRANCH_STYLE.get(branch) or dict(label=branch, color=cycle[i % len(cycle)], marker=markers[i % len(markers)]))
        style.update(markersize=4, linewidth=1.6)
        x = [p["weights_remaining"] for p in pts]
        levels.update(x)
        for ax, key, scale in ((axes[0], "test_acc_at_es", 100.0), (axes[1], "es_iteration", 1.0)):
            y = [p[key] * scale for p in pts]
            ax.plot(x, y, **style)
            if all(f"{key}_min" in p for p in pts) and len(pts) == 1:  # a lone point: an error bar
                ax.errorbar(x, y, yerr=[[y[0] - pts[0][f"{key}_min"] * scale], [pts[0][f"{key}_max"] * scale - y[0]]],
                            color=style.get("color"), capsize=3, linewidth=1)
            elif all(f"{key}_min" in p for p in pts):
                ax.fill_between(x, [p[f"{key}_min"] * scale for p in pts], [p[f"{key}_max"] * scale for p in pts],
                                color=style.get("color"), alpha=0.2, linewidth=0)
    axes[0].set_ylabel("test accuracy at early stop (%)")
    axes[1].set_ylabel("early-stop iteration (min validation loss)")
    for ax in axes:
        format_pct_axis(ax, sorted(levels, reverse=True))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for both panels, below them, so it never hides a curve
        long = max(len(label) for label in labels) > 30
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=8, frameon=False,
                   ncol=1 if long else min(len(labels), 4))
    if title:
        fig.suptitle(title)
    save_figure(fig, path)


def plot_learning_curves(curves: dict[str, list[dict]], path: Path, title: str = "") -> None:
    """``curves``: label -> evaluation points; test accuracy against iteration, one line per level
    (with a min/max band when the points carry ``test_acc_min`` / ``test_acc_max``)."""
    fig, ax = plt.subplots(figsize=(7, 4.2))
    cmap = plt.get_cmap("viridis")
    n = max(len(curves), 1)
    for i, (label, points) in enumerate(curves.items()):
        color = cmap(0.9 * i / max(n - 1, 1))
        x = [p["iteration"] for p in points]
        ax.plot(x, [100 * p["test_acc"] for p in points], label=label, color=color, linewidth=1.6)
        if points and all("test_acc_min" in p for p in points):
            ax.fill_between(x, [100 * p["test_acc_min"] for p in points], [100 * p["test_acc_max"] for p in points],
                            color=color, alpha=0.18, linewidth=0)
    ax.set_xlabel("training iteration")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, alpha=0.3)
    if curves:
        ax.legend(title="% weights remaining", fontsize=7, title_fontsize=7, ncol=2)
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
