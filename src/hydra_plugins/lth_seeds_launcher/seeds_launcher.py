"""``hydra/launcher=lth_seeds``: Hydra's sequential launcher, with the seed trials trained as one stack.

A launcher is the Hydra extension point that receives every job of a sweep at once, before any of
them runs: the one place where the jobs that differ only in ``seed`` can be seen together (a
sweeper only produces the job list; a callback sees one job at a time). It is a Hydra plugin
(``hydra_plugins``, registered by Hydra's own plugin discovery, configured in
``conf/hydra/launcher/lth_seeds.yaml``), built on Hydra's public API only (``run_job``,
``HydraContext.config_loader``).

``launch``: (1) compose every job; (2) for each group of two or more jobs whose overrides are the
same but for ``seed`` and whose ``stack_networks`` stacks on this device, train every network of
every level of those experiments, the seeds' networks of one level as one stack, into each
experiment's own folder (``lth.lottery.seeds.train_trials``); (3) run every job one after another
exactly as Hydra's basic launcher does (``run_job``: its folder, log, callbacks, ``JobReturn``).
Each job then finds its networks trained and writes its results.csv, figures and W&B run, and lth's
sweep callback records it, as for any job. If step (2) fails, the jobs still run in (3), each on its own.
"""

from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

from hydra.core.hydra_config import HydraConfig
from hydra.core.utils import JobReturn, configure_log, filter_overrides, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict, read_write

log = logging.getLogger("lth")


def seed_groups(job_overrides: Sequence[Sequence[str]]) -> list[list[int]]:
    """The indices of the jobs whose overrides are the same but for ``seed=`` (in sweep order)."""
    groups: dict[tuple[str, ...], list[int]] = {}
    for i, overrides in enumerate(job_overrides):
        key = tuple(sorted(o for o in overrides if o.lstrip("+~").partition("=")[0] != "seed"))
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class SeedStackLauncher(Launcher):
    def __init__(self, stack_seeds: bool = True) -> None:
        super().__init__()
        self.stack_seeds = stack_seeds
        self.config: Optional[DictConfig] = None
        self.task_function: Optional[TaskFunction] = None
        self.hydra_context: Optional[HydraContext] = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.task_function = task_function

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        configs = []
        for idx, overrides in enumerate(job_overrides, initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            configs.append(sweep_config)
        if self.stack_seeds:
            for group in seed_groups(job_overrides):
                self._stack([configs[i] for i in group])
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs = []
        for idx, (overrides, sweep_config) in enumerate(zip(job_overrides, configs), initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            runs.append(run_job(hydra_context=self.hydra_context, task_function=self.task_function, config=sweep_config,
                                job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
            configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        return runs

    @staticmethod
    def _stack(sweep_configs: list[DictConfig]) -> None:
        """Train the networks of the jobs ``sweep_configs`` (seed trials) as stacks, into their folders."""
        from lth.lottery.seeds import train_trials, why_not_stacked

        trials = []
        for sweep_config in sweep_configs:
            HydraConfig.instance().set_config(sweep_config)  # for ${hydra:...} in the folder's name
            folder = Path(os.path.abspath(Path(str(sweep_config.hydra.sweep.dir), str(sweep_config.hydra.sweep.subdir))))
            task_cfg = copy.deepcopy(sweep_config)
            with read_write(task_cfg), open_dict(task_cfg):
                del task_cfg["hydra"]
            trials.append((task_cfg, folder))
        why = why_not_stacked([cfg for cfg, _ in trials])
        if why is not None:
            if len(trials) > 1:
                log.info("seeds %s: trained one job after another (%s)", ",".join(str(c.seed) for c, _ in trials), why)
            return
        try:
            from lth.quiet import quiet

            quiet()  # library chatter off, as in each job (lth.run)
            train_trials(trials)
        except Exception as exc:  # noqa: BLE001 - the jobs still run, each on its own, and report any problem
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            log.warning("seeds trained stacked stopped (%s: %s); each job goes on alone", exc.__class__.__name__, exc,
                        exc_info=True)
