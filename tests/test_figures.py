"""The figures stay readable from 2 to 30 levels with every branch drawn (measured with
matplotlib's renderer: no two x tick labels overlap, the legend covers no data)."""

from __future__ import annotations

import math

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

import lth.figures as figures

BRANCHES = ["ticket", "continued", "reinit", "random_prune", "snip", "grasp", "synflow", "magnitude_init",
            "instability", "some_future_branch"]


def levels(n: int) -> list[float]:
    return [100 * 0.8 ** i for i in range(n)]


def series(n: int, branches=BRANCHES) -> dict[str, list[dict]]:
    out = {}
    for b, name in enumerate(branches):
        out[name] = [{"weights_remaining": w, "test_acc_at_es": (acc := 0.97 - 0.004 * b - 0.001 * i),
                      "es_iteration": (es := 3000 + 100 * i + 50 * b), "test_acc_at_es_min": acc - 0.003,
                      "test_acc_at_es_max": acc + 0.002, "es_iteration_min": es - 200, "es_iteration_max": es + 300}
                     for i, w in enumerate(levels(n))]
    return out


def curves(n: int) -> dict[str, list[dict]]:
    return {f"{w:.3g}%": [{"iteration": it, "test_acc": 0.5 + 0.4 * (1 - math.exp(-it / 800)) - 0.001 * i}
                          for it in range(0, 5001, 100)]
            for i, w in enumerate(levels(n))}


@pytest.fixture
def drawn(monkeypatch):
    """The figures the plot functions saved, kept for measuring."""
    kept = []
    save = figures.save_figure

    def keep(fig, path):
        save(fig, path)
        FigureCanvasAgg(fig)  # closing a pyplot figure detaches its canvas; measure on a fresh Agg one
        kept.append(fig)

    monkeypatch.setattr(figures, "save_figure", keep)
    return kept


def visible_tick_labels(fig, ax):
    renderer = fig.canvas.get_renderer()
    page = fig.bbox
    out = []
    for label in ax.get_xticklabels():
        if not label.get_visible() or not label.get_text():
            continue
        box = label.get_window_extent(renderer)
        if box.x1 < page.x0 or box.x0 > page.x1:  # a tick outside the view is not drawn
            continue
        out.append((label.get_text(), box))
    return out


def assert_tick_labels_apart(fig):
    fig.canvas.draw()
    for ax in fig.axes:
        labels = sorted(visible_tick_labels(fig, ax), key=lambda t: t[1].x0)
        assert len(labels) >= 2, [t for t, _ in labels]
        for (ta, a), (tb, b) in zip(labels, labels[1:]):
            assert a.x1 <= b.x0, f"x tick labels {ta!r} and {tb!r} overlap: {[t for t, _ in labels]}"


def assert_legend_clear_of_data(fig):
    renderer = fig.canvas.get_renderer()
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "the legend covers a plot"


def test_a_sparsity_figure_with_nothing_to_draw_says_why(tmp_path, drawn):
    diverged = {"ticket": [{"weights_remaining": w, "test_acc_at_es": None, "es_iteration": None} for w in (100, 80)]}
    figures.plot_sparsity_figure(diverged, tmp_path / "lt.png", "LeNet on MNIST: layerwise pruning")
    for ax in drawn[-1].axes:
        assert [t.get_text().split(":")[0] for t in ax.texts] == ["no network to draw"]


@pytest.mark.parametrize("n", [2, 16, 30])
def test_sparsity_figure_readable(tmp_path, drawn, n):
    figures.plot_sparsity_figure(series(n), tmp_path / "lt.png", "LeNet on MNIST: layerwise pruning")
    fig = drawn[-1]
    assert (tmp_path / "lt.png").stat().st_size > 0
    assert_tick_labels_apart(fig)
    assert_legend_clear_of_data(fig)
    # every branch drawn, each in a style of its own
    legend = fig.legends[0]
    assert len(legend.get_texts()) == len(BRANCHES)
    lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len({(line.get_color(), line.get_marker(), line.get_linestyle()) for line in lines}) == len(BRANCHES)
    # the least and the most weights remaining are labelled
    texts = [t for t, _ in visible_tick_labels(fig, fig.axes[0])]
    assert texts[0] == "100" and texts[-1] == f"{levels(n)[-1]:.3g}"


