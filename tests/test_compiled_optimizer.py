"""optimizer.compile=true: Adam/AdamW/SGD and the mask in one torch.compile'd update."""

import copy

import pytest
import torch
import torch.nn.functional as F

from lth.lottery import Lottery
from lth.models import LeNet
from lth.training.module import OptimizerSettings
from lth.pruning import Mask, MaskEnforcer, prune_layerwise
from lth.pruning import compiled_optimizer
from lth.machine import missing_compiler
from lth.pruning.compiled_optimizer import CompiledMaskedOptimizer
from lth.validation import ConfigError
from tests.conftest import FAST, compose_config

pytestmark = pytest.mark.skipif(missing_compiler("cpu") is not None,
                                reason=f"torch.compile on the CPU needs a C++ compiler: {missing_compiler('cpu')}")

OPTIMIZERS = [
    OptimizerSettings("adam", lr=1e-2),
    OptimizerSettings("adam", lr=1e-2, weight_decay=1e-2),
    OptimizerSettings("adamw", lr=1e-2, weight_decay=0.1),
    OptimizerSettings("sgd", lr=0.1),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3),
    OptimizerSettings("sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True),
]
ids = [f"{s.name}-m{s.momentum}-wd{s.weight_decay}-n{s.nesterov}" for s in OPTIMIZERS]
RATES = {"hidden.0.weight": 0.8, "hidden.1.weight": 0.8, "output.weight": 0.5}
# Float rounding only: torch's fused and foreach Adam differ by ~6e-8 after 30 such steps.
CLOSE = dict(rtol=1e-5, atol=2e-6)


def compiled(settings: OptimizerSettings) -> OptimizerSettings:
    return OptimizerSettings(settings.name, settings.lr, settings.momentum, settings.weight_decay, settings.nesterov,
                             compile=True)


def model_and_batches(seed=0, n=40):
    torch.manual_seed(seed)
    model = LeNet((1, 8, 8), 10, hidden=(64, 32))
    x, y = torch.randn(256, 1, 8, 8), torch.randint(0, 10, (256,))
    return model, [(x[i], y[i]) for i in (torch.randint(0, 256, (32,)) for _ in range(n))]


def train(model, opt, batches, scheduler=None):
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()


@pytest.mark.parametrize("settings", OPTIMIZERS, ids=ids)
def test_dense_update_matches_torch_optimizer(settings):
    model, batches = model_and_batches()
    reference = copy.deepcopy(model)
    opt = compiled(settings).build(model.parameters())
    assert isinstance(opt, CompiledMaskedOptimizer)
    train(model, opt, batches)
    ref_opt = settings.build(reference.parameters())
    train(reference, ref_opt, batches)
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, **CLOSE, msg=name)
    # same state keys as torch's optimizer (so checkpoints carry over)
    assert {k for s in opt.state.values() for k in s} == {k for s in ref_opt.state.values() for k in s}


@pytest.mark.parametrize("mask_gradients", [False, True], ids=["weights", "weights+grads"])
@pytest.mark.parametrize("settings", OPTIMIZERS, ids=ids)
def test_masked_update_keeps_pruned_at_zero_and_survivors_as_mask_enforcer(settings, mask_gradients):
    model, batches = model_and_batches(1)
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()), RATES)
    mask.apply_(model)
    reference = copy.deepcopy(model)
    enforcer = MaskEnforcer(model, mask)
    opt = compiled(settings).build(model.parameters(), zip(enforcer.params, enforcer.masks), mask_gradients)
    train(model, opt, batches)
    ref_opt = settings.build(reference.parameters())
    MaskEnforcer(reference, mask, mask_gradients).attach(ref_opt)
    train(reference, ref_opt, batches)
    params = dict(model.named_parameters())
    for name, m in mask.items():
        assert torch.count_nonzero(params[name][~m]) == 0, name
        assert torch.count_nonzero(params[name][m]) > 0.99 * int(m.sum()), name  # survivors trained
    enforcer.verify()
    for (name, p), q in zip(model.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, **CLOSE, msg=name)
    if mask_gradients and settings.name != "sgd":  # pruned moments never left 0
        state = opt.state[params["hidden.0.weight"]]
        assert torch.count_nonzero(state["exp_avg"][~mask["hidden.0.weight"]]) == 0


