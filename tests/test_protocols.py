"""The IMP protocol end to end on the embedded digits: resets, rewinding, warm-up, controls, seeds."""

import csv

import pytest
import pytorch_lightning as pl
import torch

from lth.lottery import Lottery
from lth.pruning import Mask
from lth.training.schedule import LRSchedule
from lth.storage import load_tensors
from tests.conftest import FAST, compose_config

SMALL = ["experiment=quickstart", *FAST, "controls=[]", "train.iterations=40", "eval_every=10", "prune.rounds=2"]


class RecordStart(pl.Callback):
    """Records, per training, the weights, LR, optimizer state and first batch at its start."""

    def __init__(self):
        self.starts = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == 0 and pl_module.global_step == 0:
            opt = trainer.optimizers[0]
            self.starts.append({
                "state": {k: v.detach().clone() for k, v in pl_module.model.state_dict().items()},
                "lr": opt.param_groups[0]["lr"],
                "opt_state": len(opt.state),
                "batch": (batch[0][0].clone(), batch[0][1].clone()),  # the group's first batch
                "start": pl_module.start_iteration,
            })


def run(tmp_path, overrides, record=None):
    cfg = compose_config([*SMALL, *overrides])
    exp = Lottery(cfg, tmp_path / "exp")
    if record is not None:
        exp.extra_callbacks.append(record)
    return exp, exp.run()


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_reset_restores_every_parameter_and_buffer_to_theta0_then_masks(tmp_path):
    rec = RecordStart()
    exp, rows = run(tmp_path, [], rec)
    theta0 = load_tensors(exp.dir / "theta0.pt")
    assert len(rec.starts) == 3  # dense + 2 rounds
    for level, start in enumerate(rec.starts):
        mask = Mask.load(exp.dir / f"round_{level:02d}" / "mask.pt")
        for name, value in start["state"].items():
            expected = theta0[name] * mask[name] if name in mask else theta0[name]
            assert torch.equal(value, expected), (level, name)  # biases included
        assert start["opt_state"] == 0  # a fresh optimizer every round
    # and the next mask was computed from the trained weights: it differs from pruning θ0
    assert rows[1]["weights_remaining"] < 100


def test_rewinding_restores_weights_lr_and_data_position_of_iteration_k(tmp_path):
    rec = RecordStart()
    k = 15
    exp, rows = run(tmp_path, [f"rewind_iteration={k}", "lr_warmup=true", "warmup.iterations=30", "schedule.milestones=[35]"], rec)
    theta_k = load_tensors(exp.dir / "theta_k.pt")
    theta0 = load_tensors(exp.dir / "theta0.pt")
    assert not torch.equal(theta_k["hidden.0.weight"], theta0["hidden.0.weight"])
    cfg = exp.cfg
    peak = float(cfg.optimizer.lr)
    dense, later = rec.starts[0], rec.starts[1:]
    assert dense["start"] == 0 and dense["lr"] == 0.0  # warm-up from 0
    stream = exp.datamodule.train_stream(int(cfg.train.batch_size), int(cfg.seed), int(cfg.train.iterations))
    for level, start in enumerate(later, start=1):
        mask = Mask.load(exp.dir / f"round_{level:02d}" / "mask.pt")
        for name, value in start["state"].items():
            expected = theta_k[name] * mask[name] if name in mask else theta_k[name]
            assert torch.equal(value, expected)
        assert start["start"] == k
        assert start["lr"] == pytest.approx(peak * k / 30)  # the LR of iteration K
        assert start["opt_state"] == 0  # fresh optimizer
        x, y = stream.batch(k)  # the data position of iteration K
        assert torch.equal(start["batch"][0], x) and torch.equal(start["batch"][1], y)
    # rounds after the dense one evaluate at absolute iterations from K on
    curve = read_csv(exp.dir / "round_01" / "ticket" / "curve.csv")
    assert [int(float(p["iteration"])) for p in curve] == [15, 20, 30, 40]  # the start point K is evaluated too
    assert float(curve[-1]["lr"]) == pytest.approx(peak * 0.1)  # after the milestone at 35


