"""The solution pool, `solve_with_pool` (PyEPO's solve_ratio) and the contrastive losses
NCE and CMAP, against their definitions written out on a 3-path shortest path and an
argmax; the pool inside a jit-compiled training step, saved and resumed."""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import PATHS, argmax_layer, argmin_layer, path_layer, three_paths

import perturbed_layers as pl

# Errors from eqx.error_if under jit reach Python as a RuntimeError or a ValueError
# (see tests/test_shortest_path_solvers.py); the tests check the message.
RUNTIME_ERRORS = (RuntimeError, ValueError)


def random_costs(seed, shape):
    return np.random.default_rng(seed).uniform(0.5, 3.0, shape)


# ------------------------------------------------------------------------- the pool


def test_pool_add_skips_duplicates_and_keeps_order():
    a, b, c = PATHS
    pool = pl.SolutionPool.empty(4, (5,))
    assert pool.capacity == 4 and int(pool.size) == 0
    pool = pool.add(jnp.asarray(np.stack([b, a, b, b])))
    assert int(pool.size) == 2
    np.testing.assert_array_equal(pool.solutions[:2], [b, a])
    np.testing.assert_array_equal(pool.solutions[2:], 0)
    pool = pool.add(jnp.asarray(np.stack([a, c])))  # a is stored already
    assert int(pool.size) == 3
    np.testing.assert_array_equal(pool.solutions[:3], [b, a, c])
    assert pool.add(jnp.zeros((0, 5))) is pool  # an empty batch adds nothing


def test_pool_fifo_evicts_oldest_and_keep_ignores_new():
    rows = np.eye(6)
    fifo = pl.SolutionPool.from_solutions(rows[:3], capacity=3)
    fifo = fifo.add(jnp.asarray(rows[3:5]))
    np.testing.assert_array_equal(fifo.solutions, rows[[2, 3, 4]])
    # More new rows than capacity in one call: the last `capacity` of them stay.
    fifo = fifo.add(jnp.asarray(np.concatenate([rows[:2], rows[5:], rows[1:2]])))
    np.testing.assert_array_equal(fifo.solutions, rows[[0, 1, 5]])
    assert int(fifo.size) == 3
    keep = pl.SolutionPool.from_solutions(rows[:2], capacity=3, when_full="keep")
    keep = keep.add(jnp.asarray(rows[2:5]))
    np.testing.assert_array_equal(keep.solutions, rows[:3])


def test_pool_add_where_nonfinite_tolerance_and_jit():
    pool = pl.SolutionPool.empty(5, (5,))
    new = jnp.asarray(PATHS).at[1, 0].set(jnp.nan)
    out = pool.add(new, where=jnp.array([True, True, False]))
    assert int(out.size) == 1  # row 1 is not finite, row 2 not wanted
    np.testing.assert_array_equal(out.solutions[0], PATHS[0])
    # A first-order solver's near-copy merges (L1 ≤ min(1e-4·5, 0.1) = 5e-4); a
    # distinct vertex does not; the tolerance is configurable.
    near = jnp.asarray(PATHS[0] + 5e-5)  # L1 2.5e-4
    assert int(out.add(near[None]).size) == 1
    assert int(out.add(jnp.asarray(PATHS[:1] + 1e-3)).size) == 2
    strict = pl.SolutionPool.empty(5, (5,), tolerance=0.0).add(jnp.asarray(PATHS[:1]))
    assert int(strict.add(near[None]).size) == 2
    # Under jit, the same pool comes out, and a second call does not recompile.
    traces = []

    @eqx.filter_jit
    def jitted(p, s):
        traces.append(None)
        return p.add(s)

    stacked = jnp.asarray(np.stack([PATHS[2], PATHS[0], PATHS[2]]))
    got = jitted(out, stacked)
    want = out.add(stacked)
    np.testing.assert_array_equal(got.solutions, want.solutions)
    assert int(got.size) == int(want.size) == 2
    jitted(got, stacked)
    assert len(traces) == 1


