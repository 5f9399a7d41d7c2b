"""The Hydra callback of ``-m`` sweeps (registered in ``conf/config.yaml``) and what a sweep job returns.

:class:`SweepCallback` pins the sweep folder name for every job, records each job's status in
``<sweep>/.jobs/<num>.json`` and, when the sweep ends, writes one report at the sweep root (the
finished experiments, the unfinished ones and the failed jobs); a job that failed (a refused
setting, missing data, a crash) does not stop the others. ``lth.run`` reads how the sweep ended
with :func:`take_sweep_outcome`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from lth.report.build import report

log = logging.getLogger("lth")

try:
    from hydra.experimental.callback import Callback as _HydraCallback
except Exception:  # pragma: no cover - hydra is a dependency
    _HydraCallback = object


@dataclass
class JobFailed:
    """What a sweep job that failed returns (``lth.run``): the sweep goes on and its report names it."""

    message: str
    user_error: bool = True  # a setting or file the user can fix (exit 2), else an unexpected failure (exit 1)


@dataclass
class SweepOutcome:
    """How a sweep ended, for ``lth.run.main``'s exit status and last line."""

    jobs: int
    failed: list[dict]
    report: Path | None = None
    common: set[str] = field(default_factory=set)  # the overrides every job shares (left out of job names)

    def summary(self) -> str:
        names = "; ".join(f"job {j.get('num')} ({_job_name(j, self.common)})" for j in self.failed)
        where = f"the sweep report {self.report} covers the others" if self.report else "no report was written"
        return (f"{len(self.failed)} of {self.jobs} sweep jobs failed ({names}); each one's error is above and in its "
                f"folder's run.log, and {where}")


_SWEEP_OUTCOME: SweepOutcome | None = None


def _job_name(record: dict, common: set[str]) -> str:
    return " ".join(o for o in str(record.get("overrides", "")).split() if o not in common) or "no overrides"


def take_sweep_outcome() -> SweepOutcome | None:
    """The outcome of the sweep that just ended in this process (once), or None."""
    global _SWEEP_OUTCOME
    outcome, _SWEEP_OUTCOME = _SWEEP_OUTCOME, None
    return outcome


JOBS_DIR = ".jobs"  # <sweep>/.jobs/<num>.json: each job's status, written where the job ran


def _job_records(sweep_dir: Path) -> list[dict]:
    out = []
    for path in sorted((sweep_dir / JOBS_DIR).glob("*.json"), key=lambda p: (len(p.stem), p.stem)):
        try:
            out.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return out


class SweepCallback(_HydraCallback):
    """Pins the sweep folder for every job of a ``-m`` sweep, records each job's status, and writes one
    report at its root: the finished experiments, the unfinished ones and the failed jobs."""

    def __init__(self, report: bool = True, levels: list[float] | None = None):
        self.report = report
        self.levels = list(levels) if levels else None

    def on_multirun_start(self, config, **kwargs) -> None:
        from lth.identity import SWEEP_ENV, sweep_name

        os.environ.pop(SWEEP_ENV, None)
        try:
            os.environ[SWEEP_ENV] = sweep_name(config)
        except Exception as exc:  # never stop a sweep for its folder's name
            log.warning("could not pin the sweep folder name (%s)", exc)
        try:  # the job records of an earlier run of this sweep
            for old in (Path(str(config.hydra.sweep.dir)) / JOBS_DIR).glob("*.json"):
                old.unlink()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not clear the sweep's old job records (%s)", exc)

    def on_job_end(self, config, job_return, **kwargs) -> None:
        """``wandb.finish()`` after every job, so the next job of a multirun starts its own run; in a sweep,
        the job's status is recorded at the sweep root."""
        from lth.tracking import _quiet_finish

        _quiet_finish()
        try:
            if str(config.hydra.mode) not in ("MULTIRUN", "RunMode.MULTIRUN"):
                return
            from hydra.core.utils import JobStatus

            from lth.storage import atomic_write_json

            try:  # Hydra's public JobReturn.return_value: the job's value, or its exception raised again
                value = job_return.return_value
            except Exception as exc:  # noqa: BLE001 - a failed job's exception
                value = exc
            record = {"num": int(config.hydra.job.num), "overrides": " ".join(job_return.overrides or []),
                      "dir": str(config.hydra.runtime.output_dir), "status": "done"}
            if job_return.status == JobStatus.FAILED:
                record.update(status="failed", error=f"{value.__class__.__name__}: {value}", user_error=False)
            elif isinstance(value, JobFailed):
                record.update(status="failed", error=value.message, user_error=value.user_error)
            atomic_write_json(Path(str(config.hydra.sweep.dir)) / JOBS_DIR / f"{record['num']}.json", record)
        except Exception as exc:  # noqa: BLE001 - the record is a convenience; the job's own files are intact
            log.warning("could not record the sweep job's status (%s: %s)", exc.__class__.__name__, exc)

    def on_multirun_end(self, config, **kwargs) -> None:
        global _SWEEP_OUTCOME
        from lth.identity import SWEEP_ENV

        sweep_dir = Path(str(config.hydra.sweep.dir))
        records = _job_records(sweep_dir)
        failed = [r for r in records if r.get("status") == "failed"]
        md = None
        try:
            if self.report:
                md = report([sweep_dir], sweep_dir, self.levels, failed_jobs=failed)
                print(f"\nSweep report: {md}", flush=True)  # (once: not also as a log line)
        except FileNotFoundError as exc:
            log.warning("no sweep report: %s", exc)
        except Exception as exc:  # the jobs' results are on disk whatever happens here
            log.warning("the sweep report failed (%s: %s); run  python -m lth.report %s", exc.__class__.__name__, exc,
                        config.hydra.sweep.dir)
        finally:
            os.environ.pop(SWEEP_ENV, None)
        common = set.intersection(*(set(str(r.get("overrides", "")).split()) for r in records)) \
            if len(records) > 1 else set()
        _SWEEP_OUTCOME = SweepOutcome(len(records), failed, md, common)