def test_rewound_controls_start_where_the_ticket_starts(tmp_path):
    """With rewinding (OpenLTH's branches: randomly_prune starts at the rewind step from its state, and
    randomly_reinitialize at the rewind step from a fresh initialisation), both controls start at iteration
    K with the learning rate and data of K and a fresh optimizer; random pruning from θK under its own
    random mask, the re-initialisation from new weights under the ticket's mask."""
    rec = RecordStart()
    k = 15
    exp, rows = run(tmp_path, [f"rewind_iteration={k}", "lr_warmup=true", "warmup.iterations=30", "prune.rounds=1",
                               "controls=[reinit,random_prune]", "parallel_branches=1"], rec)
    theta_k, theta0 = load_tensors(exp.dir / "theta_k.pt"), load_tensors(exp.dir / "theta0.pt")
    ticket_mask = Mask.load(exp.dir / "round_01" / "mask.pt")
    random_mask = Mask.load(exp.dir / "round_01" / "random_prune" / "mask.pt")
    assert [(r["round"], r["branch"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_prune")]
    cfg = exp.cfg
    x, y = exp.datamodule.train_stream(int(cfg.train.batch_size), int(cfg.seed), int(cfg.train.iterations)).batch(k)
    _, ticket, reinit, random_prune = rec.starts
    for start in (ticket, reinit, random_prune):
        assert start["start"] == k and start["opt_state"] == 0
        assert start["lr"] == pytest.approx(float(cfg.optimizer.lr) * k / 30)
        assert torch.equal(start["batch"][0], x) and torch.equal(start["batch"][1], y)
    for name, value in random_prune["state"].items():
        expected = theta_k[name] * random_mask[name] if name in random_mask else theta_k[name]
        assert torch.equal(value, expected), name
    for name, value in reinit["state"].items():
        if name in ticket_mask:
            alive = ticket_mask[name]
            assert (value[~alive] == 0).all(), name  # the ticket's mask
            assert not torch.equal(value[alive], theta0[name][alive]) and not torch.equal(value[alive], theta_k[name][alive])


def test_warmup_lr_values_at_chosen_iterations():
    s = LRSchedule(warmup_iterations=100, milestones=(150, 180), gamma=0.1)
    assert [s.factor(i) for i in (0, 25, 50, 99, 100, 149)] == [0.0, 0.25, 0.5, 0.99, 1.0, 1.0]
    assert s.factor(150) == pytest.approx(0.1) and s.factor(199) == pytest.approx(0.01)


def test_warmup_in_a_run_logs_the_ramp(tmp_path):
    exp, _ = run(tmp_path, ["lr_warmup=true", "warmup.iterations=40", "optimizer.lr=0.01", "prune.rounds=1"])
    curve = read_csv(exp.dir / "round_00" / "ticket" / "curve.csv")
    # lr recorded after the step at iteration i is the LR for the next step: factor((i)/40); 0 at the start
    assert [float(p["lr"]) for p in curve] == pytest.approx([0.01 * i / 40 for i in (0, 10, 20, 30)] + [0.01])


def test_controls_train_at_every_level_with_ticket_counts(tmp_path):
    exp, rows = run(tmp_path, ["controls=[reinit,random_prune]"])
    branches = [(r["round"], r["branch"]) for r in rows]
    assert branches == [(0, "ticket"), (1, "ticket"), (1, "reinit"), (1, "random_prune"),
                        (2, "ticket"), (2, "reinit"), (2, "random_prune")]
    for level in (1, 2):
        ticket = Mask.load(exp.dir / f"round_{level:02d}" / "mask.pt")
        rnd = Mask.load(exp.dir / f"round_{level:02d}" / "random_prune" / "mask.pt")
        assert rnd.remaining() == ticket.remaining()
        assert any(not torch.equal(rnd[n], ticket[n]) for n in ticket if not ticket[n].all())
    table = read_csv(exp.dir / "results.csv")
    assert {r["branch"] for r in table} == {"ticket", "reinit", "random_prune"}
    same_level = [r for r in table if r["round"] == "2"]
    assert len({r["weights_remaining"] for r in same_level}) == 1


def test_same_seed_same_masks_and_metrics_different_seed_differs(tmp_path):
    timing = ("train_time_s",)
    _, a = run(tmp_path / "a", ["seed=3"])
    _, b = run(tmp_path / "b", ["seed=3"])
    _, c = run(tmp_path / "c", ["seed=4"])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in timing} for r in rows]  # noqa: E731
    assert strip(a) == strip(b)
    for level in range(3):
        ma = Mask.load(tmp_path / "a" / "exp" / f"round_{level:02d}" / "mask.pt")
        mb = Mask.load(tmp_path / "b" / "exp" / f"round_{level:02d}" / "mask.pt")
        assert all(torch.equal(ma[n], mb[n]) for n in ma)
    t3 = load_tensors(tmp_path / "a" / "exp" / "theta0.pt")
    t4 = load_tensors(tmp_path / "c" / "exp" / "theta0.pt")
    assert not torch.equal(t3["hidden.0.weight"], t4["hidden.0.weight"])
    assert strip(a) != strip(c)


def test_continue_strategy_prunes_from_continued_training(tmp_path):
    exp, rows = run(tmp_path, ["strategy=continue"])
    assert [(r["round"], r["branch"]) for r in rows] == [(0, "ticket"), (1, "ticket"), (1, "continued"),
                                                         (2, "ticket"), (2, "continued")]
    assert (exp.dir / "round_01" / "continued" / "final.pt").exists()


def test_global_pruning_in_an_experiment_spares_exempt_output(tmp_path):
    exp, rows = run(tmp_path, ["prune=global", "prune.rate=0.3", "model.exempt=[output]"])
    mask = Mask.load(exp.dir / "round_02" / "mask.pt")
    assert mask["output.weight"].all()
    assert not mask["hidden.0.weight"].all()


class CountBatchEnds(pl.Callback):
    def __init__(self):
        self.calls = self.steps = 0
        self.plain_backward = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.calls += 1
        self.steps += len(batch)

    def on_train_end(self, trainer, pl_module):
        self.plain_backward.append(pl_module.__dict__.get("plain_backward"))


class CountBackwards(CountBatchEnds):
    """A callback with a backward hook: LotteryModule must then go through Lightning's backward."""

    def __init__(self):
        super().__init__()
        self.backwards = 0

    def on_after_backward(self, trainer, pl_module):
        self.backwards += 1


class BeforeStep(pl.Callback):
    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        pass


def _results_without_timing(folder):
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("train_time_s", "time_s")} for r in rows]
    curves = {p.parent.relative_to(folder).as_posix(): strip(read_csv(p)) for p in sorted(folder.rglob("curve.csv"))}
    return strip(read_csv(folder / "results.csv")), curves


