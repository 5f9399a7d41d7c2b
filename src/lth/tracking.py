"""Weights & Biases tracking through Lightning's WandbLogger.

Layout: one W&B run per experiment (Hydra job), grouped by the experiment's model and
pruning scheme, with the full composed config. Keys:

- ``curve/<branch>/r<round>/{val_loss,val_acc,test_loss,test_acc,train_loss,lr}`` against
  ``curve/iteration``: every level's learning curve, overlaid in one chart per metric;
- ``level/<branch>/{test_acc_at_es,es_iteration,final_test_acc,min_val_loss}`` against
  ``level/weights_remaining``: the paper's figures, comparable across experiments;
- a ``results`` table (one row per trained network) and the summary of the last level.

W&B problems (no network, bad key, quota) never fail the experiment: they are logged as a
warning and tracking is switched off, while every file on disk is still written.
"""

from __future__ import annotations

import logging
import netrc
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from lth.storage import global_rank

log = logging.getLogger("lth")


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


class Tracker:
    """Wraps a WandbLogger; every method is a no-op once tracking is off."""

    def __init__(self, cfg: DictConfig, out_dir: Path, name: str, run_id: str):
        self.logger = None
        self.mode = "disabled"
        lcfg = cfg.get("logger", {}) or {}
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
            run.define_metric("curve/iteration")
            run.define_metric("curve/*", step_metric="curve/iteration")
            run.define_metric("level/weights_remaining")
            run.define_metric("level/*", step_metric="level/weights_remaining")
            self.logger = logger
            self.run_dir = Path(run.dir).parent
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

    def curve_point(self, round_: int, branch: str, point: dict) -> None:
        prefix = f"curve/{branch}/r{round_:02d}"
        # test_* are NaN where the test split was not evaluated (test_curve=false): not logged there
        data = {f"{prefix}/{k}": v for k, v in point.items() if k not in ("iteration", "time_s") and v == v}
        data["curve/iteration"] = point["iteration"]
        self._log(data)

    def level(self, row: dict) -> None:
        keys = ("test_acc_at_es", "es_iteration", "final_test_acc", "min_val_loss", "val_acc_at_es", "train_time_s")
        data = {f"level/{row['branch']}/{k}": row[k] for k in keys if row.get(k) is not None}
        data["level/weights_remaining"] = row["weights_remaining"]
        data["level/round"] = row["round"]
        self._log(data)

    def finish(self, rows: list[dict], figures: list[Path]) -> None:
        if not self.active:
            self.close()
            return
        try:
            import wandb

            run = self.logger.experiment
            columns = sorted({k for r in rows for k in r if not k.startswith("remaining:")})
            table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
            run.log({"results": table})
            for fig in figures:
                if Path(fig).exists():
                    run.log({f"figures/{Path(fig).stem}": wandb.Image(str(fig))})
            tickets = [r for r in rows if r["branch"] == "ticket" and not r.get("diverged")]
            if tickets:
                last = min(tickets, key=lambda r: r["weights_remaining"])
                run.summary.update({f"last_level/{k}": v for k, v in last.items() if not k.startswith("remaining:")})
        except Exception as exc:
            log.warning("W&B summary failed (%s); files on disk unaffected.", exc)
        finally:
            self.close()

    def close(self) -> None:
        if self.logger is None:
            return
        try:
            import wandb

            run_dir = getattr(self, "run_dir", None)
            wandb.finish(exit_code=1 if self.broken else 0)
            if self.mode == "offline" and run_dir is not None:
                log.info("W&B ran offline; upload with:  wandb sync %s", run_dir)
        except Exception as exc:
            log.warning("wandb.finish failed (%s)", exc)
            _quiet_finish()
        self.logger = None


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
        import sys

        if "wandb" in sys.modules:
            import wandb

            if wandb.run is not None:
                wandb.finish()
    except Exception:
        pass


def _settings():
    import wandb

    return wandb.Settings(silent=True, console="off", x_disable_stats=True)
