"""knapsack against SciPy's milp (HiGHS, gap 0)."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import Bounds, LinearConstraint, milp

from perturbed_layers.solvers import knapsack


def milp_optimum(v, w, c):
    """Optimal value of max v.x, w x <= c, x binary, in float64 (HiGHS)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = milp(
            -np.asarray(v, np.float64),
            constraints=LinearConstraint(np.asarray(w, np.float64), -np.inf, c),
            integrality=np.ones(len(v)),
            bounds=Bounds(0, 1),
            options={"mip_rel_gap": 0.0},
        )
    assert result.success
    return -result.fun


def assert_selection(y, w, c, rtol):
    assert set(np.unique(y)) <= {0.0, 1.0}
    assert np.all(np.asarray(w, np.float64) @ y <= c * (1 + rtol))


def pyepo_instances(rng, count, n, d, capacity):
    """PyEPO's knapsack data: two-decimal weights in [3, 8), integer values."""
    w = rng.choice(range(300, 800), size=(d, n)) / 100
    b = rng.binomial(1, 0.5, (n, 5))
    x = rng.normal(0, 1, (count, 5))
    v = ((x @ b.T / np.sqrt(5) + 3) ** 4 + 1) * 5 / 3.5**4
    v = np.ceil(v * rng.uniform(0.5, 1.5, (count, n)))
    return v, w, np.full(d, capacity)


@pytest.mark.parametrize(
    "n, d, capacity", [(32, 2, 20.0), (32, 1, 20.0), (48, 3, 30.0)]
)
@pytest.mark.slow
def test_pyepo_instances_float32(n, d, capacity):
    rng = np.random.RandomState(n + d)
    v, w, c = pyepo_instances(rng, 40, n, d, capacity)
    # Weights shared by the whole batch, values float32 as PyEPO's.
    ys = np.asarray(
        knapsack(
            jnp.asarray(v, jnp.float32), w.astype(np.float32), c.astype(np.float32)
        )
    )
    assert ys.shape == (40, n) and ys.dtype == np.float32
    for vi, y in zip(v, ys, strict=True):
        assert_selection(y, w, c, rtol=1e-5)
        assert y @ vi == pytest.approx(milp_optimum(vi, w, c), abs=1e-6)


@pytest.mark.parametrize("n, d", [(1, 1), (6, 1), (12, 2), (20, 3), (24, 1)])
def test_random_real_instances_float64(n, d):
    rng = np.random.default_rng(10 * n + d)
    count = 30
    v = rng.normal(1.0, 1.0, (count, n))  # some negative values
    w = rng.uniform(0.0, 1.0, (count, d, n)) * (rng.random((count, d, n)) < 0.9)
    c = rng.uniform(0.1, 0.5, (count, d)) * w.sum(-1) + 1e-3
    with jax.enable_x64(True):
        ys = np.asarray(knapsack(jnp.asarray(v), jnp.asarray(w), jnp.asarray(c)))
        assert ys.dtype == np.float64
    for vi, wi, ci, y in zip(v, w, c, ys, strict=True):
        assert_selection(y, wi, ci, rtol=1e-12)
        assert y @ vi == pytest.approx(milp_optimum(vi, wi, ci), rel=1e-9, abs=1e-9)


@pytest.mark.slow
def test_pyepo_instances_large():
    rng = np.random.RandomState(99)
    v, w, c = pyepo_instances(rng, 100, 64, 2, 40.0)
    ys = np.asarray(
        knapsack(
            jnp.asarray(v, jnp.float32), w.astype(np.float32), c.astype(np.float32)
        )
    )
    for vi, y in zip(v, ys, strict=True):
        assert_selection(y, w, c, rtol=1e-5)
        assert y @ vi == pytest.approx(milp_optimum(vi, w, c), abs=1e-6)


def test_small_cases():
    values = jnp.array([6.0, 5.0, 5.0])
    np.testing.assert_array_equal(
        knapsack(values, jnp.array([3.0, 2.0, 2.0]), jnp.array(4.0)), [0, 1, 1]
    )
    # Negative or zero values are never taken, even when they fit.
    np.testing.assert_array_equal(
        knapsack(jnp.array([-1.0, 0.0, 2.0]), jnp.ones(3), jnp.array(10.0)), [0, 0, 1]
    )
    # Zero capacity: only weightless items with a positive value.
    np.testing.assert_array_equal(
        knapsack(jnp.array([1.0, 2.0]), jnp.array([0.0, 1.0]), jnp.array(0.0)), [1, 0]
    )
    # Two resources: item 0 is light on the first and heavy on the second.
    w = jnp.array([[1.0, 2.0, 2.0], [3.0, 1.0, 1.0]])
    np.testing.assert_array_equal(
        knapsack(jnp.array([3.0, 2.0, 2.0]), w, jnp.array([4.0, 2.0])), [0, 1, 1]
    )