def test_pool_best_ignores_unused_rows_and_follows_the_sign():
    pool = pl.SolutionPool.from_solutions(PATHS[:2], capacity=4)
    costs = jnp.asarray(random_costs(0, (6, 5)))
    best = pool.best(costs, "min")
    # The unused rows are zeros, whose objective 0 would beat every stored path.
    want = PATHS[:2][np.argmin(np.asarray(costs) @ PATHS[:2].T, axis=1)]
    np.testing.assert_array_equal(best, want)
    worst = pool.best(costs, "max")
    want = PATHS[:2][np.argmax(np.asarray(costs) @ PATHS[:2].T, axis=1)]
    np.testing.assert_array_equal(worst, want)
    # Missing arcs as +inf costs: a path over one is never best, and no NaN.
    blocked = costs.at[:, 0].set(jnp.inf)
    np.testing.assert_array_equal(pool.best(blocked, "min"), np.tile(PATHS[1], (6, 1)))
    assert np.all(np.isfinite(pool.objectives(blocked)[:, 1]))
    assert pool.best(costs[0], "min").shape == (5,)


# --------------------------------------------------------------- solve_with_pool


def counting_layer(calls, rows=None):
    """A host solver through pure_callback, batched: it records how many instances
    each call receives (and which), so the number of solves is observed, not assumed."""

    def host(costs):
        calls.append(costs.shape[0])
        if rows is not None:
            rows.append(np.array(costs))
        return PATHS[np.argmin(costs @ PATHS.T, axis=-1)].astype(costs.dtype)

    def solve(costs):
        out = jax.ShapeDtypeStruct(costs.shape, costs.dtype)
        return jax.pure_callback(host, out, costs, vmap_method="broadcast_all")

    return path_layer(solve)


def test_solve_with_pool_solves_exactly_the_ratio():
    # Every instance's optimum is path 0 and the pool holds only paths 1 and 2.
    costs = jnp.asarray(random_costs(1, (8, 5))).at[:, :2].set(0.1)
    pool = pl.SolutionPool.from_solutions(PATHS[1:], capacity=4)
    calls, rows = [], []
    layer = counting_layer(calls, rows)
    step = jax.jit(
        lambda c, p, k: pl.solve_with_pool(layer, c, p, solve_ratio=0.25, key=k)
    )
    y, new_pool = step(costs, pool, jax.random.key(0))
    assert calls == [2]  # 0.25 · 8 instances, and only those, reach the solver
    # Path 0 was added, and the others get the best of the updated pool: path 0.
    assert int(new_pool.size) == 3
    np.testing.assert_array_equal(new_pool.solutions[2], PATHS[0])
    np.testing.assert_array_equal(y, np.tile(PATHS[0], (8, 1)))
    # Another key picks other instances (keys 0 and 3 draw different pairs).
    step(costs, pool, jax.random.key(3))
    assert calls == [2, 2]
    assert not np.array_equal(rows[0], rows[1])
    for chosen in rows:
        assert all(np.any(np.all(np.asarray(costs) == r, axis=1)) for r in chosen)
    # Ratio 1: every instance solved; ratio 0: none, no key needed.
    calls.clear()
    y1, _ = pl.solve_with_pool(layer, costs, pool, solve_ratio=1.0)
    assert calls == [8]
    np.testing.assert_array_equal(y1, np.tile(PATHS[0], (8, 1)))
    y0, p0 = pl.solve_with_pool(layer, costs, pool, solve_ratio=0.0)
    assert calls == [8] and int(p0.size) == 2
    want = PATHS[1:][np.argmin(np.asarray(costs) @ PATHS[1:].T, axis=1)]
    np.testing.assert_array_equal(y0, want)
    with pytest.raises(RuntimeError, match="key"):
        pl.solve_with_pool(layer, costs, pool, solve_ratio=0.5)


