"""Every registered loss trains the PyEPO shortest-path config for two epochs
(issue 16: each decision-focused loss has a `loss.name`), and beats the trivial
predictor's regret."""

import json
import pathlib

import pytest

from perturbed_layers import experiments as ex
from perturbed_layers.experiments._components import LOSSES

pytestmark = pytest.mark.slow

CONFIG = (
    pathlib.Path(__file__).resolve().parent.parent
    / "configs"
    / "pyepo_shortest_path.yaml"
)
SMALL = ["data.num_data=600", "data.test_size=100", "training.epochs=2"]
# Extra options per loss (the PyEPO path has 9 arcs of 40: k = 9 for I-MLE's noise).
EXTRA = {"imle": ["loss.k=9"], "regression": ["loss.target=costs"]}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_two_epochs_with_each_loss(name, tmp_path):
    out = tmp_path / "run"
    argv = ["train", str(CONFIG), "--out", str(out), "--no-progress"]
    overrides = [*SMALL, f"loss.name={name}", *EXTRA.get(name, [])]
    assert ex.main([*argv, *overrides]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert ex.load_config(out / "config.yaml").loss.name == name
    trivial = summary["trivial"]["test_normalized_regret"]
    assert summary["test_normalized_regret"] < trivial, (name, summary)
