"""Figures like the paper's: test accuracy at early stop and early-stopping iteration
against % weights remaining (log axis, decreasing to the right), one line per branch.

Readable from 2 to 30 levels and ~10 branches: every level gets a tick mark, and as many of
them a label as fit side by side (measured with the renderer when the figure is saved; the
first and the last level are always labelled); each branch has its own color, marker and line
style (``BRANCH_STYLE``, with a fallback for names it does not know, such as the setting labels
of the sweep report's comparison); legends sit outside the plots, so they never hide a curve.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter, NullLocator  # noqa: E402

from lth.storage import atomic_write_bytes  # noqa: E402

# The style of each branch in every figure: the ``style`` of its class in the branch registry
# (the ticket solid and on top, controls dashed, pruning at initialisation dotted).
BRANCH_STYLE: dict[str, dict] = {}  # filled by lth.lottery.branches.register from each branch's ``style``
# For names not registered (new branches, the report's setting labels): colors and markers
# not used above first, then the rest.
_FALLBACK_COLORS = ["tab:cyan", "black", "gold", "navy", "teal", "crimson", "darkkhaki", "slateblue",
                    "tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown"]
_FALLBACK_MARKERS = ["*", "h", "p", "d", "H", "8", "o", "s", "^", "v", "D", "P", "X", "<", ">"]
_FALLBACK_LINESTYLES = ["-", "--", "-.", ":"]

TICK_FONTSIZE = 8
TICK_GAP_PX = 6  # free space between two x tick labels, at the figure's dpi


def register_branch_style(name: str, **style) -> None:
    """Give branch ``name`` its style (matplotlib line properties and ``label``)."""
    BRANCH_STYLE[name] = dict(style)


def branch_style(name: str, index: int = 0) -> dict:
    """The style of branch ``name``; for an unknown name, one derived from ``index`` (its rank
    among the unknown names of a figure), labelled with the name itself."""
    if name in BRANCH_STYLE:
        return dict(BRANCH_STYLE[name])
    return dict(color=_FALLBACK_COLORS[index % len(_FALLBACK_COLORS)],
                marker=_FALLBACK_MARKERS[index % len(_FALLBACK_MARKERS)],
                linestyle=_FALLBACK_LINESTYLES[(index // len(_FALLBACK_COLORS)) % len(_FALLBACK_LINESTYLES)],
                label=name)


def save_figure(fig, path: Path) -> None:
    fit_pct_tick_labels(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=130, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(Path(path), buf.getvalue())


def _pct_label(v: float) -> str:
    return f"{v:.3g}"


def format_pct_axis(ax, levels: list[float] | None = None) -> None:
    """Log x axis of % weights remaining, decreasing to the right: a tick mark at every level and
    a label at as many as fit (chosen when the figure is saved, see ``fit_pct_tick_labels``)."""
    ax.set_xscale("log")
    if not ax.xaxis_inverted():
        ax.invert_xaxis()
    levels = sorted({float(v) for v in levels or [] if v and v > 0}, reverse=True)
    if levels:
        ax.xaxis.set_major_locator(FixedLocator(levels))
        ax.xaxis.set_minor_locator(NullLocator())  # log decades' minor ticks would fall between the levels
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _pct_label(v)))
        ax._lth_pct_levels = levels
    else:
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.tick_params(axis="x", which="major", labelsize=TICK_FONTSIZE)
    ax.set_xlabel("% of weights remaining")
    ax.grid(True, which="major", alpha=0.3)


def _label_spans(ax, levels: list[float], renderer) -> list[tuple[float, float]]:
    """Each level's label as (left, right) in display pixels."""
    font = matplotlib.font_manager.FontProperties(size=TICK_FONTSIZE)
    spans = []
    for v in levels:
        x = ax.transData.transform((v, 1.0))[0]
        w, _, _ = renderer.get_text_width_height_descent(_pct_label(v), font, ismath=False)
        spans.append((x - w / 2, x + w / 2))
    return spans


def _labelled(spans: list[tuple[float, float]], gap: float) -> list[int]:
    """Indices of the levels to label: every k-th from the first with the smallest k whose labels
    do not touch, always including the last (which replaces its neighbour if they would touch)."""
    n = len(spans)

    def apart(i: int, j: int) -> bool:
        (a0, a1), (b0, b1) = sorted((spans[i], spans[j]))
        return a1 + gap <= b0

    for k in range(1, n + 1):
        chosen = list(range(0, n, k))
        if chosen[-1] != n - 1:
            if len(chosen) > 1 and not apart(chosen[-1], n - 1):
                chosen[-1] = n - 1
            else:
                chosen.append(n - 1)
        if all(apart(i, j) for i, j in zip(chosen, chosen[1:])):
            return chosen
    return [0]


