"""Fast tests of the experiments package: config errors, generators, data loading.

Nothing here compiles a training step; the end-to-end runs are in
`test_experiments_runs.py` (marked slow).
"""

import pathlib

import numpy as np
import pytest
import yaml

from perturbed_layers import experiments as ex

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
PYEPO = CONFIGS / "pyepo_shortest_path.yaml"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_validate_and_round_trip(path):
    config = ex.load_config(path)
    assert config.name == path.stem
    # The resolved config (as written to a run folder) reads back to the same config.
    assert ex.config_from_dict(yaml.safe_load(ex.dump_config(config))) == config


def _error(overrides, path=PYEPO) -> str:
    with pytest.raises(ex.ConfigError) as info:
        ex.load_config(path, overrides)
    return str(info.value)


@pytest.mark.parametrize(
    "overrides, key, words",
    [
        (["data.degg=3"], "data.degg", "unknown key"),  # a misspelt key
        (["trainin.epochs=3"], "trainin", "unknown key"),
        (["data.deg=four"], "data.deg", "valid integer"),  # a wrong type
        (["training.epochs=2.5"], "training.epochs", "valid integer"),
        (["layer.sigma=true"], "layer.sigma", "valid number"),
        (["layer.sigma=-1"], "layer.sigma", "greater than 0"),
        (["optimizer.learning_rate=null"], "optimizer.learning_rate", "valid number"),
        (["model.name=resnet"], "model.name", "'linear', 'mlp', 'berthet_conv'"),
        (["optimizer.name=adagrad"], "optimizer.name", "'adam', 'adamw', 'sgd'"),
        (["data.name=mnist"], "data.name", "'pyepo_shortest_path', 'warcraft'"),
        (["layer.noise=cauchy"], "layer.noise", "'normal', 'gumbel'"),
        (["layer.name=ranking"], "layer.name", "does not fit dataset"),
        (["loss.target=costs"], "loss.target", "unknown key"),  # not a FY option
        (["mesh.data=0"], "mesh.data", "greater than 0"),
        (["mesh.dat=2"], "mesh.dat", "valid keys here: data, samples"),
        (["mesh.samples=auto"], "mesh.samples", "valid integer"),
        (["distributed.process_id=-1"], "distributed.process_id", "greater than or"),
        (["distributed.initialize=maybe"], "distributed.initialize", "'auto'"),
        # The solution-pool losses' options.
        (["loss.name=nce", "loss.solve_ratio=1.5"], "loss.solve_ratio", "less than or"),
        (["loss.name=cmap", "loss.pool_capacity=0"], "loss.pool_capacity", "than 0"),
        (["loss.name=cmap", "loss.when_full=lru"], "loss.when_full", "'fifo'"),
        (["loss.name=ltr_pointwise", "loss.margin=1"], "loss.margin", "unknown key"),
        (["loss.name=ltr_pairwise", "loss.margin=-1"], "loss.margin", "than or"),
        (
            ["loss.name=ltr_listwise", "loss.temperature=0"],
            "loss.temperature",
            "than 0",
        ),
    ],
)
def test_config_errors_name_the_key_and_the_file(overrides, key, words):
    message = _error(overrides)
    assert f"{PYEPO}: {key}: " in message
    assert words in message
    assert repr(overrides[-1]) in message  # which override set it


@pytest.mark.parametrize(
    "override, words",
    [
        ("training.epochs", "expected key.path=value"),  # no "="
        ("training..epochs=3", "expected key.path=value"),
        ("data.deg.x=1", "data.deg is 4, not a group of keys"),
        ("training.epochs=[1, 2]", "must be a YAML scalar"),
        ("training.epochs=[1, 2", "value is not YAML"),
    ],
)
def test_bad_overrides(override, words):
    message = _error([override])
    assert str(PYEPO) in message and words in message


def test_missing_values_and_bad_files(tmp_path):
    raw = yaml.safe_load(PYEPO.read_text())
    del raw["optimizer"]["learning_rate"]
    del raw["training"]
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(raw))
    message = _error([], path)
    assert f"{path}: optimizer.learning_rate: missing required value" in message
    assert f"{path}: training: missing required value" in message
    path.write_text("data: [unclosed")
    assert f"{path}: not valid YAML" in _error([], path)
    assert "cannot read the config" in _error([], tmp_path / "absent.yaml")