def test_solve_with_pool_fractional_count_is_right_on_average():
    # r·B = 0.3·5 = 1.5: one or two instances, each half of the time.
    costs = jnp.asarray(random_costs(2, (5, 5))).at[:, :2].set(0.1)
    pool = pl.SolutionPool.from_solutions(PATHS[1:], capacity=4)
    calls = []
    layer = counting_layer(calls)
    step = jax.jit(
        lambda k: pl.solve_with_pool(layer, costs, pool, solve_ratio=0.3, key=k)
    )
    for i in range(40):
        step(jax.random.key(i))
    assert set(calls) == {1, 2}
    # 40 fair coin flips: 1.5 ± 0.08 (one standard deviation); 0.3 is 3.8 of them.
    assert abs(np.mean(calls) - 1.5) < 0.3


def test_solve_with_pool_scores_and_nan():
    theta = jnp.asarray(np.random.default_rng(3).normal(size=(4, 3)))
    pool = pl.SolutionPool.from_solutions(np.eye(3)[:1], capacity=3)
    y, new_pool = pl.solve_with_pool(argmax_layer(), theta, pool)
    np.testing.assert_array_equal(y, jax.nn.one_hot(jnp.argmax(theta, -1), 3))
    # Scores: the pool answers with the argmax over its solutions.
    y0, _ = pl.solve_with_pool(argmax_layer(), -theta, new_pool, solve_ratio=0.0)
    stored = np.asarray(new_pool.solutions[: int(new_pool.size)])
    want = stored[np.argmax(-np.asarray(theta) @ stored.T, axis=1)]
    np.testing.assert_array_equal(y0, want)
    bad = theta.at[1, 0].set(jnp.nan)
    y_bad, p_bad = pl.solve_with_pool(argmax_layer(), bad, pool)
    assert np.all(np.isnan(y_bad[1])) and np.all(
        np.isfinite(y_bad[jnp.array([0, 2, 3])])
    )
    assert np.all(np.isfinite(p_bad.solutions))
    # An empty batch: nothing solved, nothing added, empty outputs.
    y_none, p_none = pl.solve_with_pool(argmax_layer(), jnp.zeros((0, 3)), pool)
    assert y_none.shape == (0, 3) and int(p_none.size) == 1
    assert pl.NCELoss(argmax_layer())(jnp.zeros((0, 3)), y_none, pool).shape == (0,)


# ------------------------------------------------------------------ NCE and CMAP


def nce_oracle(pred, y_true, pool_rows):
    """(1/|S|) Σ_s <ĉ, w*> − <ĉ, s> and its gradient w* − mean(S), costs."""
    return pred @ y_true - np.mean(pool_rows @ pred), y_true - pool_rows.mean(0)


def cmap_oracle(pred, y_true, pool_rows):
    """<ĉ, w*> − min_s <ĉ, s> and its gradient w* − argmin_s <ĉ, s>, costs."""
    best = pool_rows[np.argmin(pool_rows @ pred)]
    return pred @ y_true - best @ pred, y_true - best


@pytest.mark.parametrize(
    "loss_cls, oracle", [(pl.NCELoss, nce_oracle), (pl.CMAPLoss, cmap_oracle)]
)
def test_contrastive_three_paths_closed_form(loss_cls, oracle):
    with jax.enable_x64(True):
        pred, costs = random_costs(4, (6, 5)), random_costs(5, (6, 5))
        y_true = PATHS[np.argmin(costs @ PATHS.T, axis=1)]
        # Two stored paths in a pool of capacity 5: the unused rows must not count.
        rows = PATHS[[2, 0]]
        pool = pl.SolutionPool.from_solutions(rows, capacity=5)
        loss = jax.jit(loss_cls(path_layer()))
        args = (jnp.asarray(pred), jnp.asarray(y_true), pool)
        value = loss(*args)
        grad = jax.jit(jax.grad(lambda p: loss(p, *args[1:]).sum()))(args[0])
        for b in range(6):
            v, g = oracle(pred[b], y_true[b], rows)
            np.testing.assert_allclose(value[b], v, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grad[b], g, atol=1e-12)
        assert np.any(np.abs(grad) > 0.5)
        # Piecewise linear: central differences are exact away from ties.
        h = 1e-6
        for j in range(5):
            e = jnp.zeros_like(args[0]).at[:, j].set(h)
            fd = (loss(args[0] + e, *args[1:]) - loss(args[0] - e, *args[1:])) / (2 * h)
            np.testing.assert_allclose(fd, grad[:, j], atol=1e-6)
        # The pool as given: another pool gives another loss.
        other = pl.SolutionPool.from_solutions(PATHS[1:2], capacity=5)
        assert not np.allclose(loss(args[0], args[1], other), value)


