"""Reports over experiments and sweeps: ``python -m lth.report PATH... [--out DIR] [--levels ...]``.

Bad arguments of the command line give one ``error:`` line and exit status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from lth.report.build import report
from lth.report.records import find_experiments

class _Parser(argparse.ArgumentParser):
    """Bad arguments: one ``error:`` line (and where to find the usage), exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        raise SystemExit(2)


def _levels(values: list[str] | None) -> list[float] | None:
    if not values:
        return None
    out = []
    for x in (x for v in values for x in v.replace(",", " ").split() if x):
        try:
            level = float(x)
        except ValueError:
            raise ValueError(f"--levels {x!r} is not a number: give %% of weights remaining, e.g. --levels 100 51.2 21"
                             ) from None
        if not 0 < level <= 100:
            raise ValueError(f"--levels {x} is not a percentage of weights remaining in (0, 100], e.g. --levels 100 21")
        out.append(level)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = _Parser(prog="lth-report", description=__doc__.split("\n\n")[0],
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("paths", nargs="+", type=Path, help="experiment or sweep folders (searched for results.csv)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the single PATH, else outputs/reports/<hash>)")
    parser.add_argument("--levels", nargs="*", default=None,
                        help="%% weights remaining for the learning curves, e.g. --levels 100 51.2 21 7 (nearest levels are used)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        levels = _levels(args.levels)
        if args.out is not None and args.out.exists() and not args.out.is_dir():
            raise ValueError(f"--out {args.out} is a file, not a folder")
        found = find_experiments(args.paths)
        unfinished = [e for e in found if not (e.finished and e.rows)]
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        md = report(args.paths, args.out, levels, found=found)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: could not write the report ({exc.strerror or exc}: {exc.filename}); choose another folder "
              f"with --out DIR", file=sys.stderr)
        return 2
    print(md.read_text())
    if stopped := [e for e in unfinished if not e.running]:
        print(f"Unfinished (not reported as results; re-run each one's command to continue it): "
              f"{', '.join(str(e.path) for e in stopped)}")
    if running := [e for e in unfinished if e.running]:
        print(f"Running now (not reported as results yet; report again when they end): "
              f"{', '.join(f'{e.path} (pid {e.running})' for e in running)}")
    print(f"Report written to {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
