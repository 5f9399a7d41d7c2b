"""Probes behind BENCHMARKS.md's "Tried and measured, not adopted": alternatives to lth's mask
multiply and dense evaluation, timed in plain loops (no Lightning) so only the technique differs.

    python -m benchmarks.probes mask --threads 1   # steps/s: dense / mask multiply / gradient hook / survivors-only
    python -m benchmarks.probes eval --threads 1   # ms per evaluation of a 784->300 layer on 15K inputs
    python -m benchmarks.probes optimizer --threads 1  # mask multiply vs optimizer.compile=true, paired
    python -m benchmarks.probes progress --threads 1   # lth's LeNet step with and without a run's progress bar
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torch.nn.functional as F

from benchmarks.run import Data, hand_step, lth_step, make_model, permuted_batches, sparse_mask, timed_loop
from lth.training.module import OptimizerSettings, skip_capture_check
from lth.pruning import MaskEnforcer


class SurvivorsOnly:
    """The optimizer sees only the surviving entries: gather their gradients before the step,
    scatter them back after it (pruned weights are never written)."""

    def __init__(self, model, mask):
        params = dict(model.named_parameters())
        self.weights = [params[n] for n in mask]
        self.idx = [mask[n].reshape(-1).nonzero().squeeze(1) for n in mask]
        self.survivors = [torch.nn.Parameter(w.detach().reshape(-1)[i].clone()) for w, i in zip(self.weights, self.idx)]
        by_id = {id(w): s for w, s in zip(self.weights, self.survivors)}
        self.params = [by_id.get(id(p), p) for p in model.parameters()]

    @torch.no_grad()
    def gather(self, *_):
        for w, s, i in zip(self.weights, self.survivors, self.idx):
            s.grad = w.grad.view(-1).index_select(0, i)
            w.grad = None

    @torch.no_grad()
    def scatter(self, *_):
        for w, s, i in zip(self.weights, self.survivors, self.idx):
            w.view(-1).index_copy_(0, i, s)


def masked_lenet_loop(variant: str, keep: float, steps: int = 300, warmup: int = 20) -> float:
    """Steps/s of the suite's hand loop for LeNet-300-100 (fused Adam, batch 60, 3,000 random
    on-device examples) with ``keep`` of each weight kept and the mask enforced by ``variant``."""
    model = make_model("LeNet-300-100")
    mask = sparse_mask(model, keep)
    settings = OptimizerSettings("adam", lr=1.2e-3)
    params = dict(model.named_parameters())
    if variant != "dense":
        mask.apply_(model)
    if variant == "survivors":
        so = SurvivorsOnly(model, mask)
        opt = settings.build(so.params)
        opt.register_step_pre_hook(so.gather)
        opt.register_step_post_hook(so.scatter)
    else:
        opt = settings.build(model.parameters())
    if variant == "multiply":  # what lth does
        MaskEnforcer(model, mask).attach(opt)
    elif variant == "grad_hook":
        def zero_pruned_grad(p, m):
            p.grad.mul_(m)
        for n in mask:
            params[n].register_post_accumulate_grad_hook(lambda p, m=mask[n].float(): zero_pruned_grad(p, m))
    skip_capture_check(opt)  # as in the suite's hand loop
    rate = timed_loop(model, opt, Data("LeNet-300-100", torch.device("cpu")), torch.device("cpu"), steps + warmup, warmup)[0]
    if variant != "dense":
        assert all(not params[n][~m].any() for n, m in mask.items()), f"{variant}: a pruned weight moved"
    return rate


class Chunked:
    """One (model, optimizer) variant of the hand loop, run ``steps`` at a time (``run_chunk``),
    so that variants can alternate every few milliseconds."""

    def __init__(self, variant: str, keep: float = 0.1):
        self.model = make_model("LeNet-300-100")
        mask = sparse_mask(self.model, keep)
        settings = OptimizerSettings("adam", lr=1.2e-3, compile=variant.startswith("compiled"))
        masked = variant in ("multiply", "compiled_mask")
        if masked:
            mask.apply_(self.model)
        enforcer = MaskEnforcer(self.model, mask)
        self.opt = settings.build(self.model.parameters(), zip(enforcer.params, enforcer.masks) if masked else ())
        if variant == "multiply":
            enforcer.attach(self.opt)
        skip_capture_check(self.opt)
        self.enforcer = enforcer if masked else None
        self.batches = permuted_batches(Data("LeNet-300-100", torch.device("cpu")), torch.device("cpu"))

    def run_chunk(self, steps: int) -> float:
        """Seconds for ``steps`` of the suite's hand-loop steps."""
        t0 = time.perf_counter()
        for _ in range(steps):
            hand_step(self.model, self.opt, *next(self.batches))
        return time.perf_counter() - t0


def paired_optimizer_ratios(rounds: int = 200, chunk: int = 10) -> dict[str, float]:
    """Median over ``rounds`` of each variant's speed relative to torch's fused Adam without a
    mask, the variants alternating every ``chunk`` steps (so drift of the machine's speed hits
    all alike): multiply = lth's default (fused Adam + MaskEnforcer), compiled_dense and
    compiled_mask = optimizer.compile=true without and with the mask."""
    variants = {v: Chunked(v) for v in ("dense", "multiply", "compiled_dense", "compiled_mask")}
    for v in variants.values():
        v.run_chunk(20)  # warm-up (and compilation)
    ratios = {v: [] for v in variants if v != "dense"}
    names = list(variants)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        times = {v: variants[v].run_chunk(chunk) for v in order}
        for v in ratios:
            ratios[v].append(times["dense"] / times[v])
    for v in variants.values():
        if v.enforcer is not None:
            v.enforcer.verify()
    return {v: statistics.median(rs) for v, rs in ratios.items()}


