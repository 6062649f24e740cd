"""Shortest-path solvers against SciPy's Dijkstra / Bellman–Ford and brute force."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.csgraph

from perturbed_layers.solvers import (
    arc_indicator,
    arc_weights,
    grid_shortest_path,
    pyepo_grid_arcs,
    pyepo_shortest_path,
    shortest_path,
)

TERRAIN = np.array([0.8, 1.2, 5.3, 7.7, 9.2], np.float32)  # Warcraft cell costs
MOVES = {
    8: [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)],
    4: [(-1, 0), (0, -1), (0, 1), (1, 0)],
}
# Errors raised by `eqx.error_if` under jit reach Python as jax's JaxRuntimeError (a
# RuntimeError) or, for some calls of an executable that raised before, as a ValueError
# ("INTERNAL: CpuCallback error"); the tests check the message.
RUNTIME_ERRORS = (RuntimeError, ValueError)
# float32 path sums of up to ~60 cells of cost <= 9.2, against float64 optima.
RTOL = 1e-5


def grid_costs(rng, shape, kind):
    if kind == "terrain":
        return TERRAIN[rng.integers(0, len(TERRAIN), shape)]
    return rng.uniform(0.1, 10.0, shape).astype(np.float32)


def dijkstra_optimum(costs, connectivity):
    """Cost of a shortest path, scipy's Dijkstra in float64 on an explicit graph."""
    h, w = costs.shape
    tails, heads = [], []
    for i, j in itertools.product(range(h), range(w)):
        for di, dj in MOVES[connectivity]:
            if 0 <= i + di < h and 0 <= j + dj < w:
                tails.append(i * w + j)
                heads.append((i + di) * w + j + dj)
    flat = costs.astype(np.float64).ravel()
    graph = scipy.sparse.csr_matrix((flat[heads], (tails, heads)), shape=(h * w,) * 2)
    dist = scipy.sparse.csgraph.dijkstra(graph, indices=0)
    return dist[-1] + flat[0]


def assert_grid_path(mask, connectivity):
    """`mask` is 0/1, holds both corners, and its cells are connected."""
    h, w = mask.shape
    assert set(np.unique(mask)) <= {0.0, 1.0}
    assert mask[0, 0] == 1 and mask[-1, -1] == 1
    seen, todo = {(0, 0)}, [(0, 0)]
    while todo:
        i, j = todo.pop()
        for di, dj in MOVES[connectivity]:
            cell = (i + di, j + dj)
            if (
                0 <= cell[0] < h
                and 0 <= cell[1] < w
                and mask[cell]
                and cell not in seen
            ):
                seen.add(cell)
                todo.append(cell)
    assert len(seen) == mask.sum()


@pytest.mark.parametrize(
    "connectivity, shape",
    [
        (8, (12, 12)),
        (8, (30, 23)),
        (8, (1, 7)),
        (4, (19, 7)),
        (4, (30, 30)),
        (4, (6, 1)),
    ],
)
def test_grid_matches_dijkstra(connectivity, shape):
    rng = np.random.default_rng(1000 * connectivity + 100 * shape[0] + shape[1])
    costs = np.concatenate(
        [
            grid_costs(rng, (4, *shape), "terrain"),
            grid_costs(rng, (4, *shape), "uniform"),
        ]
    )
    masks = np.asarray(grid_shortest_path(costs, connectivity))
    assert masks.shape == costs.shape and masks.dtype == costs.dtype
    for c, mask in zip(costs, masks, strict=True):
        assert_grid_path(mask, connectivity)
        optimum = dijkstra_optimum(c, connectivity)
        assert np.sum(mask * c, dtype=np.float64) == pytest.approx(optimum, rel=RTOL)


