"""Commands that cannot work here, answered with one ``error:`` line (exit 2) before Hydra writes anything.

- a SLURM launcher (``hydra/launcher=slurm``, or the plugin's own ``submitit_slurm``) on a
  machine without SLURM (no ``sbatch`` on the PATH): submitit would fail deep inside the sweep;
- ``trainer=ddp`` (or a ``ddp`` strategy) inside a ``-m`` sweep under a launcher that runs jobs
  in this process or in joblib workers: Lightning's DDP re-launches the command line, which
  there either trains nothing or hangs. SLURM runs one task per device and can run it;
- ``--shell-completion`` (``-sc``) without one of ``install=``, ``uninstall=``, ``query=``
  (Hydra raises a traceback). With one, the completion is made for ``lth-run`` (the command
  the install puts on the PATH) also when called as ``python -m lth.run``: Hydra's script
  for ``python`` only completes ``python some_file.py``.

Also :func:`discard_unclaimed`: the output folder Hydra made for a job that stopped before it
claimed the folder (a dataset missing while offline) is removed, so no half-made folder stays.
"""

from __future__ import annotations

import fcntl
import shutil
import sys
from pathlib import Path

SLURM_LAUNCHERS = ("slurm", "submitit_slurm")
COMPLETION_FLAGS = ("-sc", "--shell-completion")
COMPLETION_COMMANDS = ("install", "uninstall", "query")
COMMAND = "lth-run"


def _overrides(argv: list[str]) -> dict[str, str]:
    """``key=value`` arguments (the last one wins, as in Hydra), without ``+``/``++`` prefixes."""
    out = {}
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            key, _, value = arg.partition("=")
            out[key.lstrip("+~")] = value
    return out


def misuse(argv: list[str], sbatch: str | None = None) -> str | None:
    """The error message for a command line (``sys.argv[1:]``) that cannot work here, else None."""
    args = _overrides(argv)
    if any(a in COMPLETION_FLAGS for a in argv):
        if sum(k in args for k in COMPLETION_COMMANDS) != 1:
            return (f"--shell-completion needs one of install=SHELL, uninstall=SHELL or query=SHELL (bash, zsh or fish); "
                    f"to complete {COMMAND} in bash: eval \"$({COMMAND} --shell-completion install=bash)\" (README, "
                    f"\"Shell completion\")")
        return None
    launcher = args.get("hydra/launcher", "")
    if launcher in SLURM_LAUNCHERS and (sbatch or shutil.which("sbatch")) is None:
        return (f"hydra/launcher={launcher} submits the jobs to SLURM, but this machine has no SLURM (sbatch is not on "
                f"the PATH): run the command on the cluster's login node, or sweep here with hydra/launcher=local "
                f"(parallel) or without hydra/launcher (one job after the other)")
    multirun = any(a in ("-m", "--multirun") for a in argv)
    ddp = "ddp" in args.get("trainer", "").split(",") or args.get("trainer.strategy", "").startswith("ddp")
    if multirun and ddp and launcher not in SLURM_LAUNCHERS and args.get("trainer.devices", "") != "1":
        where = f"hydra/launcher={launcher}" if launcher else "Hydra's basic launcher"
        return (f"trainer=ddp cannot run inside a -m sweep under {where}: Lightning's DDP starts the command again "
                f"for every device, which a sweep job cannot do. Run each multi-device experiment on its own (without "
                f"-m), sweep on one device per job (trainer=gpu), or on SLURM use hydra/launcher=slurm "
                f"hydra.launcher.tasks_per_node=N hydra.launcher.gpus_per_node=N trainer.devices=N (docs/SWEEPS.md)")
    return None


def refuse_misuse(argv: list[str]) -> None:
    """Print one ``error:`` line and exit 2 for a command that cannot work; name shell completions after
    ``lth-run``."""
    message = misuse(argv[1:])
    if message is not None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    if any(a in COMPLETION_FLAGS for a in argv[1:]):
        argv[0] = COMMAND  # Hydra's completion script is written for the program named in argv[0]


def discard_unclaimed(out_dir: Path) -> bool:
    """Remove ``out_dir`` if it holds only what Hydra wrote before the job stopped (``.hydra/``, the
    job's log) and no experiment claimed it (no ``experiment.json``), then its parents left empty
    below the working directory. True if it was removed."""
    out_dir = Path(out_dir)
    try:
        entries = list(out_dir.iterdir())
    except OSError:
        return False
    if any(not (e.name in (".hydra", ".lock") or (e.is_file() and e.suffix == ".log")) for e in entries):
        return False  # experiment.json, rounds, anything else: not ours to remove
    if (out_dir / ".lock").exists():
        with open(out_dir / ".lock") as handle:  # the experiment lock (lth.lottery.layout.experiment_lock)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False  # another process is running this experiment: its folder stays
            shutil.rmtree(out_dir, ignore_errors=True)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    cwd = Path.cwd().resolve()
    parent = out_dir.resolve().parent
    while parent != cwd and cwd in parent.parents:
        try:
            parent.rmdir()  # only when empty
        except OSError:
            break
        parent = parent.parent
    return True