@pytest.mark.parametrize("cls", [pl.NCELoss, pl.CMAPLoss])
def test_contrastive_scores_mirror_costs(cls):
    rng = np.random.default_rng(6)
    theta_hat = jnp.asarray(rng.normal(size=(5, 4)), jnp.float32)
    y_true = jax.nn.one_hot(jnp.asarray(rng.integers(0, 4, 5)), 4)
    rows = np.eye(4)[[0, 2, 3]]
    pool = pl.SolutionPool.from_solutions(rows, capacity=6)
    argmin = argmin_layer()
    th, y = np.asarray(theta_hat), np.asarray(y_true)
    # Scores: mean_s <θ̂, s> − <θ̂, y*> (NCE), max_s <θ̂, s> − <θ̂, y*> (CMAP).
    reduce = np.mean if cls is pl.NCELoss else np.max
    want = reduce(th @ rows.T, axis=1) - np.sum(th * y, 1)
    loss = jax.jit(cls(argmax_layer()))
    value = loss(theta_hat, y_true, pool)
    np.testing.assert_allclose(value, want, rtol=1e-6, atol=1e-6)
    mirrored = jax.jit(cls(argmin))
    np.testing.assert_allclose(mirrored(-theta_hat, y_true, pool), value, rtol=1e-6)
    g_max = jax.grad(lambda t: loss(t, y_true, pool).sum())(theta_hat)
    g_min = jax.grad(lambda c: mirrored(c, y_true, pool).sum())(-theta_hat)
    np.testing.assert_allclose(g_min, -g_max, atol=1e-6)
    # Written out: mean(S) − y* (NCE), argmax_s <θ̂, s> − y* (CMAP).
    if cls is pl.NCELoss:
        np.testing.assert_allclose(g_max, rows.mean(0) - y, atol=1e-6)
    else:
        np.testing.assert_allclose(g_max, rows[np.argmax(th @ rows.T, 1)] - y)
    # The sign is not a no-op: costs read as scores give another value.
    assert not np.allclose(mirrored(theta_hat, y_true, pool), value)


def test_cmap_is_zero_when_the_truth_is_the_predicted_best():
    costs = jnp.asarray(random_costs(7, (20, 5)))
    y_true = jax.vmap(three_paths)(costs)
    pool = pl.SolutionPool.from_solutions(PATHS)
    loss = pl.CMAPLoss(path_layer())
    np.testing.assert_allclose(loss(costs, y_true, pool), 0.0, atol=1e-6)
    pred = jnp.asarray(random_costs(8, (20, 5)))
    value = loss(pred, y_true, pool)
    assert float(jnp.min(value)) >= 0 and float(jnp.max(value)) > 0


def test_value_and_pool_refreshes_with_the_predicted_solutions():
    costs = jnp.asarray(random_costs(9, (4, 5))).at[:, 4].set(0.05)
    pred = costs.at[:, :2].set(0.01)  # predicted best: path 0
    y_true = jax.vmap(three_paths)(costs)  # path 2
    pool = pl.SolutionPool.from_solutions(PATHS[2:], capacity=3)
    loss = pl.CMAPLoss(path_layer())
    value, new_pool = loss.value_and_pool(pred, y_true, pool)
    assert int(new_pool.size) == 2  # PyEPO adds w*(ĉ), the prediction's solution
    np.testing.assert_array_equal(new_pool.solutions[1], PATHS[0])
    np.testing.assert_allclose(value, loss(pred, y_true, new_pool))
    np.testing.assert_allclose(loss(pred, y_true, pool), 0.0)  # before: only path 2
    assert float(jnp.min(value)) > 0
    with pytest.raises(RuntimeError, match="key"):
        pl.NCELoss(path_layer(), solve_ratio=0.5).value_and_pool(pred, y_true, pool)