def test_grid_small_cases_and_ties():
    ones = jnp.ones((2, 2))
    # 8-connectivity goes straight down the diagonal.
    np.testing.assert_array_equal(grid_shortest_path(ones), [[1, 0], [0, 1]])
    # 4-connectivity: a tie between (0,1) and (1,0); "up" comes before "left".
    np.testing.assert_array_equal(grid_shortest_path(ones, 4), [[1, 1], [0, 1]])
    # A cheap detour through the far corner beats the expensive middle.
    costs = jnp.array([[1.0, 1.0, 1.0], [50.0, 50.0, 1.0], [1.0, 1.0, 1.0]])
    np.testing.assert_array_equal(
        grid_shortest_path(costs, 4), [[1, 1, 1], [0, 0, 1], [0, 0, 1]]
    )
    # A detour that climbs back up: walls (cost 100) force down, across, up, across,
    # down; the path has the 13 cells below and is the only one of cost 13.
    costs = np.ones((5, 5), np.float32)
    costs[0:4, 1] = costs[1:5, 3] = 100.0
    path = [(0, 0), (1, 0), (2, 0), (3, 0), (4, 1), (3, 2), (2, 2), (1, 2), (0, 3)]
    path += [(1, 4), (2, 4), (3, 4), (4, 4)]
    expected = np.zeros((5, 5), np.float32)
    expected[tuple(zip(*path, strict=True))] = 1.0
    assert dijkstra_optimum(costs, 8) == 13.0
    np.testing.assert_array_equal(grid_shortest_path(costs), expected)


@pytest.mark.slow
def test_grid_batch_axes_jit_vmap_agree():
    rng = np.random.default_rng(0)
    costs = jnp.asarray(grid_costs(rng, (3, 4, 9, 11), "terrain"))
    plain = grid_shortest_path(costs)
    np.testing.assert_array_equal(plain[2, 1], grid_shortest_path(costs[2, 1]))
    nested = jax.jit(jax.vmap(jax.vmap(lambda c: grid_shortest_path(c, 8))))
    np.testing.assert_array_equal(nested(costs), plain)
    # vmap over an inner axis (in_axes=1) too.
    np.testing.assert_array_equal(
        jax.vmap(grid_shortest_path, in_axes=1, out_axes=1)(costs), plain
    )


def test_grid_gradient_is_zero():
    costs = jnp.asarray(grid_costs(np.random.default_rng(1), (6, 6), "uniform"))
    mask = grid_shortest_path(costs)
    # The path is locally constant, so d<y(c), c>/dc = y(c).
    grad = jax.grad(lambda c: jnp.sum(grid_shortest_path(c) * c))(costs)
    np.testing.assert_array_equal(grad, mask)


@pytest.mark.parametrize("connectivity", [6, 0, "8", 8.0, True])
def test_grid_bad_connectivity(connectivity):
    with pytest.raises(ValueError, match="connectivity"):
        grid_shortest_path(jnp.ones((3, 3)), connectivity)


def test_grid_bad_costs_shape_dtype():
    with pytest.raises(ValueError, match="costs"):
        grid_shortest_path(jnp.ones(5))
    with pytest.raises(ValueError, match="costs"):
        grid_shortest_path(jnp.ones((2, 0)))
    with pytest.raises(TypeError, match="costs"):
        grid_shortest_path(jnp.ones((3, 3), jnp.int32))


_jit_grid = jax.jit(grid_shortest_path)
_jit_vmap_grid = jax.jit(jax.vmap(grid_shortest_path))


@pytest.mark.parametrize("bad", [0.0, -0.5, math.inf, math.nan])
def test_grid_non_positive_costs_raise_under_jit(bad):
    costs = jnp.ones((2, 4, 4)).at[1, 2, 1].set(bad)
    with pytest.raises(RUNTIME_ERRORS, match="strictly positive"):
        _jit_grid(costs).block_until_ready()
    with pytest.raises(RUNTIME_ERRORS, match="multiplicative perturbation"):
        _jit_vmap_grid(costs).block_until_ready()
    np.testing.assert_array_equal(_jit_grid(jnp.ones((2, 4, 4)))[1], jnp.eye(4))


# --- dense graphs --------------------------------------------------------------------


def random_graph(rng, n, density, negative):
    """Dense weights (+inf for no arc); negative arcs via potentials: no negative cycle."""
    w = np.where(rng.random((n, n)) < density, rng.uniform(0.5, 5.0, (n, n)), np.inf)
    np.fill_diagonal(w, np.inf)
    if negative:
        potential = rng.uniform(0.0, 6.0, n)
        w = w + potential[:, None] - potential[None, :]  # inf stays inf
    return w.astype(np.float32)


def reference_optimum(w, source, target):
    arcs = np.isfinite(w)
    # csgraph drops explicit zeros of dense input; nudge them (cost kept within rtol).
    values = np.where(w == 0, 1e-30, w).astype(np.float64)
    graph = scipy.sparse.csr_matrix((values[arcs], np.nonzero(arcs)), shape=w.shape)
    dist = scipy.sparse.csgraph.bellman_ford(graph, indices=source)
    return dist[target]


