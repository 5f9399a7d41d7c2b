"""Every paper preset (conf/experiment/paper/*.yaml) composes, with each point of the sweep it declares,
into the paper's protocol: the values checked here are the papers' (docs/PAPERS in each preset's header)."""

import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lth.run import CONFIG_DIR
from lth.validation import check

PRESETS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment" / "paper").glob("*.yaml"))
FIVE_SEEDS = [0, 1, 2, 3, 4]


def sweep_points(name: str) -> list[list[str]]:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=paper/{name}"], return_hydra_config=True)
    params = {k: str(v).split(",") for k, v in cfg.hydra.sweeper.params.items()}
    return [[f"{k}={v}" for k, v in zip(params, combo)] for combo in itertools.product(*params.values())]


def composed(name: str, point: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=[f"experiment=paper/{name}", *point])


# The paper's protocol per preset and sweep point: (model, dataset, iterations, batch, optimizer, lr,
# warm-up, scheme, rounds, rewind, controls contain, instability).
def expected(name: str, point: dict) -> dict:
    lenet = dict(model="lenet300_100", data="MNIST", iterations=50000, batch=60, opt="adam", lr=1.2e-3, warmup=False,
                 scheme="layerwise", rates={"fc": 0.2, "output": 0.1}, rounds=20, rewind=0, controls={"reinit"},
                 exempt=[])
    conv = {"conv2": (20000, 2e-4, 0.1), "conv4": (25000, 3e-4, 0.1), "conv6": (30000, 3e-4, 0.15)}
    resnet = dict(model="resnet20", data="CIFAR10", iterations=30000, batch=128, opt="sgd", scheme="global", rate=0.2,
                  rewind=0, exempt=["output", "*shortcut*"])  # the 2019 paper: 2,560 shortcut, 640 output weights
    if name == "lenet_mnist":
        return lenet
    if name == "conv_cifar10":
        it, lr, conv_rate = conv[point["model"]]
        return dict(model=point["model"], data="CIFAR10", iterations=it, batch=60, opt="adam", lr=lr, warmup=False,
                    scheme="layerwise", rates={"conv": conv_rate, "fc": 0.2, "output": 0.1}, rounds=20, rewind=0,
                    controls={"reinit"})
    if name == "vgg19_warmup":
        w = point["lr_warmup"] == "true"
        return dict(model="vgg19", data="CIFAR10", iterations=112480, batch=64, opt="sgd", lr=0.1, warmup=w,
                    warmup_iterations=10000, scheme="global", rate=0.2, rounds=20, rewind=0, controls={"reinit"},
                    milestones=[56240, 84360], exempt=["output"])
    if name == "resnet20_cifar10":
        w = point["lr_warmup"] == "true"
        return dict(resnet, lr=0.03 if w else 0.1, warmup=w, warmup_iterations=20000, rounds=20, controls={"reinit"},
                    milestones=[20000, 25000])
    # The 2020 and 2021 papers' code (OpenLTH's cifar_resnet_20): 160 epochs of ceil(50,000/128) = 391
    # iterations, lr x0.1 at epochs 80 and 120; global pruning over every conv and linear weight
    # (sparse_global, no pruning_layers_to_ignore); kaiming_normal weights, uniform BatchNorm.
    openlth = dict(resnet, iterations=160 * 391, milestones=[80 * 391, 120 * 391], exempt=[], init="openlth")
    if name == "instability_rewind":
        return dict(openlth, lr=0.1, warmup=False, rounds=8, rewind=int(point["rewind_iteration"]), controls=set(),
                    instability=True)
    if name == "pai_vs_imp":
        return dict(openlth, lr=0.1, warmup=False, rounds=20, controls={"random_prune", "snip", "grasp", "synflow",
                    "magnitude_init", "snip_shuffle", "snip_reinit", "snip_invert", "synflow_shuffle"},
                    examples_per_class=10, synflow_iterations=100)
    raise AssertionError(f"no expectation written for the preset {name}: add one")


