"""Settings and their statistics: experiments that differ only in ``seed`` are trials of one setting
(``lth.identity``'s definition of an experiment); every metric as mean with min/max, standard
deviation and 95% confidence interval over them (``lth.report.spread``)."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lth.report.records import ExperimentRecord, read_csv
from lth.report.spread import spread

log = logging.getLogger("lth")

METRICS = ("test_acc_at_es", "es_iteration", "final_test_acc", "min_val_loss", "val_acc_at_es")
# Measured by analysis branches only (e.g. the error barrier of ``instability``): aggregated where present.
ANALYSIS_METRICS = ("instability",)
# Columns beside each metric's mean: ``<metric>_<stat>`` (std and the 95% CI only over two or more trials).
STATS = ("min", "max", "std", "ci_low", "ci_high")


@dataclass
class Setting:
    """Experiments that differ only in seed."""

    key: str
    config: dict
    experiments: list[ExperimentRecord] = field(default_factory=list)
    label: str = ""
    slug: str = ""


def _flatten(d: Any, prefix: str = "") -> dict:
    if not isinstance(d, dict):
        return {prefix: d}
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: v})
    return out


def setting_config(config: dict) -> dict:
    """The saved configuration as the setting it belongs to: ``lth.identity``'s definition of the
    experiment (the same one that names its folder and its W&B group), without the seed."""
    from lth.identity import identity_config

    return {k: v for k, v in _flatten(identity_config(config)).items() if k != "seed"}


def _short(v: Any) -> str:
    return json.dumps(v, default=str) if isinstance(v, (list, dict)) else str(v)


def group_settings(experiments: list[ExperimentRecord]) -> list[Setting]:
    groups: dict[str, Setting] = {}
    for exp in experiments:
        cfg = setting_config(exp.config) if exp.config else {"path": str(exp.path)}
        key = json.dumps(cfg, sort_keys=True, default=str)
        name = (exp.config or {}).get("model", {}).get("name")  # outside the identity, but the titles name the model
        named = {**cfg, "model.name": name} if name else cfg
        setting = groups.setdefault(key, Setting(key, named))
        same = next((e for e in setting.experiments if exp.config and e.seed == exp.seed), None)
        if same is not None:  # a copy of an experiment (another folder, the same settings and seed): one trial
            log.warning("warning: %s is the same experiment as %s (the same settings and seed %s): counted once",
                        exp.path, same.path, exp.seed)
            continue
        setting.experiments.append(exp)
    settings = list(groups.values())
    labels = _override_labels(settings) or _key_labels(settings)
    for i, s in enumerate(settings):
        s.experiments.sort(key=lambda e: (str(e.seed), str(e.path)))
        s.label = labels[i]
        if not s.label:
            c = s.config
            s.label = " ".join(str(x) for x in (c.get("model.name"), c.get("prune.scheme")) if x) or s.experiments[0].path.name
        s.slug = f"s{i + 1}_" + re.sub(r"[^A-Za-z0-9.=+-]+", "_", s.label)[:60].strip("_")
    return settings


def _override_labels(settings: list[Setting]) -> list[str] | None:
    """Each setting by the command-line overrides that tell it from the others (``prune=global``), as the
    user wrote them; None when a setting was not run by Hydra or two settings would read the same."""
    from lth.identity import names_experiment

    named = []
    for s in settings:
        overrides = s.experiments[0].overrides
        if overrides is None:
            return None
        named.append([o for o in overrides if names_experiment(o) and o.lstrip("+~").partition("=")[0] != "seed"])
    labels = [", ".join(o for o in mine if any(o not in other for other in named)) for mine in named]
    return labels if len(set(labels)) == len(labels) and (len(labels) == 1 or all(labels)) else None


def _key_labels(settings: list[Setting]) -> list[str]:
    """Each setting by the keys of the identity whose values tell it from the others, leaving out keys it
    does not read and a ``prune.*`` key that only repeats its ``model.*`` default (``prune.rates: ${model.rates}``)."""
    varying = sorted({k for s in settings for k in s.config if k not in ("data._target_", "model.arch._target_") and
                      len({json.dumps(t.config.get(k), default=str) for t in settings}) > 1})
    copies = {"prune.rates.": "model.rates.", "prune.rate": "model.global_rate", "prune.exempt": "model.exempt"}

    def repeats(c: dict, k: str) -> bool:
        source = next((k.replace(p, m, 1) for p, m in copies.items() if k.startswith(p)), None)
        return source is not None and source in c and c[source] == c[k]

    return [", ".join(f"{k}={_short(s.config[k])}" for k in varying if k in s.config and not repeats(s.config, k))
            for s in settings]


def aggregate(setting: Setting) -> list[dict]:
    """One row per (branch, round): mean, min, max, std and 95% CI of every metric over the setting's trials."""
    cells: dict[tuple, list[dict]] = {}
    for exp in setting.experiments:
        for r in exp.rows:
            cells.setdefault((r["branch"], int(r["round"])), []).append(r)
    out = []
    for (branch, rnd), rows in cells.items():
        ok = [r for r in rows if not r.get("diverged")]
        agg = {"setting": setting.label, "branch": branch, "round": rnd, "trials": len(ok), "diverged": len(rows) - len(ok),
               "seeds": " ".join(str(exp.seed) for exp in setting.experiments
                                 if any(int(r["round"]) == rnd and r["branch"] == branch for r in exp.rows)),
               "weights_remaining": sum(float(r["weights_remaining"]) for r in rows) / len(rows)}
        for m in METRICS + ANALYSIS_METRICS:
            vals = [float(r[m]) for r in ok if isinstance(r.get(m), (int, float)) and not math.isnan(float(r[m]))]
            if vals:
                st = spread(vals)
                agg[m] = st["mean"]
                agg.update({f"{m}_{k}": st[k] for k in STATS if st[k] is not None})
        out.append(agg)
    from lth.lottery.registry import order

    return sorted(out, key=lambda r: (r["round"], order(r["branch"]), r["branch"]))


def mean_curve(paths: list[Path], key: str | None = None) -> list[dict]:
    """Mean with min, max, std and 95% CI of ``key`` over the trials' curves, at the iterations they
    share (default: the test accuracy when every point has one, else the validation accuracy:
    ``curve_metric``)."""
    curves = [read_csv(p) for p in paths if p.exists()]
    if key is None:
        from lth.figures import curve_metric

        key = curve_metric(curves)
    curves = [c for c in curves if c and key in c[0]]
    if not curves:
        return []
    by_iter = [{int(pt["iteration"]): float(pt[key]) for pt in c} for c in curves]
    common = sorted(set.intersection(*(set(d) for d in by_iter)))
    out = []
    for it in common:
        st = spread([d[it] for d in by_iter])
        out.append({"iteration": it, key: st["mean"], **{f"{key}_{k}": st[k] for k in STATS if st[k] is not None}})
    return out


def pick_levels(available: list[float], wanted: list[float] | None, default_count: int = 5) -> list[float]:
    """The available levels nearest to ``wanted`` (% remaining); by default a spread of at most 5."""
    levels = sorted(set(available), reverse=True)
    if not levels:
        return []
    if wanted:
        picked = {min(levels, key=lambda l: abs(math.log(max(l, 1e-9)) - math.log(max(w, 1e-9)))) for w in wanted}
        return sorted(picked, reverse=True)
    if len(levels) <= default_count:
        return levels
    step = (len(levels) - 1) / (default_count - 1)
    return sorted({levels[round(i * step)] for i in range(default_count)}, reverse=True)