def test_contrastive_nan_instance_and_empty_pool():
    pred = jnp.asarray(random_costs(10, (3, 5))).at[1, 2].set(jnp.nan)
    y_true = jnp.asarray(PATHS)
    pool = pl.SolutionPool.from_solutions(PATHS)
    value = pl.NCELoss(path_layer())(pred, y_true, pool)
    assert np.isnan(value[1]) and np.all(np.isfinite(value[jnp.array([0, 2])]))
    empty = pl.SolutionPool.empty(3, (5,))
    with pytest.raises(RUNTIME_ERRORS, match="empty"):
        jax.block_until_ready(pl.NCELoss(path_layer())(pred, y_true, empty))


def test_pool_and_loss_bad_arguments():
    loss = pl.NCELoss(path_layer())
    pred, y = jnp.ones((2, 5)), jnp.asarray(PATHS[:2])
    with pytest.raises(ValueError, match=r"pool holds solutions of shape \(4,\)"):
        loss(pred, y, pl.SolutionPool.empty(3, (4,)))
    with pytest.raises(TypeError, match=r"pool must be a pl\.SolutionPool"):
        loss(pred, y, jnp.asarray(PATHS))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="y_true"):
        loss(pred, jnp.ones((2, 4)), pl.SolutionPool.from_solutions(PATHS))
    with pytest.raises(TypeError, match="pred"):
        loss(jnp.ones((2, 5), jnp.int32), y, pl.SolutionPool.from_solutions(PATHS))
    for ratio in (-0.1, 1.5, math.nan, True, "half"):
        with pytest.raises(ValueError, match="solve_ratio"):
            pl.CMAPLoss(path_layer(), solve_ratio=ratio)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="objective"):
        pl.NCELoss(pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal()))
    with pytest.raises(TypeError, match="layer"):
        pl.CMAPLoss(three_paths)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="capacity"):
        pl.SolutionPool.empty(0, (5,))
    with pytest.raises(ValueError, match="when_full"):
        pl.SolutionPool.empty(3, (5,), when_full="lifo")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="tolerance"):
        pl.SolutionPool.empty(3, (5,), tolerance=-1.0)
    with pytest.raises(ValueError, match="new_solutions"):
        pl.SolutionPool.empty(3, (5,)).add(jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="where"):
        pl.SolutionPool.empty(3, (5,)).add(jnp.ones((2, 5)), where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="solutions must have shape"):
        pl.SolutionPool.from_solutions(jnp.ones(5))
    with pytest.raises(TypeError, match="size"):
        pl.SolutionPool(jnp.zeros((3, 5)), jnp.zeros(()))
    with pytest.raises(ValueError, match="objective"):
        pl.SolutionPool.from_solutions(PATHS).best(jnp.ones(5), "minimise")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="theta must end with"):
        pl.SolutionPool.from_solutions(PATHS).best(jnp.ones(4), "min")


# ------------------------------------------------- the pool in a training state


def training_data(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    weights = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    costs = np.exp(0.5 * x @ weights) * rng.uniform(0.8, 1.2, (n, 5))
    return jnp.asarray(x), jnp.asarray(costs, jnp.float32)


def true_regret(model, x, costs):
    pred = np.asarray(jax.vmap(model)(x))
    w = PATHS[np.argmin(pred @ PATHS.T, axis=-1)]
    best = np.min(np.asarray(costs) @ PATHS.T, axis=-1)
    return float(np.sum(np.sum(np.asarray(costs) * w, -1) - best) / np.sum(best))


def make_step(loss, optimizer, target_is_solution, traces=None):
    @eqx.filter_jit
    def step(model, opt_state, pool, key, x, costs):
        if traces is not None:
            traces.append(None)
        target = jax.vmap(three_paths)(costs) if target_is_solution else costs

        def objective(m):
            values, new_pool = loss.value_and_pool(
                jax.vmap(m)(x), target, pool, key=key
            )
            return jnp.mean(values), new_pool

        (value, pool), grads = eqx.filter_value_and_grad(objective, has_aux=True)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, pool, value

    return step


def test_pool_in_a_jit_training_step_saves_and_resumes_exactly(tmp_path):
    x, costs = training_data(1, 64)
    loss = pl.CMAPLoss(path_layer(), solve_ratio=0.5)
    optimizer = optax.adam(0.05)
    traces = []
    step = make_step(loss, optimizer, target_is_solution=True, traces=traces)
    model = eqx.nn.Linear(3, 5, key=jax.random.key(0))
    opt_state = optimizer.init(eqx.filter(model, eqx.is_array))
    # Seeded with one path only: the solved predictions must add the others.
    pool = pl.SolutionPool.from_solutions(PATHS[2:], capacity=8)
    key = jax.random.key(1)

    def run(state, steps):
        values = []
        for s in steps:
            batch = slice(16 * (s % 4), 16 * (s % 4) + 16)
            *state, value = step(
                *state, jax.random.fold_in(key, s), x[batch], costs[batch]
            )
            values.append(float(value))
        return tuple(state), values

    state, _ = run((model, opt_state, pool), range(6))
    assert int(state[2].size) >= 2  # the pool grew inside the compiled step
    path = tmp_path / "checkpoint.eqx"
    eqx.tree_serialise_leaves(path, state)
    _, straight = run(state, range(6, 12))
    template = (
        eqx.nn.Linear(3, 5, key=jax.random.key(99)),
        optimizer.init(eqx.filter(model, eqx.is_array)),
        pl.SolutionPool.empty(8, (5,)),
    )
    loaded = eqx.tree_deserialise_leaves(path, template)
    np.testing.assert_array_equal(loaded[2].solutions, state[2].solutions)
    assert int(loaded[2].size) == int(state[2].size)
    _, resumed = run(loaded, range(6, 12))
    assert resumed == straight  # bit for bit
    assert len(traces) == 1  # one compilation for the fresh and the loaded state


def all_pool_losses():
    layer = path_layer()
    return {
        "nce": (pl.NCELoss(layer, solve_ratio=0.5), True),
        "cmap": (pl.CMAPLoss(layer, solve_ratio=0.5), True),
        "pointwise": (pl.PointwiseLTRLoss(layer, solve_ratio=0.5), False),
        "pairwise": (pl.PairwiseLTRLoss(layer, solve_ratio=0.5, margin=0.1), False),
        "listwise": (
            pl.ListwiseLTRLoss(layer, solve_ratio=0.5, temperature=0.5),
            False,
        ),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(all_pool_losses()))
def test_each_pool_loss_trains_a_linear_model(name):
    loss, target_is_solution = all_pool_losses()[name]
    x, costs = training_data(1, 256)
    x_test, costs_test = training_data(2, 256)
    optimizer = optax.chain(optax.add_decayed_weights(1e-3), optax.adam(0.05))
    step = make_step(loss, optimizer, target_is_solution)
    model = eqx.nn.Linear(3, 5, key=jax.random.key(0))
    state = (model, optimizer.init(eqx.filter(model, eqx.is_array)))
    # PyEPO's setting: the pool starts from the training set's true solutions.
    pool = pl.SolutionPool.from_solutions(jax.vmap(three_paths)(costs), capacity=8)
    before = true_regret(model, x_test, costs_test)
    for s in range(60):
        batch = slice(32 * (s % 8), 32 * (s % 8) + 32)
        *state, pool, _ = step(*state, pool, jax.random.key(s), x[batch], costs[batch])
    after = true_regret(state[0], x_test, costs_test)
    assert after < 0.5 * before, (name, before, after)