def test_yaml_exponent_floats_are_numbers():
    # PyYAML reads 1e-2 as a string (YAML 1.1); float options accept it.
    config = ex.load_config(PYEPO, ["optimizer.learning_rate=1e-3"])
    assert config.optimizer.learning_rate == pytest.approx(1e-3)  # pyright: ignore[reportAttributeAccessIssue]


def test_cli_reports_config_errors(capsys):
    assert ex.main(["train", str(PYEPO), "--out", "unused", "model.name=resnet"]) == 2
    err = capsys.readouterr().err
    assert f"{PYEPO}: model.name: unknown model 'resnet'" in err


# ------------------------------------------------------------------ generators


def test_pyepo_generator_matches_the_formula_by_hand():
    # n = 2 points, p = 2 features, a 2 x 2 grid (d = 4 arcs), deg 2, noise 0.5.
    x, c = ex.pyepo_shortest_path_data(2, 2, (2, 2), deg=2, noise_width=0.5, seed=3)
    rnd = np.random.RandomState(3)  # PyEPO's order: B, then x, then the noise
    b = rnd.binomial(1, 0.5, (4, 2))
    x_expected = rnd.normal(0, 1, (2, 2))
    eps = rnd.uniform(0.5, 1.5, (2, 4))
    np.testing.assert_array_equal(x, x_expected)
    for i in range(2):
        for j in range(4):
            dot = x_expected[i, 0] * b[j, 0] + x_expected[i, 1] * b[j, 1]
            by_hand = ((dot / 2**0.5 + 3) ** 2 + 1) / 3.5**2 * eps[i, j]
            assert c[i, j] == np.float32(by_hand)
    assert c.dtype == np.float32
    # Two entries worked out on paper from RandomState(3)'s draws (NumPy's legacy
    # generator is frozen): B = [[1, 1], [0, 1], [1, 1], [0, 0]], x_0 = (-0.0827415,
    # -0.6270007), ε_0 = (1.1491440, 0.7784873, 1.1762549, 1.0908628).
    assert b.tolist() == [[1, 1], [0, 1], [1, 1], [0, 0]]
    # Arc 3 uses no feature: ((0 + 3)² + 1) / 3.5² × ε_03 = 10 / 12.25 × 1.0908628.
    assert c[0, 3] == pytest.approx(0.8905002, abs=1e-6)
    # Arc 1 uses x_01: ((−0.6270007/√2 + 3)² + 1) / 12.25 × 0.7784873
    #   = (2.5566449² + 1) / 12.25 × 0.7784873 = 7.5364335 / 12.25 × 0.7784873.
    assert c[0, 1] == pytest.approx(0.4789398, abs=1e-6)


def test_pyepo_split_is_sklearns():
    train, test = ex.sklearn_train_test_split(2000, 1000, 42)
    permutation = np.random.RandomState(42).permutation(2000)
    np.testing.assert_array_equal(test, permutation[:1000])
    np.testing.assert_array_equal(train, permutation[1000:])
    try:  # scikit-learn is not a dependency; compare when it happens to be there
        from sklearn.model_selection import train_test_split
    except ImportError:
        return
    sk_train, sk_test = train_test_split(
        np.arange(2000), test_size=1000, random_state=42
    )
    np.testing.assert_array_equal(train, sk_train)
    np.testing.assert_array_equal(test, sk_test)


def test_warcraft_generator_layout_and_labels():
    maps, weights, paths = ex.generate_warcraft_maps(6, size=12, seed=1)
    assert maps.shape == (6, 96, 96, 3) and maps.dtype == np.uint8
    assert weights.shape == paths.shape == (6, 12, 12)
    assert set(np.unique(weights)) <= set(ex.TERRAIN_COSTS.tolist())
    assert paths[:, 0, 0].all() and paths[:, -1, -1].all()
    again = ex.generate_warcraft_maps(6, size=12, seed=1)
    for a, b in zip((maps, weights, paths), again, strict=True):
        np.testing.assert_array_equal(a, b)
    # Every cell's 8 x 8 block shows the cell's terrain: the mean colour separates
    # water (blue) from grass (green).
    blocks = maps.reshape(6, 12, 8, 12, 8, 3).mean(axis=(2, 4))
    water, grass = weights == 9.2, weights == 1.2
    if water.any():
        assert blocks[water][:, 2].mean() > blocks[water][:, 1].mean()
    assert blocks[grass][:, 1].mean() > blocks[grass][:, 2].mean()


