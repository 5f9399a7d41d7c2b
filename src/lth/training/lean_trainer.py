"""Lightning pieces with less per-step Python cost, for networks whose step takes milliseconds.

Lightning wraps every hook call (about 40 per training step) in ``trainer.profiler.profile(...)``.
With the default ``PassThroughProfiler`` that still builds and runs a generator-based context
manager each time. ``NoProfiler`` returns one shared ``nullcontext`` instead: same behaviour,
no profiling, a fraction of the cost. ``trainer.profiler=simple`` (or ``advanced``, ``pytorch``)
selects one of Lightning's profilers instead.

``RoundCheckpoint`` is Lightning's ``ModelCheckpoint`` with its ``state_key`` computed once:
Lightning formats the key of every callback for every hook call, and ``ModelCheckpoint``
builds it from a dict ``repr`` each time.
"""

from __future__ import annotations

import contextlib
from functools import cached_property

from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.profilers import PassThroughProfiler

_NULL = contextlib.nullcontext()


class NoProfiler(PassThroughProfiler):
    def profile(self, action_name: str):  # type: ignore[override]
        return _NULL


class RoundCheckpoint(ModelCheckpoint):
    @cached_property
    def state_key(self) -> str:  # type: ignore[override]
        return ModelCheckpoint.state_key.fget(self)