def test_results_are_identical_for_any_steps_per_call_gradient_masking_and_backward_path(tmp_path):
    """Grouping optimizer steps per Lightning batch, masking gradients too, and calling
    ``loss.backward()`` directly instead of Lightning's backward are speed choices only: masks,
    curves (losses, accuracies, LR) and results are bit-identical."""
    base = ["lr_warmup=true", "warmup.iterations=30", "rewind_iteration=10", "schedule.milestones=[35]",
            "controls=[reinit]"]
    variants = {"one step per batch": ["trainer.steps_per_call=1"], "groups": ["trainer.steps_per_call=20"],
                "gradients masked": ["mask_gradients=true"]}
    variants["Lightning's backward"] = []
    out, counts = {}, {}
    for tag, extra in variants.items():
        counts[tag] = CountBackwards() if tag == "Lightning's backward" else CountBatchEnds()
        exp, _ = run(tmp_path / tag.replace(" ", "_").replace("'", ""), [*base, *extra], counts[tag])
        out[tag] = _results_without_timing(exp.dir)
        out[tag + " masks"] = [Mask.load(p) for p in sorted(exp.dir.glob("round_*/mask.pt"))]
    assert out["one step per batch"] == out["groups"] == out["gradients masked"] == out["Lightning's backward"]
    # the backward path: direct unless a callback has a backward hook, which then sees every step
    assert set(counts["groups"].plain_backward) == {True}
    assert set(counts["Lightning's backward"].plain_backward) == {False}
    assert counts["Lightning's backward"].backwards == counts["Lightning's backward"].steps > 0
    for a, b in zip(out["one step per batch masks"], out["groups masks"]):
        assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a.keys())
    # the grouping did happen: 10 steps per Lightning batch (gcd of 10, 40, eval 10, θK 10)
    assert counts["one step per batch"].calls == counts["one step per batch"].steps
    assert counts["groups"].steps == counts["one step per batch"].steps == 10 * counts["groups"].calls