def progress_bar_cost(reps: int = 3, steps: int = 400, warmup: int = 20) -> dict[str, float]:
    """lth+mask LeNet-300-100 steps/s through the suite's ``lth_step`` without a progress bar (as the
    suite times it) and with the ``LotteryProgressBar`` a run draws by default, interleaved, the bar
    writing to /dev/null. Returns the medians and the median per-repetition ratio (with / without)."""
    import contextlib
    import os
    import tempfile
    from pathlib import Path

    from lth.progress import ExperimentProgress, LotteryProgressBar
    from lth.quiet import quiet

    quiet()  # lth's targeted filters: this probe also runs inside the test session, so no global silencing
    device = torch.device("cpu")
    data = Data("LeNet-300-100", device)
    progress = ExperimentProgress(21, levels=11)
    rates: dict[str, list[float]] = {"no bar": [], "bar": []}
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        for rep in range(reps):
            for v in (("no bar", "bar") if rep % 2 == 0 else ("bar", "no bar")):
                bar = (LotteryProgressBar(progress, 3, 11, "ticket", 51.2),) if v == "bar" else ()
                rates[v].append(lth_step("LeNet-300-100", data, device, steps + warmup, warmup, "mask",
                                         Path(tmp) / f"{v}-{rep}", progress_bar=bool(bar), extra_callbacks=bar)[0])
    out = {v: statistics.median(r) for v, r in rates.items()}
    out["ratio"] = statistics.median(b / a for a, b in zip(rates["no bar"], rates["bar"]))
    return out


def embedding_bag_linear(xt_blocks, w: torch.Tensor, b: torch.Tensor) -> list[torch.Tensor]:
    """``F.linear`` on each block, from the transposed blocks (in_features x block) and the
    weight's non-zeros: output unit j is the bag of input rows j connects to, weighted."""
    rows, cols = w.nonzero(as_tuple=True)
    offsets = torch.zeros(w.shape[0], dtype=torch.long)
    offsets[1:] = torch.bincount(rows, minlength=w.shape[0]).cumsum(0)[:-1]
    return [F.embedding_bag(cols, xt, offsets, mode="sum", per_sample_weights=w[rows, cols]).t() + b for xt in xt_blocks]


def first_layer_eval(method: str, density: float, block: int = 128) -> float:
    """Milliseconds for a 784->300 layer at ``density`` on 15K inputs (one paper evaluation)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(15000, 784, generator=gen)
    w = torch.randn(300, 784, generator=gen) * (torch.rand(300, 784, generator=gen) < density)
    b = torch.randn(300, generator=gen)
    if method.startswith("dense"):
        bs = int(method.split("-")[1])
        run = lambda: [F.linear(x[i:i + bs], w, b) for i in range(0, len(x), bs)]
    elif method == "csr":
        run = lambda: torch.sparse.mm(w.to_sparse_csr(), x.t()).t() + b
    else:  # embedding_bag over the weight's non-zeros; input blocks transposed per call or once
        blocks = [x[i:i + block].t().contiguous() for i in range(0, len(x), block)] if method == "bag-prepared" else None
        run = lambda: embedding_bag_linear(blocks or (x[i:i + block].t().contiguous() for i in range(0, len(x), block)), w, b)
    times = []
    for _ in range(6):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:]) * 1000


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("probe", choices=["mask", "eval", "optimizer", "progress"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # sparse CSR is 'beta'
    print(f"torch {torch.__version__}, {args.threads} thread(s), medians of {args.reps} interleaved repetitions")
    if args.probe == "mask":
        variants = ["dense", "multiply", "grad_hook", "survivors"]
        print("kept  " + "  ".join(f"{v:>10}" for v in variants) + "   (steps/s)")
        for keep in (0.8, 0.5, 0.2, 0.1, 0.03):
            rates = {v: [] for v in variants}
            for _ in range(args.reps):
                for v in variants:
                    rates[v].append(masked_lenet_loop(v, keep))
            print(f"{keep:>4.0%}  " + "  ".join(f"{statistics.median(rates[v]):>10.1f}" for v in variants))
    elif args.probe == "progress":
        r = progress_bar_cost(args.reps)
        print(f"lth+mask LeNet-300-100 steps/s: without a progress bar {r['no bar']:.1f}, with LotteryProgressBar "
              f"{r['bar']:.1f}; with / without, median per repetition {r['ratio']:.3f}x")
    elif args.probe == "optimizer":
        print("speed relative to fused Adam without a mask (median of paired 10-step chunks):")
        for rep in range(args.reps):
            ratios = paired_optimizer_ratios()
            print("    " + ", ".join(f"{v} {r:.3f}x" for v, r in ratios.items()), flush=True)
    else:
        methods = ["dense-1000", "dense-5000", "csr", "bag", "bag-prepared"]
        print("density  " + "  ".join(f"{m:>12}" for m in methods) + "   (ms)")
        for density in (0.05, 0.1, 0.2):
            print(f"{density:>7.0%}  " + "  ".join(f"{first_layer_eval(m, density):>12.1f}" for m in methods))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
