"""Weights & Biases tracking through Lightning's WandbLogger.

Layout: one W&B run per experiment (Hydra job), grouped by the experiment's setting, with the
full composed config. The run's history stays small whatever the number of levels (32
keys for 16 levels with two controls):

- ``level/<branch>/{test_acc_at_es,es_iteration,final_test_acc,min_val_loss,train_time_s}``
  against ``level/weights_remaining``: the paper's figures, comparable across experiments;
- ``curves/<branch>``: a custom chart of test accuracy against iteration, one line per level
  (its data, every level's curve, is re-logged as one table after each training of the branch);
- ``layers/<branch>``: a custom chart of each prunable tensor's % of weights remaining against
  the level (the ``remaining:<tensor>`` columns of results.csv), for the ticket and for every
  branch whose masks are its own (pruning at initialization);
- ``live/{val_loss,val_acc,test_acc,train_loss}`` against ``live/step`` (iterations trained by
  this run so far, with ``live/level``): the training in progress;
- at the end: a ``results`` table (one row per trained network), a ``curves`` table (every
  evaluation of every network: plot any metric of it in W&B), the figures, and with
  ``logger.log_artifacts=true`` an artifact holding results.csv/json, the figures and the masks.

Resume: the run keeps its id (``resume="allow"``). When it starts, every level already finished
on disk that the run does not yet hold (offline, each part of a resumed experiment is a new run
folder; online, ``lth/logged`` in the run's summary lists what it holds) is logged again from
its ``row.json`` and ``curve.csv``, so the newest run holds every level.

W&B problems (no network, bad key, quota) never fail the experiment: they are logged as a
warning and tracking is switched off, while every file on disk is still written.
"""

from __future__ import annotations

import csv
import logging
import netrc
import os
import sys
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lth.storage import global_rank

log = logging.getLogger("lth")

LEVEL_KEYS = ("test_acc_at_es", "es_iteration", "final_test_acc", "min_val_loss", "train_time_s")
LIVE_KEYS = ("val_loss", "val_acc", "test_acc", "train_loss")
# Branches that train the ticket's own mask or one with its per-layer counts: no per-layer chart of their own.
SAME_LAYERS_AS_TICKET = ("ticket", "continued", "reinit", "random_prune", "instability")


def wandb_mode(requested: str) -> str:
    """``auto`` -> online when an API key is available (env or ~/.netrc), else offline."""
    if requested != "auto":
        return requested
    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    try:
        if netrc.netrc().authenticators("api.wandb.ai"):
            return "online"
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        pass
    return "offline"


def _key(row: dict) -> str:
    return f"{row['round']}/{row['branch']}"