@pytest.mark.parametrize("n", [2, 16, 30])
def test_learning_curves_readable(tmp_path, drawn, n):
    figures.plot_learning_curves(curves(n), tmp_path / "lc.png", "LeNet on MNIST: ticket learning curves")
    fig = drawn[-1]
    fig.canvas.draw()
    assert_legend_clear_of_data(fig)
    legend = fig.axes[0].get_legend() or fig.legends[0]
    shown = [t.get_text() for t in legend.get_texts()]
    # at most 8 lines in one color map, the densest and the sparsest among them, the rest evenly between
    assert len(shown) == min(n, figures.MAX_CURVES) and shown[0] == "100%" and shown[-1] == f"{levels(n)[-1]:.3g}%"
    assert (f"{figures.MAX_CURVES} of {n} levels" in legend.get_title().get_text()) == (n > figures.MAX_CURVES)
    picked = [list(curves(n)).index(label) for label in shown]
    gaps = [b - a for a, b in zip(picked, picked[1:])]
    assert max(gaps) - min(gaps) <= 1


def test_learning_curves_zoom_on_the_trained_points(tmp_path, drawn):
    """An untrained start at 10% (10 classes) would squash curves between 94% and 98% into one line."""
    trained = {f"{w:.3g}%": [{"iteration": 0, "test_acc": 0.1}] + [
        {"iteration": it, "test_acc": 0.98 - 0.003 * i - 0.02 * math.exp(-it / 300)} for it in range(100, 3001, 100)]
        for i, w in enumerate(levels(6))}
    figures.plot_learning_curves(trained, tmp_path / "lc.png")
    low, high = drawn[-1].axes[0].get_ylim()
    later = [100 * p["test_acc"] for points in trained.values() for p in points[1:]]
    assert 10 < low < min(later) and max(later) < high <= 101 and high - low < 2 * (max(later) - min(later))


def test_learning_curves_keep_the_start_when_it_fits(tmp_path, drawn):
    rising = {"100%": [{"iteration": it, "test_acc": 0.9 + it / 1e5} for it in range(0, 1001, 100)]}
    figures.plot_learning_curves(rising, tmp_path / "lc.png")
    low, _ = drawn[-1].axes[0].get_ylim()
    assert low < 90  # matplotlib's own limits: every point shows


def test_compare_figure_with_setting_labels(tmp_path, drawn):
    """The sweep report's comparison plots settings, not branches: unknown names get distinct styles."""
    settings = [f"lenet300_100-layerwise-{i:08x} (lr_warmup=true, rewind_iteration={i})" for i in range(6)]
    figures.plot_sparsity_figure(series(16, settings), tmp_path / "cmp.png", "winning tickets of every setting")
    fig = drawn[-1]
    assert_tick_labels_apart(fig)
    assert_legend_clear_of_data(fig)
    lines = [line for line in fig.axes[0].get_lines() if not line.get_label().startswith("_")]
    assert len({(line.get_color(), line.get_marker()) for line in lines}) == len(settings)


def test_branch_style_registry():
    import lth.lottery.registry  # noqa: F401  (registering the branches registers their styles)

    assert figures.branch_style("ticket")["label"] == "winning ticket"
    unknown = figures.branch_style("not_a_branch", index=3)
    assert unknown["label"] == "not_a_branch" and "color" in unknown and "marker" in unknown
    figures.register_branch_style("my_branch", color="black", marker="*", label="mine")
    try:
        assert figures.branch_style("my_branch") == {"color": "black", "marker": "*", "label": "mine"} | \
            {k: v for k, v in figures.branch_style("my_branch").items() if k not in ("color", "marker", "label")}
        assert figures.branch_style("my_branch")["label"] == "mine"
    finally:
        figures.BRANCH_STYLE.pop("my_branch", None)
