"""``python -m lth.run [GROUP=OPTION] [KEY=VALUE] [-m]``: one Hydra job = one lottery-ticket experiment.

Exit status: 0 done; 2 a problem the user can fix, as one ``error:`` line (``HYDRA_FULL_ERROR=1``: the
traceback); 1 an unexpected failure. Every job of the command is composed (Hydra's compose API) and
checked before Hydra creates anything; a sweep's jobs are checked again as they start.
"""

from __future__ import annotations

import sys

from lth import signals

if __name__ == "__main__" or sys.argv[0].endswith("lth-run"):  # a signal while the program loads: exit at once
    signals.install_process_handlers(starting=True)

import contextlib
import errno
import importlib.util
import logging
import os
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth.config_schema import describe, fields, register
from lth.identity import register_resolvers
from lth.misuse import discard_unclaimed, refuse_misuse
from lth.signals import Interrupted, install_process_handlers

register_resolvers()
register()
log = logging.getLogger("lth")
USAGE_ERROR = 2
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EFBIG}
_task_started = False  # False while Hydra is still composing the configuration
_job_label = ""  # "job 3 (seed=1): " in a sweep, so that each error line names its job
_last_failure = ""


_spec = importlib.util.find_spec("lth.conf")  # conf/, shipped inside the wheel as the package lth.conf
CONFIG_DIR = next((str(Path(f).resolve()) for f in ((_spec.submodule_search_locations if _spec else None) or []) if
                   (Path(f) / "config.yaml").is_file()), str(Path(__file__).resolve().parents[2] / "conf"))


def _fail(message: str) -> None:
    global _last_failure
    _last_failure = message
    for handler in logging.getLogger().handlers:  # the job's run.log gets it too
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None))
    print(f"error: {_job_label}{message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


def check_command(overrides: list[str], multirun: bool) -> None:
    """Compose every job of the command as Hydra will (its compose API) and check it; nothing is written.
    Raises ConfigError naming every refused job."""
    import itertools

    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from lth.validation import ConfigError, check, check_experiment, check_output_dir, check_value, hydra_message

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(hydra_message(exc)) from None
    if not multirun and (sweep := next((o for o in parsed if o.is_sweep_override()), None)):
        raise ConfigError(f"{sweep.input_line} is a sweep: add -m to run one experiment per value, or write a list as [a,b]")
    choices = [list(zip([f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()], o.sweep_iterator()))
               if o.is_sweep_override() else [(o.input_line, o.value())] for o in parsed]
    refused, jobs = [], list(itertools.product(*choices))
    for index, job in enumerate(jobs):
        line = [o for o, _ in job]
        try:
            for o, (_, value) in zip(parsed, job):
                if o.key_or_group in fields():  # its value as given, before OmegaConf converts it
                    check_value(o.key_or_group, value)
            with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
                try:
                    cfg = compose("config", overrides=line, return_hydra_config=True)
                except Exception as exc:  # noqa: BLE001 - Hydra's and OmegaConf's composition errors
                    raise ConfigError(hydra_message(exc)) from None
            HydraConfig.instance().set_config(cfg)  # for ${hydra:...}
            local = "submitit" not in str(cfg.hydra.launcher.get("_target_"))  # a cluster's jobs run elsewhere
            check(cfg, [o.key_or_group for o in parsed], machine=local)
            check_output_dir(cfg.hydra.sweep.dir if multirun else cfg.hydra.run.dir)
            check_experiment(cfg, Path(str(cfg.hydra.sweep.dir), str(cfg.hydra.sweep.subdir)) if multirun else
                             Path(str(cfg.hydra.run.dir)))
        except ConfigError as exc:
            refused.append((f"job {index} ({' '.join(o for (o, _), opts in zip(job, choices) if len(opts) > 1)})", str(exc)))
    if refused:  # Hydra cannot compose (or would coerce) a refused job: a sweep with one is not started
        messages = list(dict.fromkeys(m for _, m in refused))
        if not multirun or (len(messages) == 1 and len(refused) == len(jobs)):
            raise ConfigError(messages[0] if not multirun else f"every job of the sweep is refused: {messages[0]}")
        raise ConfigError(f"{len(refused)} of {len(jobs)} jobs of the sweep are refused, so none is started: " +
                          "; ".join(f"{job}: {m}" for job, m in refused))


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig):
    global _task_started, _job_label
    _task_started = True
    if str(HydraConfig.get().mode) != "RunMode.MULTIRUN":
        return _run(cfg)
    from lth.report import JobFailed
    from lth.validation import ConfigError, check

    overrides = list(HydraConfig.get().overrides.task)
    _job_label = f"job {HydraConfig.get().job.num} ({' '.join(overrides)}): "
    try:  # a refused or failed job is recorded (lth.report.SweepCallback) and the sweep goes on
        try:
            check(cfg, [o.lstrip("+~").partition("=")[0] for o in overrides])
        except ConfigError as exc:
            _fail(str(exc))
        _run(cfg)
    except SystemExit as exc:
        if isinstance(exc.code, int) and exc.code > 128:  # a signal stops the whole sweep
            raise
        return None if exc.code in (0, None) else JobFailed(_last_failure, user_error=exc.code == USAGE_ERROR)
    except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the others
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.exception("%sfailed", _job_label)
        return JobFailed(f"{exc.__class__.__name__}: {exc}", user_error=False)
    finally:
        _job_label = ""