def test_warcraft_path_option_loads_the_real_layout(tmp_path):
    for split, seed in (("train", 0), ("test", 1)):
        arrays = ex.generate_warcraft_maps(5, size=12, seed=seed)
        for name, array in zip(
            ("maps", "vertex_weights", "shortest_paths"), arrays, strict=True
        ):
            np.save(tmp_path / f"{split}_{name}.npy", array)
    config = ex.load_config(
        CONFIGS / "warcraft_12x12.yaml",
        [f"data.path={tmp_path}", "data.num_train=4", "data.num_test=5"],
    )
    data = config.data.build()
    np.testing.assert_array_equal(
        np.asarray(data.test.x), ex.generate_warcraft_maps(5, 12, 1)[0]
    )
    assert data.train.x.shape == (4, 96, 96, 3)
    bad = ex.load_config(
        CONFIGS / "warcraft_12x12.yaml", [f"data.path={tmp_path}", "data.size=18"]
    )
    with pytest.raises(ValueError, match=r"train_maps\.npy has shape"):
        bad.data.build()


def test_label_ranking_data():
    x, y, scores = ex.label_ranking_data(
        50, num_features=4, num_labels=6, noise=0.0, seed=0
    )
    assert x.shape == (50, 4) and y.shape == scores.shape == (50, 6)
    # Without noise the observed ranks are the ranks of the latent scores.
    np.testing.assert_array_equal(y, np.argsort(np.argsort(scores, axis=-1), axis=-1))


def test_a_pool_loss_builds_with_its_pool_seeded_from_the_training_solutions():
    small = ["data.num_data=300", "data.test_size=100"]
    options = ["loss.name=ltr_pairwise", "loss.margin=0.5", "loss.pool_capacity=64"]
    exp = ex.build(ex.load_config(PYEPO, [*small, *options]))
    assert isinstance(exp.loss, ex.AbstractStatefulLoss) and exp.loss_state is not None
    assert exp.loss.loss.margin == 0.5  # pyright: ignore[reportAttributeAccessIssue]
    train_y = np.asarray(exp.dataset.train.y)
    distinct = np.unique(train_y, axis=0)
    assert (
        exp.loss_state.capacity == 64
        and exp.loss_state.event_shape == train_y.shape[1:]
    )
    assert int(exp.loss_state.size) == min(len(distinct), 64)
    stored = np.asarray(exp.loss_state.solutions)[: int(exp.loss_state.size)]
    assert {tuple(row) for row in stored} <= {tuple(row) for row in distinct}
    # Every other loss carries no pool.
    assert ex.build(ex.load_config(PYEPO, small)).loss_state is None


@pytest.mark.slow
def test_cave_reads_the_task_constraints_and_refuses_a_task_without():
    # The PyEPO grid as a linear program has the grid solver's shortest paths as its
    # optimal vertices (the incidence's orientation and supply are right).
    import jax
    import jax.numpy as jnp

    import perturbed_layers as pl

    lp = ex.PyEPOTask(5).linear_program()
    costs = jax.random.uniform(jax.random.key(0), (6, 40), minval=0.1, maxval=1.0)
    by_lp = jax.vmap(lp.solve)(costs)
    by_grid = pl.solvers.pyepo_shortest_path(costs, 5)
    np.testing.assert_allclose(by_lp, by_grid, atol=1e-5)
    # Binding at a path: both orientations of the 25 node balances, and each arc at
    # one of its bounds (0 or 1): 50 + 40 non-zero normals of the 130 rows.
    normals = pl.binding_normals(lp, by_grid)
    assert normals.shape == (6, 130, 40)
    assert jnp.all(jnp.sum(jnp.any(normals != 0, axis=-1), axis=-1) == 90)
    with pytest.raises(ex.ConfigError, match="loss: name: cave needs the task's"):
        ex.build(ex.load_config(CONFIGS / "label_ranking.yaml", ["loss.name=cave"]))