@pytest.mark.parametrize("limit, iterations, expected", [
    (20, (0, 50000, 100, 1000, 0), 20),   # a paper LeNet round
    (20, (10, 40, 10, 1000, 10), 10),     # rewound to 10: groups must land on 10, 20, ...
    (7, (0, 40, 10, 10, 0), 5),           # the largest divisor under the limit
    (20, (0, 37, 10, 1000, 0), 1),        # 37 iterations: no common group
])
def test_steps_per_call_lands_on_every_event(limit, iterations, expected):
    from lth.training.round import steps_per_call

    assert steps_per_call(limit, *iterations) == expected


def test_constant_schedule_sets_the_lr_of_the_start_iteration_without_a_scheduler():
    from lth.models import LeNet
    from lth.training.module import LotteryModule, OptimizerSettings

    s = LRSchedule(warmup_iterations=0, milestones=(30,), gamma=0.1)
    assert s.is_constant(0, 30) and s.is_constant(30, 100) and not s.is_constant(0, 31)
    assert not LRSchedule(warmup_iterations=10).is_constant(5, 20) and LRSchedule(warmup_iterations=10).is_constant(10, 20)
    module = LotteryModule(LeNet((1, 8, 8), 10, hidden=(8, 8)), None, OptimizerSettings("adam", lr=0.5), s, 40, 100)
    opt = module.configure_optimizers()
    assert isinstance(opt, torch.optim.Optimizer) and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    module = LotteryModule(LeNet((1, 8, 8), 10, hidden=(8, 8)), None, OptimizerSettings("adam", lr=0.5), s, 0, 100)
    assert "lr_scheduler" in module.configure_optimizers()


def test_lightning_profiler_can_be_selected_and_checkpoint_key_is_cached(tmp_path, caplog):
    from pytorch_lightning.callbacks import ModelCheckpoint

    from lth.training.lean_trainer import RoundCheckpoint

    ckpt = RoundCheckpoint(dirpath=str(tmp_path), filename="last", every_n_train_steps=10)
    assert ckpt.state_key == ModelCheckpoint.state_key.fget(ckpt) and "every_n_train_steps': 10" in ckpt.state_key
    assert ckpt.state_key is ckpt.state_key  # computed once
    record = CountBatchEnds()
    with caplog.at_level("INFO"):
        _, rows = run(tmp_path, ["trainer.profiler=simple", "prune.rounds=1"], record)
    assert len(rows) == 2 and not any(r["diverged"] for r in rows)
    assert caplog.text.count("Profiler Report") == 2  # one report logged per round
    assert set(record.plain_backward) == {False}  # profiled: backward goes through Lightning's hooks


@pytest.mark.parametrize("trainer_kwargs, plain", [
    ({}, True),
    ({"precision": "bf16-mixed"}, False),             # mixed precision: Lightning's backward
    ({"profiler": "simple"}, False),                  # profiled: the hooks are timed
    ({"callbacks": [CountBackwards()]}, False),       # a callback with a backward hook
    ({"callbacks": [BeforeStep()]}, False),           # a callback that looks at gradients before the step
])
def test_direct_backward_only_when_lightnings_would_do_nothing_else(trainer_kwargs, plain):
    from lth.training.lean_trainer import NoProfiler
    from lth.models import LeNet
    from lth.training.module import LotteryModule, OptimizerSettings, backward_hooks_are_no_ops
    from lth.training.schedule import LRSchedule

    kwargs = {"profiler": NoProfiler(), **trainer_kwargs}
    trainer = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False, **kwargs)
    module = LotteryModule(LeNet((1, 8, 8), 10), None, OptimizerSettings(), LRSchedule())
    assert backward_hooks_are_no_ops(trainer, module) is plain
