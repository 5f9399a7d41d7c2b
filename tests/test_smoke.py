from lth.lottery import Lottery
from tests.conftest import FAST, compose_config


def test_quickstart_composes_and_runs_two_rounds(tmp_path):
    cfg = compose_config(["experiment=quickstart", *FAST, "prune.rounds=1", "controls=[]", "train.iterations=60", "eval_every=20"])
    rows = Lottery(cfg, tmp_path / "exp").run()
    assert [r["round"] for r in rows] == [0, 1]
    assert rows[1]["weights_remaining"] < rows[0]["weights_remaining"] == 100.0