def assert_arc_path(y, source, target):
    """`y` is the 0/1 arc indicator of a simple path from `source` to `target`."""
    assert set(np.unique(y)) <= {0.0, 1.0}
    node, visited = source, {source}
    for _ in range(int(y.sum())):
        (heads,) = np.nonzero(y[node])
        assert len(heads) == 1
        node = int(heads[0])
        assert node not in visited
        visited.add(node)
    assert node == target


@pytest.mark.parametrize("negative", [False, True])
def test_dense_matches_scipy(negative):
    rng = np.random.default_rng(3 + negative)
    checked = 0
    for n in (7, 40):
        weights = np.stack([random_graph(rng, n, 0.3, negative) for _ in range(6)])
        source, target = 0, n - 1
        for k, w in enumerate(weights):  # keep instances whose target is reachable
            if not np.isfinite(reference_optimum(w, source, target)):
                weights[k, source, target] = 100.0
        ys = np.asarray(shortest_path(weights, source, target))
        for w, y in zip(weights, ys, strict=True):
            assert_arc_path(y, source, target)
            optimum = reference_optimum(w, source, target)
            cost = np.sum(np.where(y == 1, w, 0.0), dtype=np.float64)
            assert cost == pytest.approx(optimum, rel=RTOL, abs=1e-4)
            checked += 1
    assert checked == 12


def test_dense_ties_and_trivial_path():
    inf = jnp.inf
    w = jnp.array([[inf, 1.0, 2.0], [inf, inf, 1.0], [inf, inf, inf]])
    # Two shortest paths of cost 2: the one with fewer arcs is returned.
    np.testing.assert_array_equal(
        shortest_path(w, 0, 2), [[0, 0, 1], [0, 0, 0], [0, 0, 0]]
    )
    # Same number of arcs: the smaller predecessor index wins.
    w = jnp.array(
        [[inf, 1.0, 1.0, inf], [inf, inf, inf, 1.0], [inf, inf, inf, 1.0], [inf] * 4]
    )
    expected = np.zeros((4, 4))
    expected[0, 1] = expected[1, 3] = 1
    np.testing.assert_array_equal(shortest_path(w, 0, 3), expected)
    np.testing.assert_array_equal(shortest_path(w, 2, 2), np.zeros((4, 4)))


def test_dense_batch_axes_jit_vmap_agree():
    rng = np.random.default_rng(5)
    weights = np.stack([random_graph(rng, 8, 0.5, True) for _ in range(6)])
    weights[:, 0, 7] = 50.0  # reachable
    weights = jnp.asarray(weights.reshape(2, 3, 8, 8))
    plain = shortest_path(weights, 0, 7)
    one_by_one = [
        shortest_path(weights[i, j], 0, 7) for i in range(2) for j in range(3)
    ]
    np.testing.assert_array_equal(plain.reshape(6, 8, 8), np.stack(one_by_one))
    f = jax.jit(jax.vmap(jax.vmap(lambda w: shortest_path(w, 0, 7))))
    np.testing.assert_array_equal(f(weights), plain)


def test_dense_argument_errors():
    w = jnp.ones((4, 4))
    with pytest.raises(ValueError, match="source"):
        shortest_path(w, 4, 0)
    with pytest.raises(ValueError, match="source"):
        shortest_path(w, -1, 0)
    with pytest.raises(ValueError, match="target"):
        shortest_path(w, 0, 7)
    with pytest.raises(TypeError, match="target"):
        shortest_path(w, 0, 1.0)
    with pytest.raises(ValueError, match="weights"):
        shortest_path(jnp.ones((4, 3)), 0, 1)
    with pytest.raises(TypeError, match="weights"):
        shortest_path(jnp.ones((4, 4), jnp.int32), 0, 1)