def _run(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:  # (a signal while torch loads is an Interrupted too: the folder Hydra made is not left behind)
        from lth.quiet import quiet

        quiet()  # library chatter off (lth/quiet.py)
        from lth.data.integrity import DatasetCorruptError
        from lth.data.torchvision_files import DatasetNotFoundError
        from lth.lottery import ExperimentError, Lottery
        from lth.lottery.layout import experiment_lock
        from lth.storage import CorruptFileError, is_writer

        with experiment_lock(out_dir) if is_writer() else contextlib.nullcontext():
            if is_writer():  # only the process that writes files may clear their leftovers
                for tmp in out_dir.rglob(".*.tmp"):  # half-written files of a process killed while saving
                    tmp.unlink(missing_ok=True)
            experiment = Lottery(cfg, out_dir)
            experiment.setup_data()  # missing or corrupt files are reported before the folder is claimed
            experiment.run()
        if signals.received() is not None:  # a signal whose exception was lost on the way (lth.signals)
            raise signals.interrupted()
    except Interrupted as exc:  # (the first clause: the names below may not be imported yet)
        _interrupted(exc, None if discard_unclaimed(out_dir) else out_dir)
    except (ExperimentError, DatasetNotFoundError, CorruptFileError, DatasetCorruptError) as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        discard_unclaimed(out_dir)  # stopped before the folder was claimed: no half-made folder stays
        _fail(str(exc))
    except OSError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1" or exc.errno not in _WRITE_ERRNOS:
            raise
        _fail(f"could not write {exc.filename or 'to ' + str(out_dir)} ({exc.strerror}). Files already saved are "
              f"intact: free space (or fix the disk) and re-run the same command to continue the experiment")


def _interrupted(exc: Interrupted, out_dir: Path | None = None) -> None:
    """SIGINT/SIGTERM (lth.training.interrupt): one line, exit 128 + the signal's number."""
    signals.reported()  # one line: later signals are ignored while the process exits
    if out_dir is None and HydraConfig.initialized() and str(HydraConfig.get().mode) == "RunMode.MULTIRUN":
        out_dir = Path(str(HydraConfig.get().sweep.dir))  # a sweep stopped between jobs or in its launcher
    print(f"interrupted: {exc} in {out_dir}. Every finished round is saved; re-run the same command to continue."
          if out_dir and out_dir.is_dir() else f"interrupted: {exc} before the experiment started; nothing was "
          f"written: re-run the same command.", file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)


def usage() -> str:
    """``--help``: the groups' options (conf/) and every key with its doc (lth.config_schema)."""
    def options(group: Path) -> str:  # nested presets too: experiment=paper/lenet_mnist
        return ", ".join(sorted(p.relative_to(group).with_suffix("").as_posix() for p in group.rglob("*.yaml")))

    root = Path(CONFIG_DIR)
    groups = [f"  {g.name}: {options(g)}" for g in sorted(root.iterdir()) if g.is_dir() and g.name not in (
        "hydra", "__pycache__")]
    groups.append(f"  hydra/launcher: {options(root / 'hydra' / 'launcher')} (Hydra's own: --hydra-help)")
    keys = [f"  {n}={d}  {doc} [read: {when}; {effect}]" for n, d, when, effect, doc in describe()]
    return "\n".join(["usage: python -m lth.run [GROUP=OPTION] [KEY=VALUE] [-m]   (Hydra's flags: --hydra-help)", "",
                      "Groups (conf/):", *groups, "", "Keys (src/lth/config_schema.py; a model's protocol sets its own):",
                      *keys])


def main() -> None:
    """The entry point (``python -m lth.run``, ``lth-run``)."""
    try:
        install_process_handlers()  # SIGINT/SIGTERM raise Interrupted: no traceback, a non-zero exit
        _main()
    except Interrupted as exc:
        _interrupted(exc)
    except SystemExit as exc:  # an exit 0 (Lightning's SIGTERMException) after a signal is no success
        if exc.code in (0, None) and signals.received() is not None:
            _interrupted(signals.interrupted())
        raise
    if signals.received() is not None:
        _interrupted(signals.interrupted())


def _main() -> None:
    refuse_misuse(sys.argv)  # SLURM without SLURM, ddp in a local sweep, -sc without a subcommand: one error line
    # Every key is in the schema, so +KEY=VALUE (which Hydra refuses for an existing key) means KEY=VALUE.
    args = [a[1:] if a.startswith("+") and not a.startswith("++") and a[1:].partition("=")[0] in fields() else a
            for a in sys.argv[1:]]
    flags = [a for a in args if a in ("-m", "--multirun")]
    sys.argv[1:] = flags + [a for a in args if a not in flags]  # Hydra wants flags first; accept -m anywhere
    if "--help" in args or "-h" in args:
        return print(usage())
    if not any(a.startswith("-") and a not in flags for a in args):  # a run, not --cfg, --info, --hydra-help...
        from lth.validation import ConfigError

        try:
            check_command([a for a in args if a not in flags], multirun=bool(flags))
        except ConfigError as exc:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            _fail(str(exc))
    try:
        hydra_main()
    except SystemExit as exc:
        if exc.code not in (0, None) and not _task_started:
            sys.exit(USAGE_ERROR)
        raise
    from lth.report import take_sweep_outcome

    outcome = take_sweep_outcome()
    if outcome is not None and outcome.failed:
        print(f"error: {outcome.summary()}", file=sys.stderr, flush=True)
        sys.exit(USAGE_ERROR if all(f.get("user_error") for f in outcome.failed) else 1)


if __name__ == "__main__":
    main()
