"""The report's own figure: a rewind sweep against the rewind point K (the shared figures, against
% weights remaining, are ``lth.figures``)."""

from __future__ import annotations

from pathlib import Path

from lth.figures import save_figure  # first: it selects the Agg backend
from lth.report.rewind import REWIND_KEY, RewindSweep

import matplotlib.pyplot as plt  # noqa: E402,I001


def format_rewind_axis(ax, rewinds: list[int]) -> None:
    """Symmetric-log x axis of the rewind iteration: linear up to the smallest K > 0, so K = 0 shows;
    a labelled tick at every K of the sweep."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    positive = [k for k in rewinds if k > 0]
    ax.set_xscale("symlog", linthresh=min(positive) if positive else 1, linscale=0.5)
    ax.xaxis.set_major_locator(FixedLocator(sorted(set(rewinds))))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("rewind iteration K (symmetric log)")
    ax.grid(True, which="major", alpha=0.3)


def _draw(ax, points: list[dict], key: str, scale: float, color, label: str) -> None:
    pts = sorted((p for p in points if key in p), key=lambda p: p[REWIND_KEY])
    if not pts:
        return
    x = [p[REWIND_KEY] for p in pts]
    y = [p[key] * scale for p in pts]
    ax.plot(x, y, marker="o", markersize=4, linewidth=1.6, color=color, label=label, zorder=3)
    if all(f"{key}_ci_low" in p for p in pts):  # the 95% confidence interval over seeds
        lo = [y_ - p[f"{key}_ci_low"] * scale for y_, p in zip(y, pts)]
        hi = [p[f"{key}_ci_high"] * scale - y_ for y_, p in zip(y, pts)]
        ax.errorbar(x, y, yerr=[lo, hi], fmt="none", ecolor=color, capsize=3, linewidth=1, zorder=2)


def plot_rewind_sweep(sweep: RewindSweep, path: Path, title: str = ""):
    """Left: the ticket's test accuracy at early stop against K, one line per level; right (when the
    sweep trained the ``instability`` branch): the error barrier against K. Mean with error bars of the
    95% confidence interval over seeds. Returns the figure (already saved and closed)."""
    panels = 2 if sweep.has_instability else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels + 1.5, 4.2), squeeze=False)
    left = axes[0][0]
    levels = sorted({p["weights_remaining"] for p in sweep.points}, reverse=True)
    cmap = plt.get_cmap("viridis")
    for i, level in enumerate(levels):
        color = cmap(0.9 * i / max(len(levels) - 1, 1))
        pts = [p for p in sweep.points if p["weights_remaining"] == level]
        _draw(left, pts, "test_acc_at_es", 100.0, color, f"{level:.3g}%")
        if panels == 2:
            _draw(axes[0][1], pts, "instability", 100.0, color, f"{level:.3g}%")
    left.set_ylabel("ticket test accuracy at early stop (%)")
    left.set_title("accuracy of the ticket", fontsize=10)
    if panels == 2:
        right = axes[0][1]
        from lth.lottery.stability_branch import STABLE

        right.axhline(100 * STABLE, color="tab:red", linestyle=":", linewidth=1, label="stable below 2% (paper)")
        right.set_ylabel("error barrier (percentage points)")
        right.set_title("instability to SGD noise", fontsize=10)
    for ax in axes[0]:
        format_rewind_axis(ax, sweep.rewinds)
    handles, labels = axes[0][-1].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, title="% weights\nremaining", fontsize=7, title_fontsize=7,
                           loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig
