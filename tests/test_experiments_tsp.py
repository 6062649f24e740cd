"""The PyEPO travelling-salesman task: generator, exact solver, metric, config, runs.

The default tests solve tours of at most 8 nodes and build no training step; the
20-node comparisons with PyEPO (its generator, its Gurobi models) and the training
runs are marked slow.
"""

import itertools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import yaml

import perturbed_layers as pl
from perturbed_layers import experiments as ex
from perturbed_layers.experiments._tsp import (
    pyepo_tsp_coordinates,
    tsp_edges,
    tsp_solver,
)

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIG = ROOT / "configs" / "pyepo_tsp.yaml"
# 6-node tours: the data, labels and tests stay fast (brute force has 60 tours).
TINY = ["data.num_data=45", "data.test_size=10", "data.num_nodes=6"]


# ------------------------------------------------------------------ generator


def test_generator_matches_the_definition_by_hand():
    # n = 2 points, p = 2 features, m = 3 nodes (3 edges), deg 2, noise 0.5.
    x, c = ex.pyepo_tsp_data(2, 2, 3, deg=2, noise_width=0.5, seed=42)
    # PyEPO's order of draws: 1 uniform node, 2 normal nodes, B's mask then its
    # uniform values, x, the noise.
    rnd = np.random.RandomState(42)
    xy = np.concatenate([rnd.uniform(-2, 2, (1, 2)), rnd.normal(0, 1, (2, 2))])
    b = rnd.binomial(1, 0.5, (3, 2)) * rnd.uniform(-2, 2, (3, 2))
    x_expected = rnd.normal(0, 1, (2, 2))
    eps = rnd.uniform(0.5, 1.5, (2, 3))
    np.testing.assert_array_equal(x, x_expected)
    np.testing.assert_array_equal(pyepo_tsp_coordinates(3, seed=42), xy)
    assert x.dtype == np.float64 and c.dtype == np.float32 and c.shape == (2, 3)
    for i, (k, (u, v)) in itertools.product(
        range(2), enumerate([(0, 1), (0, 2), (1, 2)])
    ):
        dist = np.hypot(*(xy[u] - xy[v]))
        dot = x_expected[i, 0] * b[k, 0] + x_expected[i, 1] * b[k, 1]
        value = dist + (dot / 2**0.5 + 3) ** 2 / 3 * eps[i, k]
        assert abs(float(c[i, k]) - value) <= 5e-5 + 1e-6 * value
    # Worked out on paper from RandomState(42)'s draws (NumPy's legacy generator is
    # frozen): nodes (−0.5018395, 1.8028572), (0.6476885, 1.5230299), …; B's row 0
    # is (0, 1) ⊙ (1.3297706, −1.1506436); x_0 = (−1.7249178, −0.5622875);
    # ε_00 = 0.7921446. Edge (0, 1) of point 0: its length is
    # √(1.1495280² + 0.2798273²) = 1.183097; x_0 · B_0 = 0.646992, / √2 + 3 =
    # 3.457488, squared / 3 = 3.984741, × ε_00 = 3.156491; the sum 4.339588 is
    # rounded to 4.3396.
    assert c[0, 0] == np.float32(4.3396)
    np.testing.assert_array_equal(
        c, np.array([[4.3396, 9.4363, 4.7595], [4.4094, 5.1278, 5.0535]], np.float32)
    )


def test_generator_refuses_what_pyepo_refuses():
    with pytest.raises(ValueError, match="deg"):
        ex.pyepo_tsp_data(2, 2, 5, deg=0)
    with pytest.raises(ValueError, match="deg"):
        ex.pyepo_tsp_data(2, 2, 5, deg=2.0)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="noise_width"):
        ex.pyepo_tsp_data(2, 2, 5, noise_width=-0.1)
    with pytest.raises(ValueError, match="num_nodes"):
        ex.pyepo_tsp_data(2, 2, 2)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args",
    [
        (1100, 10, 20, 4, 0.5, 135),  # the config's data
        (300, 5, 7, 1, 0.0, 1),  # odd node count: 3 uniform, 4 normal nodes
        (50, 3, 12, 6, 1.3, 7),
    ],
)
def test_generator_is_pyepos_bit_for_bit(args):
    genData = pytest.importorskip("pyepo.data.tsp").genData
    for ours, theirs in zip(ex.pyepo_tsp_data(*args), genData(*args), strict=True):
        assert ours.dtype == theirs.dtype and ours.shape == theirs.shape
        np.testing.assert_array_equal(ours, theirs)


# --------------------------------------------------------------------- solver


def _brute_force(costs: np.ndarray, m: int) -> np.ndarray:
    """The minimum tour cost over all (m − 1)! / 2 tours, per row of `costs`."""
    index = {tuple(e): k for k, e in enumerate(tsp_edges(m))}
    tours = []
    for rest in itertools.permutations(range(1, m)):
        if rest[0] < rest[-1]:  # each tour once, not in both directions
            order = (0, *rest, 0)
            y = np.zeros(len(index))
            for u, v in itertools.pairwise(order):
                y[index[(min(u, v), max(u, v))]] = 1
            tours.append(y)
    return np.min(costs @ np.array(tours).T, axis=-1)


def _is_tour(y: np.ndarray, m: int) -> bool:
    edges = tsp_edges(m)[y > 0.5]
    if len(edges) != m or np.any(np.bincount(edges.ravel(), minlength=m) != 2):
        return False
    seen, frontier = {0}, [0]
    while frontier:
        u = frontier.pop()
        for a, b in edges:
            for s, t in ((a, b), (b, a)):
                if s == u and t not in seen:
                    seen.add(t)
                    frontier.append(t)
    return len(seen) == m


@pytest.mark.parametrize("m", [3, 4, 5, 6, 8])
def test_solver_is_exact_against_brute_force(m):
    rng = np.random.default_rng(m)
    e = m * (m - 1) // 2
    # Random costs, and two clusters joined by costly edges: the first solve's
    # 2-matching is two triangles (subtours) that the cuts must remove.
    costs = rng.uniform(0, 10, (12, e))
    if m >= 6:
        groups = np.arange(m) < m // 2
        costly = groups[tsp_edges(m)[:, 0]] != groups[tsp_edges(m)[:, 1]]
        costs[:4] += 50 * costly
    y = np.asarray(jax.jit(tsp_solver(m))(jnp.asarray(costs)))
    assert all(_is_tour(row, m) for row in y)
    np.testing.assert_allclose(np.sum(costs * y, axis=-1), _brute_force(costs, m))


def test_solver_is_one_per_size_and_batches():
    assert tsp_solver(7) is tsp_solver(7) and tsp_solver(7) != tsp_solver(8)
    costs = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 3, 10)))
    y = jax.vmap(tsp_solver(5))(costs)
    assert y.shape == (2, 3, 10) and bool(jnp.all(jnp.sum(y, axis=-1) == 5))
    with pytest.raises(ValueError, match="at least 3"):
        tsp_solver(2)


@pytest.mark.slow
def test_solver_matches_pyepos_gurobi_models():
    """20-node instances of the config's data: our optimum is Gurobi's (DFJ with
    lazy cuts, and Gavish–Graves), to its optimality gap."""
    tsp = pytest.importorskip("pyepo.model.grb.tsp")
    pytest.importorskip("gurobipy")
    _, c = ex.pyepo_tsp_data(12, 10, 20, deg=4, noise_width=0.5, seed=3)
    ours = np.asarray(tsp_solver(20)(jnp.asarray(c)), np.float64)
    assert all(_is_tour(y, 20) for y in ours)
    z_ours = np.sum(ours * c, axis=-1)
    for model in (tsp.tspDFJModel(20), tsp.tspGGModel(20)):
        model._model.Params.OutputFlag = 0
        for ci, z in zip(c, z_ours, strict=True):
            model.setObj(ci)
            _, obj = model.solve()
            assert z == pytest.approx(obj, rel=1e-4, abs=1e-4)


# --------------------------------------------------------------- task, metric


def test_labels_are_exact_optima_on_small_tours():
    data = ex.load_config(CONFIG, TINY).data.build()
    task = data.task
    assert isinstance(task, ex.TSPTask) and task.num_nodes == 6
    np.testing.assert_allclose(task.coordinates, pyepo_tsp_coordinates(6), atol=1e-6)
    for split in (data.train, data.test):
        costs, y = np.asarray(split.costs, np.float64), np.asarray(split.y)
        assert costs.shape[-1] == 15 and all(_is_tour(row, 6) for row in y)
        np.testing.assert_allclose(np.sum(costs * y, -1), _brute_force(costs, 6))


