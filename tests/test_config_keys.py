"""The schema's declarations hold, key by key (issue #19): for every key of lth.config_schema, changing it
(to its declared ``probe`` value, under the choices that make it read) either changes a trained result,
is declared outside the identity (speed, output, the plan), or is refused; and where its ``when`` says it is
not read, setting it anyway (bypassing the refusal) changes no trained result. A key added later is
covered by its declaration, without a new test."""

from __future__ import annotations

import csv
import json
import re

import pytest

from lth.config_schema import BRANCH, RESULT, fields
from lth.identity import experiment_hash
from lth.lottery import Lottery
from lth.storage import load_tensors
from lth.validation import ConfigError, check, check_value, resolved
from tests.conftest import FAST, SHARED_DATA, compose_config

BASE = ["experiment=quickstart", *FAST, "controls=[]", "train.iterations=8", "eval_every=4", "prune.rounds=1",
        f"data.root={SHARED_DATA}", "data.download=false"]
# Keys this CPU-only test cannot train with, and where they are tested instead.
ELSEWHERE = {"trainer.devices": "DDP: tests/test_ddp.py", "trainer.strategy": "DDP: tests/test_ddp.py",
             "optimizer.compile": "a 16 s compilation: tests/test_compiled_optimizer.py",
             "divergence_factor": "a diverged ticket ends the experiment: tests/test_divergence.py",
             **{f"data.{k}": "a prepared image-folder dataset: tests/test_imagefolder.py"
                for k in ("path", "image_size", "num_workers")}}
TIMING = ("train_time_s", "time_s")
NEEDS = {"prune.schedule": ["prune.rounds=2"]}  # one-shot and iterative pruning agree at level 1


def fmt(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(map(fmt, value)) + "]"
    return "null" if value is None else str(value)


def overrides(name: str, value) -> list[str]:
    if isinstance(value, dict):
        return [f"{name}.{k}={fmt(v)}" for k, v in value.items()] if name == "model.arch" else \
            [f"{name}={{{','.join(f'{k}:{fmt(v)}' for k, v in value.items())}}}"]
    return [f"{name}={fmt(value)}"]


_results: dict[str, list] = {}


def trained(tmp_path, extra: list[str]) -> list:
    """Every row (timing left out), learning curve and saved weight of a tiny experiment."""
    key = json.dumps(extra)
    if key not in _results:
        folder = tmp_path / f"exp{len(_results)}"
        lot = Lottery(compose_config([*BASE, *extra]), folder)
        rows = [{k: v for k, v in r.items() if k not in TIMING} for r in lot.run()]
        weights = {p.relative_to(folder).as_posix(): {k: v.tolist() for k, v in load_tensors(p).items()}
                   for p in sorted(folder.rglob("final.pt"))}
        curves = {p.relative_to(folder).as_posix(): [{k: v for k, v in r.items() if k not in TIMING}
                                                     for r in csv.DictReader(p.read_text().splitlines())]
                  for p in sorted(folder.rglob("curve.csv"))}
        _results[key] = [rows, weights, curves]
    return _results[key]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(fields()))
def test_each_key_changes_a_result_or_is_declared_outside_the_identity_or_is_refused(name, tmp_path):
    meta = fields()[name].metadata
    if name in ELSEWHERE:
        pytest.skip(ELSEWHERE[name])
    assert meta["probe"] is not None, f"{name}: declare a probe value in lth.config_schema"
    enable = (list(meta["when"].enable) if meta["when"] else []) + NEEDS.get(name, [])
    changed = overrides(name, meta["probe"])
    base_cfg, cfg = compose_config([*BASE, *enable]), compose_config([*BASE, *enable, *changed])
    try:
        check_value(name, meta["probe"]) if not isinstance(meta["probe"], dict) else None
        check(cfg, [o.partition("=")[0] for o in changed])
    except ConfigError as exc:
        assert name in str(exc) or "trainer.accelerator" in str(exc), exc
        return  # refused, with a message naming it
    same_identity = experiment_hash(cfg) == experiment_hash(base_cfg)
    if meta["effect"] not in (RESULT, BRANCH):
        assert same_identity, f"{name} is declared {meta['effect']}, outside the identity"
        return
    assert meta["effect"] == BRANCH or not same_identity, f"{name} changes results: it must be part of the identity"
    assert trained(tmp_path, [*enable, *changed]) != trained(tmp_path, enable), \
        f"{name}={meta['probe']} changed no trained result: declare it speed or output, or give a probe that matters"


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n, f in fields().items() if f.metadata["when"] and n not in ELSEWHERE
                                  and f.metadata["effect"] in (RESULT, BRANCH)])
def test_a_key_is_not_read_where_its_declaration_says_it_is_not(name, tmp_path):
    meta = fields()[name].metadata
    if meta["when"].test(resolved(compose_config(BASE))):
        pytest.skip(f"read under the base configuration ({meta['when'].words})")
    changed = overrides(name, meta["probe"])
    assert trained(tmp_path, changed) == trained(tmp_path, []), \
        f"{name} changed a result although it is declared read only when {meta['when'].words}"
    with pytest.raises(ConfigError, match=re.escape(f"is read only when {meta['when'].words}")):
        check(compose_config([*BASE, *changed]), [o.partition("=")[0] for o in changed])
