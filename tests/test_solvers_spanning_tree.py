"""spanning_tree against SciPy's minimum_spanning_tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse.csgraph

from perturbed_layers.solvers import spanning_tree


def random_graph(rng, n, density, kind):
    """Symmetric weights, +inf for no edge; a random spanning path keeps it connected."""
    if kind == "ties":
        w = rng.integers(1, 4, (n, n)).astype(np.float64)  # many equal weights
    else:
        w = rng.uniform(0.1, 10.0, (n, n))
    w = np.where(rng.random((n, n)) < density, w, np.inf)
    order = rng.permutation(n)
    a, b = order[:-1], order[1:]
    w[np.minimum(a, b), np.maximum(a, b)] = rng.uniform(0.1, 10.0, n - 1)
    w = np.triu(w, 1)
    w = w + w.T
    w[w == 0] = np.inf  # the lower triangle of triu
    np.fill_diagonal(w, rng.uniform(-5.0, 5.0, n))  # ignored
    return w


def scipy_optimum(w):
    # Dense input to csgraph: zeros (our +inf) are missing edges; weights are > 0.
    finite = np.where(np.isfinite(w), w, 0.0)
    np.fill_diagonal(finite, 0.0)
    return scipy.sparse.csgraph.minimum_spanning_tree(finite).sum()


def assert_spanning_tree(y, w):
    n = len(w)
    assert set(np.unique(y)) <= {0.0, 1.0}
    np.testing.assert_array_equal(y, y.T)
    assert np.trace(y) == 0
    assert y.sum() == 2 * (n - 1)
    assert np.all(np.isfinite(w[y == 1]))
    seen, todo = {0}, [0]
    while todo:
        for j in np.nonzero(y[todo.pop()])[0]:
            if int(j) not in seen:
                seen.add(int(j))
                todo.append(int(j))
    assert len(seen) == n  # n - 1 edges reaching every node: a tree


@pytest.mark.parametrize("n", [2, 5, 13, 30, 64])
@pytest.mark.parametrize("kind", ["uniform", "ties"])
def test_matches_scipy(n, kind):
    rng = np.random.default_rng(100 * n + (kind == "ties"))
    count = 24
    graphs = np.stack(
        [random_graph(rng, n, rng.uniform(0.05, 1.0), kind) for _ in range(count)]
    )
    with jax.enable_x64(True):
        ys = np.asarray(spanning_tree(jnp.asarray(graphs)))
        assert ys.dtype == np.float64
    for w, y in zip(graphs, ys, strict=True):
        assert_spanning_tree(y, w)
        cost = np.sum(np.where(y == 1, w, 0.0)) / 2
        assert cost == pytest.approx(scipy_optimum(w), rel=1e-12)
    # float32: the same optima within float32 rounding.
    ys32 = np.asarray(spanning_tree(jnp.asarray(graphs, jnp.float32)))
    assert ys32.dtype == np.float32
    for w, y in zip(graphs, ys32, strict=True):
        assert_spanning_tree(y, w)
        cost = np.sum(np.where(y == 1, w, 0.0)) / 2
        assert cost == pytest.approx(scipy_optimum(w), rel=1e-5)


def test_negative_weights_shift_invariance():
    # Every spanning tree has n - 1 edges: shifting all weights by -6 keeps the tree
    # optimal; scipy (which drops zeros) sees the unshifted, positive weights.
    rng = np.random.default_rng(7)
    graphs = np.stack([random_graph(rng, 12, 0.5, "uniform") for _ in range(16)])
    with jax.enable_x64(True):
        ys = np.asarray(spanning_tree(jnp.asarray(graphs - 6.0)))
    for w, y in zip(graphs, ys, strict=True):
        assert_spanning_tree(y, w)
        cost = np.sum(np.where(y == 1, w, 0.0)) / 2
        assert cost == pytest.approx(scipy_optimum(w), rel=1e-12)


def test_small_cases_and_ties():
    inf = jnp.inf
    np.testing.assert_array_equal(spanning_tree(jnp.zeros((1, 1))), [[0.0]])
    np.testing.assert_array_equal(
        spanning_tree(jnp.array([[0, 2.0], [2.0, 0]])), [[0, 1], [1, 0]]
    )
    # A triangle of equal weights: node 1 joins first (lowest index), then node 2
    # keeps its first cheapest tree neighbour, node 0.
    w = jnp.ones((3, 3))
    np.testing.assert_array_equal(spanning_tree(w), [[0, 1, 1], [1, 0, 0], [1, 0, 0]])
    # The heavy edge {0, 2} is left out.
    w = jnp.array([[inf, 1.0, 3.0], [1.0, inf, 2.0], [3.0, 2.0, inf]])
    np.testing.assert_array_equal(spanning_tree(w), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])


def test_batch_axes_jit_vmap_agree():
    rng = np.random.default_rng(5)
    graphs = np.stack([random_graph(rng, 9, 0.4, "ties") for _ in range(6)])
    graphs = jnp.asarray(graphs.reshape(2, 3, 9, 9), jnp.float32)
    plain = spanning_tree(graphs)
    one_by_one = [spanning_tree(graphs[i, j]) for i in range(2) for j in range(3)]
    np.testing.assert_array_equal(plain.reshape(6, 9, 9), np.stack(one_by_one))
    nested = jax.jit(jax.vmap(jax.vmap(spanning_tree)))
    np.testing.assert_array_equal(nested(graphs), plain)


def test_gradient_is_zero():
    rng = np.random.default_rng(1)
    w = jnp.asarray(random_graph(rng, 6, 1.0, "uniform"), jnp.float32)
    w = jnp.where(jnp.isinf(w), 100.0, w)
    grad = jax.grad(lambda w: jnp.sum(spanning_tree(w) * w))(w)
    np.testing.assert_array_equal(grad, spanning_tree(w))


def test_argument_errors():
    with pytest.raises(ValueError, match="weights"):
        spanning_tree(jnp.ones((3, 4)))
    with pytest.raises(ValueError, match="weights"):
        spanning_tree(jnp.ones(3))
    with pytest.raises(ValueError, match="weights"):
        spanning_tree(jnp.ones((2, 0, 0)))
    with pytest.raises(TypeError, match="weights"):
        spanning_tree(jnp.ones((3, 3), jnp.int32))


_jit = jax.jit(spanning_tree)


def test_runtime_errors_under_jit():
    inf = jnp.inf
    ok = jnp.array([[inf, 1.0, 3.0], [1.0, inf, 2.0], [3.0, 2.0, inf]])
    two_parts = jnp.array(
        [
            [inf, 1.0, inf, inf],
            [1.0, inf, inf, inf],
            [inf, inf, inf, 2.0],
            [inf, inf, 2.0, inf],
        ]
    )
    with pytest.raises(Exception, match="disconnected"):
        _jit(two_parts).block_until_ready()
    with pytest.raises(Exception, match="NaN"):
        _jit(ok.at[0, 2].set(jnp.nan).at[2, 0].set(jnp.nan)).block_until_ready()
    with pytest.raises(Exception, match="NaN or -inf"):
        _jit(ok.at[0, 2].set(-inf).at[2, 0].set(-inf)).block_until_ready()
    with pytest.raises(Exception, match="symmetric"):
        _jit(ok.at[0, 2].set(5.0)).block_until_ready()
    # In a batch, one bad instance is enough; the good ones alone pass.
    batch = jnp.stack(
        [ok, ok.at[0, 1].set(inf).at[1, 0].set(inf).at[0, 2].set(inf).at[2, 0].set(inf)]
    )
    with pytest.raises(Exception, match="disconnected"):
        jax.jit(jax.vmap(spanning_tree))(batch).block_until_ready()
    np.testing.assert_array_equal(_jit(ok), [[0, 1, 0], [1, 0, 1], [0, 1, 0]])
