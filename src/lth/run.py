"""``python -m lth.run``: one Hydra job = one lottery-ticket experiment.

Examples::

    python -m lth.run experiment=quickstart
    python -m lth.run model=conv2 controls=[reinit,random_prune]
    python -m lth.run model=vgg19 prune=global lr_warmup=true -m

Exit status: 0 done; 2 a problem the user can fix (a wrong or unknown setting, missing or
corrupt dataset files, an output folder that cannot be written, a diverged round that
leaves nothing to prune), reported as one ``error:`` line without a traceback
(``HYDRA_FULL_ERROR=1`` shows it); 1 an unexpected failure. Re-running the same command
continues an interrupted experiment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import importlib.util
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lth.identity import register_resolvers
from lth.signals import Interrupted, install_process_handlers

register_resolvers()
log = logging.getLogger("lth")


def _config_dir() -> str:
    """The folder of config.yaml: the package ``lth.conf``, which is the repository's top-level
    conf/ shipped inside the package (setup.py); in a checkout whose editable install predates
    that mapping, the repository's conf/ beside src/."""
    try:
        spec = importlib.util.find_spec("lth.conf")
    except ImportError:
        spec = None
    if spec is not None and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / "config.yaml").is_file():
                return str(Path(folder).resolve())
    return str(Path(__file__).resolve().parents[2] / "conf")


CONFIG_DIR = _config_dir()

USAGE_ERROR = 2
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.EACCES, errno.EFBIG}
_task_started = False  # False while Hydra is still composing the configuration


def remove_stale_temporaries(folder: Path) -> None:
    """Delete half-written ``.NAME.XXXX.tmp`` files left by a process killed while saving."""
    for tmp in Path(folder).rglob(".*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def _user_error_types() -> tuple[type[BaseException], ...]:
    from lth.data.torchvision_files import DatasetNotFoundError
    from lth.lottery import ExperimentError
    from lth.storage import CorruptFileError
    from lth.validation import ConfigError

    from lth.data.integrity import DatasetCorruptError

    return (ConfigError, ExperimentError, DatasetNotFoundError, CorruptFileError, DatasetCorruptError)


_job_label = ""  # "job 3 (seed=1): " in a sweep, so that each error line names its job
_last_failure = ""


def _fail(message: str) -> None:
    global _last_failure
    _last_failure = message
    # Logged to the experiment's run.log only; the console gets the single ``error:`` line.
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None))
    print(f"error: {_job_label}{message}", file=sys.stderr, flush=True)
    sys.exit(USAGE_ERROR)


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="config")
def hydra_main(cfg: DictConfig):
    global _task_started
    _task_started = True
    from hydra.types import RunMode

    if HydraConfig.get().mode == RunMode.MULTIRUN:
        return _sweep_job(cfg)
    return _run(cfg)


def _sweep_job(cfg: DictConfig):
    """One job of a ``-m`` sweep: a refused or failed job is reported and recorded, and the sweep goes on
    (``lth.report.SweepCallback`` names the failed jobs in the sweep report; ``main`` exits non-zero)."""
    global _job_label
    from lth.report import JobFailed

    job = HydraConfig.get().job
    _job_label = f"job {job.num} ({' '.join(HydraConfig.get().overrides.task)}): "
    try:
        _run(cfg)
        return None
    except SystemExit as exc:  # _fail: a problem the user can fix, already printed as one error: line
        if isinstance(exc.code, int) and exc.code > 128:  # a signal stops the whole sweep
            raise
        if exc.code in (0, None):
            return None
        return JobFailed(_last_failure, user_error=exc.code == USAGE_ERROR)
    except Exception as exc:  # noqa: BLE001 - a bug in one job must not stop the others
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        log.exception("%sfailed", _job_label)  # the traceback, on the console and in the job's run.log
        return JobFailed(f"{exc.__class__.__name__}: {exc}", user_error=False)
    finally:
        _job_label = ""


def _run(cfg: DictConfig) -> None:
    from lth.validation import ConfigError, check_output_dir, validate_config

    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:  # before the heavy imports, so that a wrong setting is reported at once
        validate_config(cfg)
        out_dir = Path(HydraConfig.get().runtime.output_dir)
        check_output_dir(out_dir)
    except ConfigError as exc:
        if full_error:
            raise
        _fail(str(exc))

    from lth.quiet import quiet

    quiet(wandb=(cfg.get("logger") or {}).get("name") == "wandb")  # library chatter off (lth/quiet.py)
    from lth.lottery import Lottery

    user_errors = _user_error_types()
    try:
        from lth.storage import is_writer

        with experiment_lock(out_dir) if is_writer() else contextlib.nullcontext():
            if is_writer():  # only the process that writes files may clear their leftovers
                remove_stale_temporaries(out_dir)
            experiment = Lottery(cfg, out_dir)
            experiment.setup_data()  # missing or corrupt files are reported before the folder is claimed
            experiment.run()
    except Interrupted as exc:
        _interrupted(exc, out_dir)
    except user_errors as exc:
        if full_error:
            raise
        _fail(str(exc))
    except OSError as exc:
        if full_error or exc.errno not in _WRITE_ERRNOS:
            raise
        _fail(f"could not write {exc.filename or 'to ' + str(out_dir)} ({exc.strerror}). Files already saved are "
              f"intact: free space (or fix the disk) and re-run the same command to continue the experiment")


@contextlib.contextmanager
def experiment_lock(folder: Path):
    """One writer per experiment: an exclusive ``flock`` on ``<folder>/.lock``, which holds the owner's
    pid. The kernel drops it when the process ends, however it ends, so a killed run never blocks a resume."""
    from lth.lottery import ExperimentError

    with open(folder / ".lock", "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            pid = handle.read().strip() or "?"
            raise ExperimentError(f"another lth process (pid {pid}) is running this experiment in {folder}; wait for "
                                  f"it to finish, or stop it (kill {pid}) and re-run this command to continue") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _interrupted(exc: Interrupted, out_dir: Path | None = None) -> None:
    """SIGINT/SIGTERM (lth.training.interrupt): one line, exit 128 + the signal's number."""
    where = f" in {out_dir}" if out_dir else ""
    print(f"interrupted: {exc}{where}. Every finished round is saved; re-run the same command to continue.",
          file=sys.stderr, flush=True)
    sys.exit(exc.exit_code)


def main() -> None:
    """The entry point (``python -m lth.run``, ``lth-run``); a configuration Hydra cannot compose (unknown option, bad override) exits with 2."""
    install_process_handlers()  # SIGINT/SIGTERM raise Interrupted: no traceback, a non-zero exit
    try:
        _main()
    except Interrupted as exc:
        _interrupted(exc)


def _main() -> None:
    from lth.validation import ConfigError, check_output_override

    # Hydra's parser wants flags before the overrides; accept `-m` anywhere on the line.
    flags = [a for a in sys.argv[1:] if a in ("-m", "--multirun")]
    sys.argv[1:] = flags + [a for a in sys.argv[1:] if a not in flags]
    try:  # an output folder given on the command line is checked before Hydra tries to create it
        for arg in sys.argv[1:]:
            key, _, value = arg.partition("=")
            if key.lstrip("+") in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
                check_output_override(value)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(USAGE_ERROR)
    from lth.validation import check_command

    try:  # compose and check the whole command (every job of a sweep) before Hydra creates or writes anything
        check_command(sys.argv[1:], CONFIG_DIR)
    except ConfigError as exc:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.exit(USAGE_ERROR)
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
