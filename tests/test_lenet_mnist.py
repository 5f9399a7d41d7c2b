"""LeNet-300-100 and MNIST from ../shared/data."""

import pytest
import torch

from lth.data import MNISTDataModule
from lth.lottery import Lottery
from lth.models import LeNet
from tests.conftest import FAST, compose_config


def test_lenet_300_100_parameter_count():
    model = LeNet((1, 28, 28), 10)
    assert sum(p.numel() for p in model.parameters()) == 266_610
    assert [tuple(p.shape) for p in model.parameters()] == [(300, 784), (300,), (100, 300), (100,), (10, 100), (10,)]


def test_mnist_splits_and_shapes(data_dir):
    dm = MNISTDataModule(root=str(data_dir), val_size=5000, split_seed=0, download=False)
    dm.setup()
    assert dm.sizes() == {"train": 55_000, "val": 5_000, "test": 10_000}
    for x, y in dm.splits.values():
        assert x.shape[1:] == (1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
        assert set(y.unique().tolist()) == set(range(10))
    x, _ = dm.splits["train"]
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05  # normalised
    # the validation split is fixed by the data seed, independent of the experiment seed
    again = MNISTDataModule(root=str(data_dir), split_seed=0)
    again.setup()
    assert torch.equal(again.splits["val"][1], dm.splits["val"][1])
    other = MNISTDataModule(root=str(data_dir), split_seed=1)
    other.setup()
    assert not torch.equal(other.splits["val"][0], dm.splits["val"][0])
    # validation images are disjoint from training images (no row appears in both)
    tr = dm.splits["train"][0].flatten(1)[:2000]
    va = dm.splits["val"][0].flatten(1)
    assert not torch.cdist(va[:500], tr).min(dim=1).values.eq(0).any()


@pytest.mark.slow
def test_lenet_reaches_96_percent_in_2000_iterations_at_paper_settings(tmp_path, data_dir):
    """The dense round at the paper's settings (Adam 1.2e-3, batch 60), shortened to 2K iterations."""
    cfg = compose_config(["model=lenet300_100", *FAST, f"data.root={data_dir}", "train.iterations=2000",
                          "prune.rounds=1", "eval_every=500"])
    exp = Lottery(cfg, tmp_path / "exp")
    exp.rounds = 0  # the dense round only
    rows = exp.run()
    assert rows[0]["final_test_acc"] >= 0.96, rows[0]
    assert rows[0]["test_acc_at_es"] >= 0.96, rows[0]