@pytest.mark.slow
def test_broadcasting_batch_jit_vmap_agree():
    rng = np.random.RandomState(3)
    v, w, c = pyepo_instances(rng, 6, 16, 2, 12.0)
    v = jnp.asarray(v.reshape(2, 3, 16), jnp.float32)
    w, c = jnp.asarray(w, jnp.float32), jnp.asarray(c, jnp.float32)
    plain = knapsack(v, w, c)
    assert plain.shape == (2, 3, 16)
    one_by_one = [knapsack(v[i, j], w, c) for i in range(2) for j in range(3)]
    np.testing.assert_array_equal(plain.reshape(6, 16), np.stack(one_by_one))
    per_instance = knapsack(
        v, jnp.broadcast_to(w, (2, 3, 2, 16)), jnp.broadcast_to(c, (2, 3, 2))
    )
    np.testing.assert_array_equal(per_instance, plain)
    nested = jax.jit(jax.vmap(jax.vmap(lambda vi: knapsack(vi, w, c))))
    np.testing.assert_array_equal(nested(v), plain)


def test_gradient_is_zero():
    v = jnp.array([3.0, 1.0, 2.0, 2.5])
    w = jnp.array([[1.0, 1.0, 2.0, 1.5]])
    grad = jax.grad(lambda v: jnp.sum(knapsack(v, w, jnp.array([3.0])) * v))(v)
    np.testing.assert_array_equal(grad, knapsack(v, w, jnp.array([3.0])))


def test_argument_errors():
    v = jnp.ones(4)
    with pytest.raises(ValueError, match="weights"):
        knapsack(v, jnp.ones(3), jnp.array(1.0))
    with pytest.raises(ValueError, match="weights"):
        knapsack(v, jnp.ones((2, 0, 4)), jnp.ones((2, 0)))
    with pytest.raises(ValueError, match="capacity"):
        knapsack(v, jnp.ones((2, 4)), jnp.ones(3))
    with pytest.raises(ValueError, match="broadcast"):
        knapsack(jnp.ones((3, 4)), jnp.ones((2, 1, 4)), jnp.ones((2, 1)))
    with pytest.raises(ValueError, match="values"):
        knapsack(jnp.ones(()), jnp.ones(1), jnp.array(1.0))
    with pytest.raises(TypeError, match="values"):
        knapsack(jnp.ones(4, jnp.int32), jnp.ones(4), jnp.array(1.0))
    with pytest.raises(TypeError, match="weights"):
        knapsack(v, jnp.ones(4, jnp.int32), jnp.array(1.0))
    with pytest.raises(ValueError, match="max_nodes"):
        knapsack(v, jnp.ones(4), jnp.array(1.0), max_nodes=0)


@pytest.mark.slow
def test_runtime_errors_under_jit():
    solve = jax.jit(knapsack, static_argnames="max_nodes")
    v, w, c = jnp.ones((2, 4)), jnp.ones((1, 4)), jnp.array([2.0])
    with pytest.raises(Exception, match="values must be finite"):
        solve(v.at[1, 2].set(jnp.nan), w, c).block_until_ready()
    with pytest.raises(Exception, match="weights must be finite and >= 0"):
        solve(v, w.at[0, 1].set(-1.0), c).block_until_ready()
    with pytest.raises(Exception, match="capacity must be finite and >= 0"):
        solve(v, w, c.at[0].set(-1.0)).block_until_ready()
    with pytest.raises(Exception, match="capacity must be finite and >= 0"):
        solve(v, w, c.at[0].set(jnp.inf)).block_until_ready()
    # Values proportional to weights: no bound cuts early; 3 nodes are not enough.
    rng = np.random.default_rng(0)
    wh = jnp.asarray(rng.uniform(1.0, 2.0, (1, 12)), jnp.float32)
    with pytest.raises(Exception, match="max_nodes"):
        solve(wh[0], wh, jnp.array([7.0]), max_nodes=3).block_until_ready()
    np.testing.assert_array_equal(solve(v, w, c)[1], [1, 1, 0, 0])