def test_dense_runtime_errors_under_jit():
    inf = jnp.inf
    solve = jax.jit(shortest_path, static_argnums=(1, 2))
    unreachable = jnp.array([[inf, 1.0, inf], [inf, inf, inf], [inf, 1.0, inf]])
    with pytest.raises(RUNTIME_ERRORS, match="cannot be reached"):
        solve(unreachable, 0, 2).block_until_ready()
    # 0 -> 1 -> 2 -> 1 ...: the cycle 1 -> 2 -> 1 costs -1.
    cycle = jnp.array([[inf, 1.0, inf], [inf, inf, 1.0], [inf, -2.0, inf]])
    with pytest.raises(RUNTIME_ERRORS, match="negative total cost"):
        solve(cycle, 0, 2).block_until_ready()
    # A negative cycle the source cannot reach is harmless.
    harmless = jnp.array([[inf, 3.0, inf], [inf, inf, inf], [inf, inf, -1.0]])
    np.testing.assert_array_equal(solve(harmless, 0, 1)[0], [0, 1, 0])
    with pytest.raises(RUNTIME_ERRORS, match="NaN"):
        solve(harmless.at[0, 2].set(jnp.nan), 0, 1).block_until_ready()


# --- PyEPO's 5 x 5 grid DAG --------------------------------------------------------


def test_pyepo_grid_arcs():
    arcs = pyepo_grid_arcs(5)
    assert len(arcs) == 40 and len(set(arcs)) == 40
    assert arcs[:9] == (
        (0, 1),
        (1, 2),
        (2, 3),
        (3, 4),
        (0, 5),
        (1, 6),
        (2, 7),
        (3, 8),
        (4, 9),
    )
    assert arcs[-4:] == ((20, 21), (21, 22), (22, 23), (23, 24))
    assert pyepo_grid_arcs(2) == ((0, 1), (0, 2), (1, 3), (2, 3))
    with pytest.raises(ValueError, match="m"):
        pyepo_grid_arcs(1)


def all_pyepo_paths(m=5):
    """Arc incidence (70 x 40 for m = 5) of every path from node 0 to node m*m - 1."""
    index = {arc: k for k, arc in enumerate(pyepo_grid_arcs(m))}
    rows = []
    for downs in itertools.combinations(range(2 * (m - 1)), m - 1):
        row, node = np.zeros(len(index)), 0
        for step in range(2 * (m - 1)):
            head = node + (m if step in downs else 1)
            row[index[(node, head)]] = 1
            node = head
        rows.append(row)
    return np.array(rows)


def test_pyepo_shortest_path_negative_costs_brute_force():
    paths = all_pyepo_paths(5)
    assert paths.shape == (70, 40)
    rng = np.random.default_rng(7)
    costs = rng.normal(0.0, 1.0, (64, 40)).astype(np.float32)  # about half negative
    ys = np.asarray(pyepo_shortest_path(costs))
    assert ys.shape == (64, 40)
    for c, y in zip(costs, ys, strict=True):
        assert (paths == y).all(axis=1).any()  # y is one of the 70 paths
        np.testing.assert_allclose(y @ c, (paths @ c).min(), rtol=1e-5, atol=1e-5)


def test_arc_weights_round_trip_and_errors():
    arcs = pyepo_grid_arcs(3)
    values = jnp.arange(2 * len(arcs), dtype=jnp.float32).reshape(2, len(arcs))
    dense = arc_weights(values, arcs, 9)
    assert dense.shape == (2, 9, 9)
    assert jnp.isinf(dense).sum() == 2 * (81 - len(arcs))
    np.testing.assert_array_equal(arc_indicator(dense, arcs), values)
    with pytest.raises(ValueError, match="arc_costs"):
        arc_weights(values[:, :-1], arcs, 9)
    with pytest.raises(ValueError, match="arcs"):
        arc_weights(values[:, :2], ((0, 1), (0, 1)), 9)
    with pytest.raises(ValueError, match="arcs"):
        arc_indicator(dense, ((0, 9),))


@pytest.mark.slow
def test_pyepo_dynamic_program_equals_bellman_ford_with_ties():
    # Integer costs in {0, 1, 2} tie often: same paths as the general solver.
    arcs = pyepo_grid_arcs(5)
    costs = jax.random.randint(jax.random.key(3), (256, 40), -2, 3).astype(jnp.float32)
    general = arc_indicator(shortest_path(arc_weights(costs, arcs, 25), 0, 24), arcs)
    np.testing.assert_array_equal(pyepo_shortest_path(costs), general)


def test_pyepo_non_finite_costs_are_an_error():
    costs = jnp.ones((2, 40)).at[1, 5].set(jnp.nan)
    with pytest.raises(Exception, match="finite arc costs"):
        jax.block_until_ready(jax.jit(pyepo_shortest_path)(costs))
