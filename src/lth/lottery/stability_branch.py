"""Instability analysis as a branch (``instability=true``; Frankle, Dziugaite, Roy & Carbin, ICML 2020).

At every level two copies of the level's network train the same way from the same start (θK and
the level's mask, a fresh optimizer at iteration K) with different SGD noise: the ticket's data order
and another data order and augmentation draw. At levels >= 1 the first copy is the ticket itself. At
level 0 with rewinding (K > 0) the dense round cannot be that copy: it was trained from θ0, with its
optimizer state carried through K. So there a *reference* copy restarts from θK with the ticket's
data order (``round_00/instability-<digest>/reference/``), and the path runs from it to the copy (Frankle et
al. 2020, Algorithm 1: both copies continue from W_k). The test error along the straight line
between the first copy's and the second copy's final weights
(``analysis.interpolation_points`` evenly spaced α, the paper's 30) is written to the copy's
``path.csv``; the **error barrier** (maximum error on the path minus the mean of the ends' errors)
to its row's ``instability`` column. A level is stable when the barrier is about 0 (the paper:
under 2%). BatchNorm statistics of interpolated networks: ``analysis.batchnorm=interpolate`` (the
paper's) or ``recompute`` (re-estimated on the training set).
"""

from __future__ import annotations

from pathlib import Path

import torch

from lth.analysis.instability import error_barrier, path_errors
from lth.lottery.branches import Branch, branch_seed, register
from lth.storage import atomic_write_csv, atomic_write_json, load_tensors
from lth.training.round import Training
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

    @property
    def extra_trainings(self) -> int:
        """Trainings beyond one per level (the progress display's count): the level-0 reference."""
        return int(self.needs_reference(0))

    def needs_reference(self, level: int) -> bool:
        """Level 0 with rewinding: the dense round is not a copy trained from θK, so one is trained."""
        return level == 0 and self.lot.rewind > 0

    def reference(self, level: int) -> tuple[dict | None, Path]:
        """The first end of the path: its row (None when not trained) and its folder."""
        lot = self.lot
        if not self.needs_reference(level):
            folder = lot.layout.branch(level, "ticket")
            return lot.trainer.finished(folder, keep_final=True), folder
        folder = lot.layout.branch(level, self.key) / "reference"
        done = lot.trainer.finished(folder, keep_final=True)
        if done is not None:
            lot.progress.training_skipped()
            return done, folder
        training = Training(level, f"{self.name}_reference", folder, lot.ticket_mask(level), lot.model_at(lot.rewind_state),
                            lot.rewind, lot.seed, keep_final=True)  # the ticket's start, data order and budget
        return lot.trainer.train(training), folder

    def finish(self, level: int, row: dict) -> dict:
        """The barrier between the first copy (the ticket; at level 0 with K > 0 the reference) and this
        copy (computed once; idempotent on re-runs)."""
        if "instability" in row or row["diverged"]:
            if self.needs_reference(level):
                self.lot.progress.training_skipped()  # the reference is done (or not needed): counted
            return row
        lot, layout = self.lot, self.lot.layout
        ref_row, ref_folder = self.reference(level)
        if ref_row is None or ref_row["diverged"]:
            return row
        x, y = lot.datamodule.splits["test"]
        first = load_tensors(ref_folder / "final.pt")
        path = path_errors(lot.model_at(first).to(lot.device), first, lot.final_weights(level, self.key), x, y,
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
            path = self.lot.layout.read(self.lot.layout.branch(level, self.key) / "path.csv")
            right.plot([p["alpha"] for p in path], [100 * p["error"] for p in path],
                       color=cmap(i / max(1, len(shown) - 1)), label=f"{remaining:.3g}% remaining")
        right.set_xlabel("interpolation α (0: ticket from θK, 1: copy)")
        right.set_ylabel("test error (%)")
        right.set_title("error along the linear path")
        right.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0, frameon=False)
        out = self.lot.layout.figure("instability")
        save_figure(fig, out)
        return [out]
