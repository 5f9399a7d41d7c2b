"""``python -m lth.report PATH... [--out DIR] [--levels ...]``."""

import sys

from lth.report.cli import main

sys.exit(main())
