"""linear_assignment against SciPy's linear_sum_assignment."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from perturbed_layers.solvers import linear_assignment


def scipy_optimum(s):
    rows, cols = linear_sum_assignment(s, maximize=True)
    return s[rows, cols].sum()


def assert_assignment(y):
    """0/1, one 1 per row, at most one per column."""
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y.sum(axis=-1), 1.0)
    assert np.all(y.sum(axis=-2) <= 1.0)


def random_scores(rng, shape, kind):
    if kind == "ties":
        return rng.integers(0, 4, shape).astype(np.float64)  # many equal optima
    if kind == "wide":
        return rng.normal(0.0, 1.0, shape) * 10.0 ** rng.integers(-3, 4, shape)
    return rng.normal(0.0, 1.0, shape)


@pytest.mark.parametrize("n, m", [(1, 1), (1, 6), (5, 5), (8, 13), (20, 20), (31, 40)])
@pytest.mark.parametrize("kind", ["normal", "ties", "wide"])
@pytest.mark.slow
def test_matches_scipy(n, m, kind):
    rng = np.random.default_rng(1000 * n + m + hash(kind) % 7)
    scores = random_scores(rng, (12, n, m), kind)
    with jax.enable_x64(True):
        ys = np.asarray(linear_assignment(jnp.asarray(scores)))
        assert ys.dtype == np.float64
    for s, y in zip(scores, ys, strict=True):
        assert_assignment(y)
        assert np.sum(y * s) == pytest.approx(scipy_optimum(s), rel=1e-10, abs=1e-10)
    ys32 = np.asarray(linear_assignment(jnp.asarray(scores, jnp.float32)))
    assert ys32.dtype == np.float32
    for s, y in zip(scores.astype(np.float32).astype(np.float64), ys32, strict=True):
        assert_assignment(y)
        assert np.sum(y * s) == pytest.approx(scipy_optimum(s), rel=1e-5, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("n, m", [(50, 50), (64, 100)])
def test_matches_scipy_large(n, m):
    rng = np.random.default_rng(n + m)
    scores = rng.normal(0.0, 1.0, (40, n, m))
    with jax.enable_x64(True):
        ys = np.asarray(linear_assignment(jnp.asarray(scores)))
    for s, y in zip(scores, ys, strict=True):
        assert_assignment(y)
        assert np.sum(y * s) == pytest.approx(scipy_optimum(s), rel=1e-10)


def test_small_cases_and_ties():
    scores = jnp.array([[1.0, 5.0, 0.0], [4.0, 6.0, 0.0]])
    np.testing.assert_array_equal(linear_assignment(scores), [[0, 1, 0], [1, 0, 0]])
    # All equal: the identity (each row takes the lowest free column).
    np.testing.assert_array_equal(linear_assignment(jnp.zeros((3, 4))), jnp.eye(3, 4))
    # Costs as negative scores: the minimum cost is 4 + 3 + 9 = 16 (or 4 + 5 + 7).
    scores = -jnp.array([[8.0, 4.0, 7.0], [5.0, 2.0, 3.0], [9.0, 6.0, 7.0]])
    y = linear_assignment(scores)
    assert float(jnp.sum(y * scores)) == -16.0


@pytest.mark.slow
def test_batch_axes_jit_vmap_agree():
    rng = np.random.default_rng(5)
    scores = jnp.asarray(rng.normal(size=(2, 3, 6, 9)), jnp.float32)
    plain = linear_assignment(scores)
    one_by_one = [linear_assignment(scores[i, j]) for i in range(2) for j in range(3)]
    np.testing.assert_array_equal(plain.reshape(6, 6, 9), np.stack(one_by_one))
    nested = jax.jit(jax.vmap(jax.vmap(linear_assignment)))
    np.testing.assert_array_equal(nested(scores), plain)


def test_gradient_is_zero():
    scores = jnp.asarray(np.random.default_rng(1).normal(size=(5, 5)), jnp.float32)
    grad = jax.grad(lambda s: jnp.sum(linear_assignment(s) * s))(scores)
    np.testing.assert_array_equal(grad, linear_assignment(scores))


def test_argument_errors():
    with pytest.raises(ValueError, match="scores"):
        linear_assignment(jnp.ones((4, 3)))  # n > m
    with pytest.raises(ValueError, match="scores"):
        linear_assignment(jnp.ones(3))
    with pytest.raises(ValueError, match="scores"):
        linear_assignment(jnp.ones((0, 3)))
    with pytest.raises(TypeError, match="scores"):
        linear_assignment(jnp.ones((3, 3), jnp.int32))


def test_non_finite_scores_raise_under_jit():
    solve = jax.jit(linear_assignment)
    ok = jnp.ones((2, 3, 3))
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        with pytest.raises(Exception, match="finite"):
            solve(ok.at[1, 0, 2].set(bad)).block_until_ready()
    np.testing.assert_array_equal(solve(ok)[1], jnp.eye(3))
