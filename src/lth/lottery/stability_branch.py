"""Instability analysis as a branch (``instability=true``; Frankle, Dziugaite, Roy & Carbin, ICML 2020).

At every level a second copy of the ticket trains from the same start (θK and the level's mask;
level 0: the dense network from θK) with other SGD noise: another data order and augmentation
draw. The test error along the straight line between the ticket's and the copy's final weights
(``analysis.interpolation_points`` evenly spaced α, the paper's 30) is written to the copy's
``path.csv``; the **error barrier** (maximum error on the path minus the mean of the ends' errors)
to its row's ``instability`` column. A level is stable when the barrier is about 0 (the paper:
under 2%). BatchNorm statistics of interpolated networks: ``analysis.batchnorm=interpolate`` (the
paper's) or ``recompute`` (re-estimated on the training set).
"""

from __future__ import annotations

import csv

import torch

from lth.analysis.instability import error_barrier, path_errors
from lth.lottery.branches import Branch, branch_seed, register
from lth.storage import atomic_write_csv, atomic_write_json
from lth.figures import save_figure

STABLE = 0.02  # the paper's threshold on the barrier


@register
class Instability(Branch):
    name = "instability"
    style = dict(color="tab:olive", marker=">", linestyle="-.", label="ticket copy (other SGD noise)")
    control = False
    switch = "instability"
    first_level = 0
    keep_final = True  # the copy's weights are one end of the path
    settings = ("analysis.interpolation_points", "analysis.batchnorm")

    def start_state(self, level: int) -> dict[str, torch.Tensor]:
        return self.lot.rewind_state

    def data_seed(self, level: int) -> int:
        return branch_seed(self.lot.seed, level, self.name, "data")

    def finish(self, level: int, row: dict) -> dict:
        """The barrier between the ticket and this copy (computed once; idempotent on re-runs)."""
        if "instability" in row or row["diverged"]:
            return row
        lot, layout = self.lot, self.lot.layout
        ticket_row = lot.trainer.finished(layout.branch(level, "ticket"), keep_final=True)
        if ticket_row is None or ticket_row["diverged"]:
            return row
        x, y = lot.datamodule.splits["test"]
        path = path_errors(lot.model_at(lot.final_weights(level, "ticket")).to(lot.device),
                           lot.final_weights(level, "ticket"), lot.final_weights(level, self.key), x, y,
                           points=int(lot.cfg.analysis.interpolation_points), batch_size=int(lot.cfg.eval_batch_size),
                           bn=str(lot.cfg.analysis.batchnorm), train_x=lot.datamodule.splits["train"][0],
                           mask=lot.ticket_mask(level))
        atomic_write_csv(layout.branch(level, self.key) / "path.csv", path)
        barrier = error_barrier(path)
        row = {**row, "instability": barrier, "stable": barrier <= STABLE}
        atomic_write_json(layout.row(level, self.key), row)
        return row

    def figures(self, rows: list[dict]) -> list:
        """``instability.png``: barrier against % weights remaining, and the error along the path at a few levels."""
        import matplotlib.pyplot as plt

        from lth.figures import format_pct_axis

        points = sorted((r["weights_remaining"], r["instability"], r["round"]) for r in rows
                        if r["branch"] == self.name and "instability" in r)
        if not points:
            return []
        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
        left.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", color="tab:gray")
        left.axhline(100 * STABLE, color="tab:red", linestyle=":", linewidth=1, label="stable below 2% (paper)")
        format_pct_axis(left, [p[0] for p in points])
        left.set_ylabel("error barrier (percentage points)")
        left.set_title("instability of the ticket to SGD noise")
        left.legend(fontsize=8)
        shown = points[:: max(1, len(points) // 4)][:5] + ([points[-1]] if len(points) > 1 else [])
        cmap = plt.get_cmap("viridis")
        for i, (remaining, _, level) in enumerate(dict.fromkeys(shown)):
            with open(self.lot.layout.branch(level, self.key) / "path.csv") as f:
                path = list(csv.DictReader(f))
            right.plot([float(p["alpha"]) for p in path], [100 * float(p["error"]) for p in path],
                       color=cmap(i / max(1, len(shown) - 1)), label=f"{remaining:.3g}% remaining")
        right.set_xlabel("interpolation α (0: ticket, 1: copy)")
        right.set_ylabel("test error (%)")
        right.set_title("error along the linear path")
        right.legend(fontsize=8)
        out = self.lot.layout.figure("instability")
        save_figure(fig, out)
        return [out]