def fit_pct_tick_labels(fig) -> None:
    """Label as many levels as fit on every %-remaining axis of ``fig``; the others keep an
    unlabelled tick mark. Needs the final axes size, so it runs when the figure is saved."""
    axes = [ax for ax in fig.axes if getattr(ax, "_lth_pct_levels", None)]
    if not axes:
        return
    fig.canvas.draw()  # the data limits and the layout are final now
    renderer = fig.canvas.get_renderer()
    gap = TICK_GAP_PX * fig.dpi / 100
    for ax in axes:
        levels = [v for v in ax._lth_pct_levels if _in_view(ax, v)]
        if len(levels) < 2:
            continue
        keep = _labelled(_label_spans(ax, levels, renderer), gap)
        labelled = [levels[i] for i in keep]
        ax.xaxis.set_major_locator(FixedLocator(labelled))
        ax.xaxis.set_minor_locator(FixedLocator([v for v in levels if v not in labelled]))
        ax.grid(True, which="minor", alpha=0.15)


def _in_view(ax, v: float) -> bool:
    lo, hi = sorted(ax.get_xlim())
    return lo <= v <= hi


def plot_sparsity_figure(series: dict[str, list[dict]], path: Path, title: str = "",
                         band: tuple[str, str] = ("_min", "_max")):
    """``series``: branch -> points with ``weights_remaining``, ``test_acc_at_es``, ``es_iteration``
    and optionally a band around the mean, ``<key><band[0]>`` to ``<key><band[1]>`` (min/max over
    trials by default; the report draws the 95% confidence interval). Returns the figure (already
    saved and closed)."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    levels: set[float] = set()
    drawn = [(b, pts) for b, pts in series.items()
             if any(p.get("test_acc_at_es") is not None for p in pts)]
    many = len(drawn) > 4
    band_alpha = 0.2 if len(drawn) <= 2 else max(0.05, 0.3 / len(drawn))  # overlapping bands stay see-through
    unknown = 0
    for branch, points in drawn:
        pts = sorted((p for p in points if p.get("test_acc_at_es") is not None), key=lambda p: -p["weights_remaining"])
        style = branch_style(branch, unknown)
        unknown += branch not in BRANCH_STYLE
        n_points = len(pts)
        style.setdefault("zorder", 3)
        style.update(markersize=4 if n_points <= 16 else 3, linewidth=1.3 if many else 1.6)
        x = [p["weights_remaining"] for p in pts]
        levels.update(x)
        for ax, key, scale in ((axes[0], "test_acc_at_es", 100.0), (axes[1], "es_iteration", 1.0)):
            y = [p[key] * scale for p in pts]
            ax.plot(x, y, **style)
            if all(p.get(key + band[0]) is not None and p.get(key + band[1]) is not None for p in pts):
                lo = [p[key + band[0]] * scale for p in pts]
                hi = [p[key + band[1]] * scale for p in pts]
                if len(pts) == 1:  # a lone point: an error bar
                    ax.errorbar(x, y, yerr=[[y[0] - lo[0]], [hi[0] - y[0]]], color=style.get("color"), capsize=3,
                                linewidth=1)
                else:
                    ax.fill_between(x, lo, hi, color=style.get("color"), alpha=band_alpha, linewidth=0, zorder=1)
    axes[0].set_ylabel("test accuracy at early stop (%)")
    axes[1].set_ylabel("early-stop iteration (min validation loss)")
    for ax in axes:
        format_pct_axis(ax, sorted(levels, reverse=True))
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:  # one legend for both panels, below them, so it never hides a curve
        longest = max(len(label) for label in labels)
        ncol = max(1, min(len(labels), 5, int(150 // (longest + 8))))  # as many columns as fit 11 inches
        fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, -0.01), fontsize=8, frameon=False,
                   ncol=ncol)
    if not drawn:  # no network finished with a test accuracy (e.g. every one diverged): say so, not a blank plot
        for ax in axes:
            ax.text(0.5, 0.5, "no network to draw: every one diverged\nor has no test accuracy (results.csv)",
                    ha="center", va="center", transform=ax.transAxes, color="0.4")
    if title:
        fig.suptitle(title)
    save_figure(fig, path)
    return fig


def curve_metric(curves, test_curve: bool | None = None) -> str:
    """``test_acc`` when every point of ``curves`` (lists of evaluation points) has a test accuracy
    and ``test_curve`` is not False, else ``val_acc``: by default (``test_curve=false``) the test split
    is evaluated only at new validation minima (``lth.training.evaluation.PeriodicEvaluation``), which
    can be every point of a short training: the caller that knows the setting passes it."""
    if test_curve is False:
        return "val_acc"
    points = [p for c in curves for p in c]
    finite = all(isinstance(p.get("test_acc"), (int, float)) and math.isfinite(p["test_acc"]) for p in points)
    return "test_acc" if points and finite else "val_acc"


CURVE_LABELS = {"test_acc": "test accuracy (%)", "val_acc": "validation accuracy (%)"}


MAX_CURVES = 8  # more lines than this in one color map cannot be told apart


def thin_levels(curves: dict, most: int) -> dict:
    """At most ``most`` of the ``curves`` (in their order, densest first): the first, the last and
    evenly spaced ones between."""
    keys = list(curves)
    if len(keys) <= most:
        return curves
    picks = sorted({round(i * (len(keys) - 1) / (most - 1)) for i in range(most)})
    return {keys[i]: curves[keys[i]] for i in picks}


def _trained_range(curves: dict, key: str = "test_acc", band: tuple[str, str] = ("_min", "_max")) -> tuple[float, float] | None:
    """y limits (%) that show every point after the first evaluation of each curve, with a margin,
    or None when the starts fit beside them (or there is nothing to show)."""
    later = [100 * p[key] for points in curves.values() for p in points[1:]]
    later += [100 * p[k] for points in curves.values() for p in points[1:] for k in (key + band[0], key + band[1])
              if k in p]
    starts = [100 * points[0][key] for points in curves.values() if points]
    if not later or not starts:
        return None
    span = max(max(later) - min(later), 1.0)
    if min(starts) >= min(later) - span / 2:  # the starts widen the range by at most half: keep them
        return None
    margin = 0.08 * span
    return max(0.0, min(later) - margin), min(100.0 + margin / 4, max(later) + margin)


def plot_learning_curves(curves: dict[str, list[dict]], path: Path, title: str = "",
                         band: tuple[str, str] = ("_min", "_max"), test_curve: bool | None = None):
    """``curves``: label -> evaluation points; the test accuracy against iteration, one line per level,
    or the validation accuracy, labelled so, when the test split was not evaluated at every point
    (``curve_metric``, given the experiments' ``test_curve``); with a band when the points carry
    ``<metric><band[0]>`` / ``<metric><band[1]>`` (min/max by default, the report's 95% confidence interval).
    The legend is to the right of the plot. More than ``MAX_CURVES`` levels: that many, evenly
    chosen (the legend says so). The y axis starts below the trained points, not at the untrained
    start. Returns the figure (already saved and closed)."""
    key = curve_metric(curves.values(), test_curve)
    fig, ax = plt.subplots(figsize=(7, 4.2))
    total = len(curves)
    curves = thin_levels(curves, MAX_CURVES)
    cmap = plt.get_cmap("viridis")
    n = max(len(curves), 1)
    width = 1.6 if n <= 8 else 1.1
    for i, (label, points) in enumerate(curves.items()):
        color = cmap(0.9 * i / max(n - 1, 1))
        x = [p["iteration"] for p in points]
        ax.plot(x, [100 * p[key] for p in points], label=label, color=color, linewidth=width)
        lo, hi = key + band[0], key + band[1]
        if points and all(lo in p and hi in p for p in points):
            ax.fill_between(x, [100 * p[lo] for p in points], [100 * p[hi] for p in points],
                            color=color, alpha=0.18 if n <= 4 else 0.08, linewidth=0)
    ax.set_xlabel("training iteration")
    ax.set_ylabel(CURVE_LABELS[key])
    ax.grid(True, alpha=0.3)
    limits = _trained_range(curves, key, band)
    if limits is not None:  # the untrained start (10% for 10 classes) would squash the curves into a line
        ax.set_ylim(*limits)
    if curves:
        rows = 17  # a column fits 17 entries beside a 4.2-inch plot
        shown = f"\n({len(curves)} of {total} levels)" if len(curves) < total else ""
        ax.legend(title=f"% weights\nremaining{shown}", fontsize=7, title_fontsize=7, loc="upper left",
                  bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False, ncol=math.ceil(len(curves) / rows))
    if title:
        ax.set_title(title, fontsize=10)
    save_figure(fig, path)
    return fig