def test_lr_schedule_applies_without_recompiling():
    from torch._dynamo.utils import counters

    settings = OptimizerSettings("adam", lr=1e-2)
    model, batches = model_and_batches(2)
    reference = copy.deepcopy(model)
    opt = compiled(settings).build(model.parameters())
    train(model, opt, batches[:1])  # compiles (or finds the graph from another test)
    graphs = counters["stats"]["unique_graphs"]
    factor = lambda step: 0.5 ** (step // 5)  # noqa: E731
    scheduler = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    train(model, opt, batches[1:], scheduler)
    assert counters["stats"]["unique_graphs"] == graphs, "a new learning rate recompiled the update"
    assert opt.param_groups[0]["lr"] < 1e-4
    ref_opt = settings.build(reference.parameters())
    train(reference, ref_opt, batches[:1])
    train(reference, ref_opt, batches[1:], torch.optim.lr_scheduler.LambdaLR(ref_opt, factor))
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, **CLOSE)


def test_state_dict_resumes_exactly_and_loads_torch_adam_state():
    settings = OptimizerSettings("adam", lr=1e-2, weight_decay=1e-3)
    model, batches = model_and_batches(3)
    straight = copy.deepcopy(model)
    opt = compiled(settings).build(straight.parameters())
    train(straight, opt, batches)

    opt = compiled(settings).build(model.parameters())
    train(model, opt, batches[:20])
    saved = copy.deepcopy(opt.state_dict())
    resumed = compiled(settings).build(model.parameters())
    resumed.load_state_dict(saved)
    train(model, resumed, batches[20:])
    for p, q in zip(model.parameters(), straight.parameters()):
        assert torch.equal(p, q)

    # a checkpoint written with torch's Adam (tensor step counts) continues as torch's Adam would
    model, batches = model_and_batches(3)
    torch_model = copy.deepcopy(model)
    torch_opt = settings.build(torch_model.parameters())
    train(torch_model, torch_opt, batches[:20])
    model.load_state_dict(torch_model.state_dict())
    ours = compiled(settings).build(model.parameters())
    ours.load_state_dict(copy.deepcopy(torch_opt.state_dict()))
    train(model, ours, batches[20:])
    train(torch_model, torch_opt, batches[20:])
    for p, q in zip(model.parameters(), torch_model.parameters()):
        torch.testing.assert_close(p, q, **CLOSE)


def test_step_hooks_and_closure_run():
    model, batches = model_and_batches(4, n=3)
    opt = compiled(OptimizerSettings("sgd", lr=0.1, momentum=0.9)).build(model.parameters())
    seen = []
    opt.register_step_pre_hook(lambda o, args, kwargs: seen.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: seen.append("post"))
    x, y = batches[0]

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss

    before = model.output.weight.detach().clone()
    loss = opt.step(closure)
    assert seen == ["pre", "post"] and loss.requires_grad
    assert not torch.equal(model.output.weight, before)
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_failed_compilation_says_what_to_do(monkeypatch):
    """(Without a compiler at all the message names that: checked by hand with CXX=/nonexistent.)"""
    failure = torch._dynamo.exc.BackendCompilerFailed.__new__(torch._dynamo.exc.BackendCompilerFailed)
    Exception.__init__(failure, "cl.exe exited with status 2")  # the constructor differs between torch versions

    def failing(kind):
        def fn(*args):
            raise failure
        return fn

    monkeypatch.setattr(compiled_optimizer, "_compiled_update", failing)
    model, batches = model_and_batches(5, n=1)
    opt = compiled(OptimizerSettings("adam")).build(model.parameters())
    with pytest.raises(RuntimeError, match="optimizer.compile=true could not compile.*cl.exe exited.*optimizer.compile=false"):
        train(model, opt, batches)