@pytest.mark.slow
def test_normalized_regret_is_pyepos_for_minimisation():
    task = ex.TSPTask(4, jnp.zeros((4, 2)))
    # 4 nodes, 6 edges (01 02 03 12 13 23); tours: {01,12,23,03}, {01,13,23,02},
    # {02,12,13,03}.
    costs = jnp.array([[1.0, 5.0, 2.0, 1.0, 5.0, 1.0], [2.0, 1.0, 2.0, 2.0, 1.0, 2.0]])
    y = jnp.array([[1.0, 0, 1, 1, 0, 1], [1.0, 1, 0, 0, 1, 1]])  # optima 5 and 6
    y_pred = jnp.array([[1.0, 1, 0, 0, 1, 1], [0.0, 1, 1, 1, 1, 0]])  # costs 12, 6
    per = task.metrics(costs, y_pred, ex.Batch(jnp.zeros((2, 1)), y, costs))
    np.testing.assert_allclose(per["regret"], [7.0, 0.0])
    summary = task.summarise({k: np.asarray(v) for k, v in per.items()})
    # Σ (⟨c, ŷ⟩ − z*(c)) / Σ |z*(c)| = (7 + 0) / (5 + 6).
    assert summary["normalized_regret"] == pytest.approx(7 / 11)
    assert summary["optimal_share"] == 0.5
    data = ex.load_config(CONFIG, TINY).data.build()
    assert isinstance(data.task, ex.TSPTask)
    test = data.test
    exact = data.task.metrics(test.costs, data.task.solver(test.costs), test)
    assert float(jnp.max(jnp.abs(exact["regret"]))) <= 1e-5
    constant, name = data.task.trivial_theta(data.train)
    assert name == "mean training edge costs" and constant.shape == (15,)
    trivial = data.task.solver(jnp.broadcast_to(constant, test.costs.shape))
    regret = data.task.metrics(test.costs, trivial, test)["regret"]
    assert float(jnp.min(regret)) >= -1e-5 and float(jnp.sum(regret)) > 0


def test_draw_plots_the_tours(tmp_path):
    from matplotlib.figure import Figure

    data = ex.load_config(CONFIG, TINY).data.build()
    fig = Figure()
    test = ex.Batch(*(a[:3] for a in data.test))
    data.task.draw(fig, test, np.asarray(test.costs), np.asarray(test.y))
    assert len(fig.axes) == 4 and "regret 0.00" in fig.axes[0].get_title()
    fig.savefig(tmp_path / "tours.png")


# --------------------------------------------------------------------- config


@pytest.mark.slow
def test_config_builds_the_tsp_layer():
    config = ex.load_config(CONFIG, TINY)
    assert config.data.name == "pyepo_tsp" and config.layer.name == "tsp"
    exp = ex.build(config)
    layer = exp.layer
    assert isinstance(layer, pl.Perturbed) and layer.objective == "min"
    assert layer.event_ndim == 1 and layer.num_samples == 3 and layer.sigma == 1.0
    assert layer.fn is tsp_solver(6)
    assert ex.config_from_dict(yaml.safe_load(ex.dump_config(config))) == config
    # The defaults are the shipped config's (PyEPO's TSP setting).
    raw = yaml.safe_load(CONFIG.read_text())["data"]
    defaults = type(config.data).model_validate({"name": "pyepo_tsp"})
    assert defaults.model_dump() == raw


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["data.num_nodes=2"], "data.num_nodes", "greater than or equal to 3"),
        (["data.test_size=1100"], "data", "must be smaller than num_data"),
        (["data.noise_width=-0.5"], "data.noise_width", "greater than or equal to 0"),
        (["data.deg=0"], "data.deg", "greater than 0"),
        (["layer.name=knapsack"], "layer.name", "does not fit dataset"),
        (["layer.num_samples=0"], "layer.num_samples", "greater than 0"),
    ],
)
def test_config_errors(overrides, key, words):
    with pytest.raises(ex.ConfigError) as info:
        ex.load_config(CONFIG, overrides)
    message = str(info.value)
    assert f"{CONFIG}: {key}" in message and words in message


# ----------------------------------------------------------------------- runs


@pytest.mark.slow
@pytest.mark.parametrize("name", ["fenchel_young", "spo_plus"])
def test_two_epochs_beat_the_trivial_predictor(name, tmp_path):
    out = tmp_path / "run"
    argv = ["train", str(CONFIG), "--out", str(out), "--no-progress"]
    overrides = ["data.num_data=300", "data.test_size=100", "training.epochs=2"]
    assert ex.main([*argv, *overrides, f"loss.name={name}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    trivial = summary["trivial"]["test_normalized_regret"]
    assert summary["test_normalized_regret"] < trivial, (name, summary)
