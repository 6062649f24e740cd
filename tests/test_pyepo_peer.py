"""PyEPO itself on a config's task (`train_pyepo`): same data as ours, it learns.

The configuration errors need no PyEPO; the runs (PyEPO, PyTorch, Gurobi) are slow:
tiny data (100 train / 100 test), 2 epochs, about 20 s in all on a shared 2-core CPU.
"""

import math
import pathlib

import numpy as np
import pytest

from perturbed_layers.experiments._config import load_config
from perturbed_layers.experiments._pyepo_peer import _PeerRun, train_pyepo

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHORTEST_PATH = ROOT / "configs" / "pyepo_shortest_path.yaml"
KNAPSACK = ROOT / "configs" / "pyepo_knapsack.yaml"
# 100 training points make 4 steps an epoch: a larger step than the configs' so that
# 2 epochs move the model measurably.
TINY = [
    "data.num_data=200",
    "data.test_size=100",
    "training.epochs=2",
    "optimizer.learning_rate=0.1",
]


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("loss.name=ssvm", "loss.name"),
        ("optimizer.name=sgd", "optimizer.name"),
        ("optimizer.schedule=cosine", "optimizer.schedule"),
        ("layer.noise=gumbel", "layer.noise"),
    ],
)
def test_unsupported_settings_name_their_key(override, key):
    # Checked before PyEPO is imported: this runs without it.
    config = load_config(SHORTEST_PATH, [override])
    with pytest.raises(ValueError, match=rf"train_pyepo: {key}: .* supported: "):
        train_pyepo(config)


def _peer_available():
    pytest.importorskip("torch")
    pytest.importorskip("pyepo")
    pytest.importorskip("gurobipy")
    pytest.importorskip("sklearn")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "loss"),
    [
        (SHORTEST_PATH, "spo_plus"),
        (SHORTEST_PATH, "fenchel_young"),
        (KNAPSACK, "spo_plus"),
    ],
)
def test_pyepo_trains_on_our_data_and_learns(path, loss):
    _peer_available()
    config = load_config(path, [*TINY, f"loss.name={loss}"])
    run = _PeerRun(config, "torch")
    ours = config.data.build()
    # PyEPO's genData + train_test_split against our reproduction, both splits.
    for split, theirs in ((ours.train, run.train_set), (ours.test, run.test_set)):
        np.testing.assert_array_equal(np.asarray(theirs.costs), np.asarray(split.costs))
        np.testing.assert_array_equal(np.asarray(theirs.feats), np.asarray(split.x))
    # Gurobi's optima are our exact solver's (objectives: integer knapsack values
    # tie, and the two solvers may pick different optimal selections).
    optimum = np.sum(np.asarray(ours.test.costs) * np.asarray(ours.test.y), axis=-1)
    np.testing.assert_allclose(np.asarray(run.test_set.objs)[:, 0], optimum, rtol=1e-6)
    untrained = run.regret()
    run.train()
    trained = run.regret()
    assert 0 <= trained <= 1
    assert trained < untrained


@pytest.mark.slow
@pytest.mark.parametrize("front_end", ["torch", "jax"])
def test_train_pyepo_reports_regret_and_seconds(front_end):
    _peer_available()
    config = load_config(SHORTEST_PATH, [*TINY, "loss.name=spo_plus"])
    result = train_pyepo(config, front_end=front_end)
    assert set(result) == {"normalized_regret", "train_seconds", "wall_seconds"}
    assert all(math.isfinite(value) for value in result.values())
    assert 0 <= result["normalized_regret"] <= 1
    assert 0 < result["train_seconds"] < result["wall_seconds"]