def test_config_checks():
    from lth.validation import check_value

    with pytest.raises(ConfigError, match="optimizer.compile='yes' must be true or false"):
        check_value("optimizer.compile", "yes")  # the command line's value, before OmegaConf would coerce it


def test_without_a_compiler_the_run_stops_before_training_and_says_what_to_do(tmp_path):
    """The real check, in a process whose C++ compiler (``$CXX``, read by Inductor) does not exist."""
    from tests.test_validation import finish, lth_run

    run_dir = tmp_path / "exp"
    code, out, err = finish(lth_run("experiment=quickstart", "optimizer.compile=true", f"hydra.run.dir={run_dir}",
                                    env={"CXX": str(tmp_path / "no-such-g++")}))
    assert code == 2, err
    assert "Traceback" not in out + err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "optimizer.compile=true needs a C++ compiler" in errors[0], err
    assert "no-such-g++" in errors[0] and errors[0].endswith("or set optimizer.compile=false")
    assert not (run_dir / "experiment.json").exists()


def test_experiment_with_compiled_optimizer_matches_the_default(tmp_path):
    """Two rounds of the quick start (ticket + reinit control) with optimizer.compile=true: the
    round-end check finds every pruned weight at 0, and results equal the default's up to rounding."""
    common = ["experiment=quickstart", *FAST, "prune.rounds=1", "train.iterations=150", "eval_every=50",
              "controls=[reinit]"]
    rows = Lottery(compose_config([*common, "optimizer.compile=true"]), tmp_path / "compiled").run()
    reference = Lottery(compose_config(common), tmp_path / "default").run()
    assert [(r["round"], r["branch"]) for r in rows] == [(r["round"], r["branch"]) for r in reference]
    for r, ref in zip(rows, reference):
        assert r["weights_remaining"] == ref["weights_remaining"]
        assert abs(r["test_acc_at_es"] - ref["test_acc_at_es"]) <= 0.01, (r, ref)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_update_matches_torch_adam_on_the_cpu():
    model, batches = model_and_batches(6)
    mask = prune_layerwise(Mask.dense(model), dict(model.named_parameters()), RATES)
    mask.apply_(model)
    reference = copy.deepcopy(model)
    model.cuda()
    enforcer = MaskEnforcer(model, mask)
    settings = OptimizerSettings("adam", lr=1e-2, weight_decay=1e-3)
    opt = compiled(settings).build(model.parameters(), zip(enforcer.params, enforcer.masks))
    train(model, opt, [(x.cuda(), y.cuda()) for x, y in batches])
    ref_opt = settings.build(reference.parameters())
    MaskEnforcer(reference, mask).attach(ref_opt)
    train(reference, ref_opt, batches)
    enforcer.verify()
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-4, atol=1e-5)


def test_an_interrupted_compiled_round_resumes_from_its_checkpoint_to_the_same_results(tmp_path):
    """Lightning's mid-round checkpoint carries the compiled optimizer's state (moments, step counts)."""
    from tests.test_resume import SMALL, Interrupt, InterruptAt, assert_same_experiment

    overrides = [*SMALL, "optimizer.compile=true"]
    Lottery(compose_config(overrides), tmp_path / "straight").run()
    interrupted = Lottery(compose_config(overrides), tmp_path / "resumed")
    interrupted.extra_callbacks.append(InterruptAt("round_01/ticket", 25))
    with pytest.raises(Interrupt):
        interrupted.run()
    assert (tmp_path / "resumed" / "round_01" / "ticket" / "checkpoints" / "last.ckpt").exists()
    Lottery(compose_config(overrides), tmp_path / "resumed").run()
    assert_same_experiment(tmp_path / "straight", tmp_path / "resumed")