class Tracker:
    """Wraps a WandbLogger; every method is a no-op once tracking is off."""

    def __init__(self, cfg: DictConfig, out_dir: Path, name: str, run_id: str,
                 branch_keys: dict[str, str] | None = None):
        self.logger = None
        self.branch_keys = branch_keys or {}  # branch -> its folder under this run's settings (snip-<digest>)
        self.mode = "disabled"
        self.out_dir = Path(out_dir)
        self.rounds = int(cfg.prune.rounds)
        self.test_curve = bool(cfg.get("test_curve", False))  # the curves chart: test accuracy only then
        self.hint = ""  # the ``wandb sync`` command of an offline run, printed once by ``announce``
        self.logged: set[str] = set()  # "round/branch" of every level this run holds
        self.curves: dict[str, dict[int, tuple[float, list[dict]]]] = {}  # branch -> round -> (% remaining, curve)
        self.layers: dict[str, dict[int, dict]] = {}  # branch -> round -> row (its remaining:<tensor> columns)
        self.live_step = 0  # iterations trained by this run so far (the x axis of live/*)
        self._live_last: tuple[int, str, int] | None = None
        lcfg = cfg.get("logger", {}) or {}
        self.log_artifacts = bool(lcfg.get("log_artifacts", False))
        if lcfg.get("name", "none") != "wandb":
            return
        self.mode = wandb_mode(lcfg.get("mode", "auto"))
        if self.mode == "disabled":
            return
        if global_rank() != 0:  # multi-GPU: only rank 0 talks to W&B
            self.mode = "disabled"
            return
        try:
            from pytorch_lightning.loggers import WandbLogger

            from lth.quiet import quiet_wandb

            quiet_wandb(self.mode)
            logger = WandbLogger(
                project=lcfg.get("project", "lth"),
                entity=lcfg.get("entity"),
                name=name,
                id=run_id,
                group=lcfg.get("group") or setting_group(cfg),
                job_type=f"{cfg.model.name}-{cfg.prune.scheme}",
                tags=_tags(cfg, lcfg),
                save_dir=str(out_dir),
                offline=self.mode == "offline",
                resume="allow",
                settings=_settings(),
            )
            run = logger.experiment  # starts the run now, so failures surface here
            run.config.update(OmegaConf.to_container(cfg, resolve=True), allow_val_change=True)
            run.config.update({"lth/setting": setting_group(cfg), "lth/output_dir": str(out_dir)}, allow_val_change=True)
            run.define_metric("level/weights_remaining")
            run.define_metric("level/*", step_metric="level/weights_remaining")
            run.define_metric("live/step")
            run.define_metric("live/*", step_metric="live/step")
            self.logger = logger
            self.run_dir = Path(run.dir).parent
            self.logged = set(run.summary.get("lth/logged", None) or [])  # online resume: what the run holds
            self.live_step = int(run.summary.get("live/step", 0) or 0)
            self.relog_finished()
        except Exception as exc:  # never let W&B fail an experiment
            log.warning("W&B is off for this experiment (%s: %s); results are still written to disk.",
                        exc.__class__.__name__, exc)
            self.logger = None
            _quiet_finish()

    broken = False  # set when W&B failed mid-run: nothing more is logged, the run is still finished

    @property
    def active(self) -> bool:
        return self.logger is not None and not self.broken

    def _log(self, data: dict) -> None:
        if not self.active:
            return
        try:
            self.logger.experiment.log(data)
        except Exception as exc:
            log.warning("W&B logging failed (%s); tracking switched off, files on disk unaffected.", exc)
            self.broken = True

    # ------------------------------------------------------------------ during the experiment
    def curve_point(self, round_: int, branch: str, point: dict) -> None:
        """One evaluation of the training in progress, on the ``live/step`` axis."""
        if not self.active:
            return
        it = int(point["iteration"])
        last = self._live_last
        if last is not None and last[:2] == (round_, branch) and it > last[2]:
            self.live_step += it - last[2]
        self._live_last = (round_, branch, it)
        # test_* are NaN where the test split was not evaluated (test_curve=false): not logged there
        data = {f"live/{k}": point[k] for k in LIVE_KEYS if k in point and point[k] == point[k]}
        data.update({"live/step": self.live_step, "live/level": round_})
        self._log(data)

    def level(self, row: dict, curve: list[dict] | None = None) -> None:
        """A finished training of a branch (a row of results.csv): its level point, and its branch's
        learning-curve and per-layer charts. Other trainings (the instability reference copy) are not levels."""
        if not self.active or _key(row) in self.logged or (self.branch_keys and row["branch"] not in self.branch_keys):
            return
        data = {f"level/{row['branch']}/{k}": row[k] for k in LEVEL_KEYS if row.get(k) is not None}
        data["level/weights_remaining"] = row["weights_remaining"]
        data["level/round"] = row["round"]
        self._log(data)
        branch = row["branch"]
        if curve:
            self.curves.setdefault(branch, {})[int(row["round"])] = (row["weights_remaining"], curve)
            self._log({f"curves/{branch}": self._curve_chart(branch)})
        if branch not in SAME_LAYERS_AS_TICKET[1:] and any(k.startswith("remaining:") for k in row):
            self.layers.setdefault(branch, {})[int(row["round"])] = row
            self._log({f"layers/{branch}": self._layer_chart(branch)})
        self.logged.add(_key(row))
        if self.active:
            self.logger.experiment.summary["lth/logged"] = sorted(self.logged)

    def relog_finished(self, rows: list[dict] | None = None) -> None:
        """Log every finished level the run does not hold yet (``rows``, default: those on disk),
        level by level, with its curve from ``curve.csv``."""
        if rows is None:
            from lth.results import read_row

            rows = []
            for path in sorted(self.out_dir.glob("round_*/*/row.json")):
                try:
                    row = read_row(path)
                except Exception:  # a damaged row is the experiment's to report, not W&B's
                    continue
                if path.parent.name == self.branch_keys.get(row["branch"], path.parent.name):  # not other settings'
                    rows.append(row)
        for row in sorted(rows, key=lambda r: (r["round"], r["branch"] != "ticket", r["branch"])):
            if row["round"] <= self.rounds and _key(row) not in self.logged:
                self.level(row, _read_curve(self._curve_path(row)))

    def _curve_path(self, row: dict) -> Path:
        folder = self.branch_keys.get(row["branch"], row["branch"])
        return self.out_dir / f"round_{row['round']:02d}" / folder / "curve.csv"

    def _curve_chart(self, branch: str):
        import wandb

        from lth.figures import CURVE_LABELS, curve_metric

        levels = sorted(self.curves[branch].items())
        metric = curve_metric([curve for _, (_, curve) in levels], self.test_curve)
        return wandb.plot.line_series(
            xs=[[p["iteration"] for p in curve] for _, (_, curve) in levels],
            ys=[[p[metric] for p in curve] for _, (_, curve) in levels],
            keys=[f"level {r} ({w:.3g}%)" for r, (w, _) in levels],
            title=f"{branch}: {CURVE_LABELS[metric].split(' (')[0]}, one line per level", xname="iteration")

    def _layer_chart(self, branch: str):
        import wandb

        levels = sorted(self.layers[branch].items())
        tensors = [k for k in levels[-1][1] if k.startswith("remaining:")]
        return wandb.plot.line_series(
            xs=[r["weights_remaining"] for _, r in levels],
            ys=[[r.get(t, float("nan")) for _, r in levels] for t in tensors],
            keys=[t.removeprefix("remaining:") for t in tensors],
            title=f"{branch}: % of each layer's weights remaining", xname="% of all weights remaining")

    # ------------------------------------------------------------------ the end
    def finish(self, rows: list[dict], figures: list[Path]) -> None:
        """Log what the run misses, the tables, the figures (and the artifact), then end the run. The
        ``wandb sync`` hint is printed by ``announce`` (at once when an exception is on its way out)."""
        if not self.active:
            self.close()
            return
        try:
            import wandb

            self.relog_finished(rows)  # levels found complete on disk during the run (a shared dense round)
            run = self.logger.experiment
            columns = sorted({k for r in rows for k in r if not k.startswith("remaining:")})
            run.log({"results": wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])})
            run.log({"curves": self._curves_table(rows)})
            for fig in figures:
                if Path(fig).exists():
                    run.log({f"figures/{Path(fig).stem}": wandb.Image(str(fig))})
            tickets = [r for r in rows if r["branch"] == "ticket" and not r.get("diverged")]
            if tickets:
                last = min(tickets, key=lambda r: r["weights_remaining"])
                run.summary.update({f"last_level/{k}": v for k, v in last.items() if not k.startswith("remaining:")})
            if self.log_artifacts:
                run.log_artifact(self._artifact(figures))
        except Exception as exc:
            log.warning("W&B summary failed (%s); files on disk unaffected.", exc)
        finally:
            self.close()
            if sys.exc_info()[0] is not None:  # the experiment failed or was interrupted: no table follows
                self.announce()

    def _curves_table(self, rows: list[dict]):
        import wandb

        columns = ["round", "branch", "weights_remaining", "iteration", "train_loss", "val_loss", "val_acc",
                   "test_loss", "test_acc", "lr"]
        data = []
        for r in rows:
            for p in _read_curve(self._curve_path(r)):
                data.append([r["round"], r["branch"], r["weights_remaining"], *[p.get(c) for c in columns[3:]]])
        return wandb.Table(columns=columns, data=data)

    def _artifact(self, figures: list[Path]):
        """results.csv/json, the figures and every mask (``round_NN/mask.pt``, ``round_NN/<branch>/mask.pt``)."""
        import wandb

        artifact = wandb.Artifact(f"results-{self.logger.experiment.id}", type="lottery-results",
                                  description="results.csv/json, figures and masks of a lottery-ticket experiment")
        for name in ("results.csv", "results.json", "config.yaml"):
            if (self.out_dir / name).exists():
                artifact.add_file(str(self.out_dir / name), name=name)
        for fig in figures:
            if Path(fig).exists():
                artifact.add_file(str(fig), name=f"figures/{Path(fig).name}")
        for mask in sorted(self.out_dir.glob("round_*/mask.pt")) + sorted(self.out_dir.glob("round_*/*/mask.pt")):
            artifact.add_file(str(mask), name=f"masks/{mask.relative_to(self.out_dir)}")
        return artifact

    def close(self) -> None:
        if self.logger is None:
            return
        try:
            import wandb

            run_dir = getattr(self, "run_dir", None)
            wandb.finish(exit_code=1 if self.broken else 0)
            if self.mode == "offline" and run_dir is not None:
                self.hint = f"W&B ran offline; upload with:  wandb sync {run_dir}"
        except Exception as exc:
            log.warning("wandb.finish failed (%s)", exc)
            _quiet_finish()
        self.logger = None

    def announce(self) -> None:
        """Print the ``wandb sync`` command of an offline run, once (the job's last line)."""
        if self.hint:
            log.info("%s", self.hint)
            self.hint = ""


def _read_curve(path: Path) -> list[dict]:
    try:
        with open(path) as f:
            return [{k: float(v) if v not in ("", None) else None for k, v in p.items()} for p in csv.DictReader(f)]
    except (OSError, ValueError):
        return []


def setting_group(cfg: DictConfig) -> str:
    """W&B group: the experiment's setting (``lth.identity.setting_name``, the identity without the
    seed), so that the seeds of one setting are one group, exactly as the report groups them."""
    from lth.identity import setting_name

    return setting_name(cfg)


def _tags(cfg: DictConfig, lcfg) -> list[str]:
    tags = [str(t) for t in (lcfg.get("tags", []) or [])]
    tags += [str(cfg.model.name), f"prune={cfg.prune.scheme}", f"strategy={cfg.get('strategy', 'reset')}"]
    return list(dict.fromkeys(tags))


def _quiet_finish() -> None:
    """End a half-started run so the next experiment (a later multirun job) starts clean."""
    try:
        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish()
    except Exception:
        pass


def _settings():
    import wandb

    return wandb.Settings(silent=True, console="off", x_disable_stats=True)