def test_the_issues_figures_all_have_a_preset():
    assert {"lenet_mnist", "conv_cifar10", "vgg19_warmup", "resnet20_cifar10", "instability_rewind",
            "pai_vs_imp"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_into_the_papers_protocol_at_every_sweep_point(name):
    if name == "imagenet_resnet50":
        pytest.skip("the ImageNet preset needs a prepared dataset: tests/test_resnet50.py checks its protocol and sweep")
    points = sweep_points(name)
    seeds = sorted({int(o.split("=")[1]) for p in points for o in p if o.startswith("seed=")})
    assert seeds == FIVE_SEEDS, "five seeds, as the papers' trials"
    text = (Path(CONFIG_DIR) / "experiment" / "paper" / f"{name}.yaml").read_text()
    assert "Figure" in text or "figure" in text
    assert "GPU" in text and "reports" in text  # how long a seed takes on a GPU, what the paper reports
    distinct = {tuple(o for o in p if not o.startswith("seed=")) for p in points}  # seeds change no setting
    for point in sorted(distinct):
        cfg = composed(name, list(point))
        check(cfg, machine=False)  # the project's own check of every setting
        want = expected(name, dict(o.split("=", 1) for o in point))
        assert cfg.model.name == want["model"]
        assert want["data"].lower() in str(cfg.data._target_).lower()
        assert cfg.train.iterations == want["iterations"] and cfg.train.batch_size == want["batch"]
        assert cfg.optimizer.name == want["opt"]
        assert float(cfg.optimizer.lr) == pytest.approx(want["lr"])
        assert bool(cfg.lr_warmup) == want["warmup"]
        if "warmup_iterations" in want:
            assert cfg.warmup.iterations == want["warmup_iterations"]
        if "milestones" in want:
            assert list(cfg.schedule.milestones) == want["milestones"]
        assert cfg.prune.scheme == want["scheme"] and cfg.prune.rounds == want["rounds"]
        if want["scheme"] == "layerwise":
            assert {k: float(v) for k, v in cfg.prune.rates.items() if k in want["rates"]} == want["rates"]
        else:
            assert float(cfg.prune.rate) == want["rate"]
        assert cfg.rewind_iteration == want["rewind"]
        if "exempt" in want:
            assert list(cfg.prune.exempt) == want["exempt"]
        assert cfg.model.arch.get("init", "glorot") == want.get("init", "glorot")  # OpenLTH's init, or the 2019 paper's
        assert want["controls"] <= set(cfg.controls)
        assert bool(cfg.instability) == want.get("instability", False)
        if "examples_per_class" in want:
            assert cfg.analysis.score_examples_per_class == want["examples_per_class"]
            assert cfg.analysis.synflow_iterations == want["synflow_iterations"]


@pytest.mark.parametrize("name", ["lenet_mnist", "conv_cifar10", "resnet20_cifar10", "instability_rewind", "pai_vs_imp"])
def test_the_small_network_presets_train_their_seeds_as_one_stack_where_stacking_pays(name):
    """Their sweep runs on lth's seed launcher: on a GPU the seeds' networks of a level train as one stack
    (on the CPU, where stack_networks=auto does not stack, it runs the jobs as Hydra's basic launcher)."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment=paper/{name}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == "hydra_plugins.lth_seeds_launcher.seeds_launcher.SeedStackLauncher"
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):  # the README: the command line replaces it
        cfg = compose("config", overrides=[f"experiment=paper/{name}", "hydra/launcher=basic"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")


def test_help_lists_every_option_of_every_group_presets_included():
    """``--help`` names each option as it is typed: ``experiment=paper/lenet_mnist``, ``hydra/launcher=lth_seeds``."""
    from lth.run import usage

    lines = {line.split(":", 1)[0].strip(): line.split(":", 1)[1] for line in usage().splitlines() if line.startswith("  ")
             and ":" in line.split("=")[0]}
    root = Path(CONFIG_DIR)
    for path in root.rglob("*.yaml"):
        group, option = path.parent.relative_to(root).as_posix(), path.relative_to(path.parent).stem
        while group not in lines and "/" in group:  # a nested option: experiment/paper -> experiment, paper/...
            group, option = group.rpartition("/")[0], f"{group.rpartition('/')[2]}/{option}"
        if group == ".":
            continue  # config.yaml, the primary config
        assert option in [o.strip() for o in lines[group].split("(")[0].split(",")], (group, option)


# The percentages of weights remaining (P_m) the papers quote, by the pruning round that reaches them,
# worked out by hand from each paper's layer sizes, per-round rates and exempt tensors. E.g. LeNet after
# 3 rounds: (0.8^3 * 265,200 fc + 0.9^3 * 1,000 output) / 266,200 = 51.3%; the 2019 ResNet-20 after 4
# rounds: (0.8^4 * 267,696 + 3,200 exempt shortcut and output weights) / 270,896 = 41.7%; the 2020
# paper's 16.8% after 8 rounds is 0.8^8 of *every* weight: its code (OpenLTH's cifar_resnet_20,
# sparse_global without pruning_layers_to_ignore) exempts nothing.
QUOTED_LEVELS = [
    # Frankle & Carbin 2019, Section 2 (Figures 3-4)
    ("lenet_mnist", [], (1, 28, 28), {3: 51.3, 7: 21.1, 9: 13.5, 15: 3.6, 16: 2.9, 20: 1.2}),
    # Frankle & Carbin 2019, Section 4 (Figure 8)
    ("resnet20_cifar10", ["lr_warmup=true"], (3, 32, 32), {4: 41.7, 6: 27.1, 7: 21.9, 10: 11.8}),
    # Frankle et al. 2020 (ResNet-20's IMP sparsity); the 2021 preset's own 20 rounds of 20%: 0.8^20
    ("instability_rewind", ["rewind_iteration=500"], (3, 32, 32), {8: 16.8}),
    ("pai_vs_imp", [], (3, 32, 32), {20: 1.2}),
    # Frankle & Carbin 2019, Section 3 (Figure 5) and Section 4 (Figure 7; 20M weights, 10 s: slow)
    ("conv_cifar10", ["model=conv2"], (3, 32, 32), {11: 8.8, 14: 4.6}),
    ("conv_cifar10", ["model=conv4"], (3, 32, 32), {11: 11.1, 12: 9.2}),
    pytest.param("vgg19_warmup", ["lr_warmup=true"], (3, 32, 32), {15: 3.5, 19: 1.5}, marks=pytest.mark.slow),
]


@pytest.mark.parametrize("name, point, shape, quoted", QUOTED_LEVELS)
def test_the_presets_prune_to_the_percentages_the_papers_quote(name, point, shape, quoted):
    """The preset's pruning rule (rates, scheme, exempt tensors) applied round after round reaches, to the
    papers' one decimal, the P_m they quote. Random weights stand in for trained ones: a round's count
    depends only on how many weights are alive."""
    import torch

    from lth.models import build_model
    from lth.pruning import Mask
    from lth.pruning.rule import PruningRule

    cfg = composed(name, point)
    model = build_model(cfg.model.arch, shape, 10, 0)
    rule, mask, gen = PruningRule(cfg.prune, model), Mask.dense(model), torch.Generator().manual_seed(0)
    reached = {}
    for level in range(1, max(quoted) + 1):
        mask = rule.mask_at(level, mask, {n: torch.rand(m.shape, generator=gen) for n, m in mask.items()})
        reached[level] = round(mask.weights_remaining(), 1)
    assert {level: reached[level] for level in quoted} == quoted
