"""The learning-to-rank losses over a solution pool (pointwise, pairwise, listwise),
against their definitions written out on a 3-path shortest path and an argmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, argmax_layer, argmin_layer, path_layer
from scipy.special import log_softmax, softmax

import perturbed_layers as pl


def random_costs(seed, shape):
    return np.random.default_rng(seed).uniform(0.5, 3.0, shape)


# The definitions for costs, per instance, over the pool's rows S (|S| × d).
def pointwise(pred, costs, rows):
    diff = rows @ pred - rows @ costs
    return np.mean(diff**2), 2 * np.mean(diff[:, None] * rows, axis=0)


def pairwise(pred, costs, rows, margin=0.0):
    best = np.argmin(rows @ costs)
    value, grad = 0.0, np.zeros_like(pred)
    for s in range(len(rows)):
        if s == best:
            continue
        hinge = margin + rows[best] @ pred - rows[s] @ pred
        if hinge > 0:
            value += hinge
            grad += rows[best] - rows[s]
    count = max(len(rows) - 1, 1)
    return value / count, grad / count


def listwise(pred, costs, rows, tau=1.0):
    q = softmax(-(rows @ costs) / tau)
    p = softmax(-(rows @ pred) / tau)
    value = -np.sum(q * log_softmax(-(rows @ pred) / tau))
    return value, (q - p) @ rows / tau


CASES = [
    (pl.PointwiseLTRLoss, {}, pointwise),
    (pl.PairwiseLTRLoss, {}, pairwise),
    (pl.PairwiseLTRLoss, {"margin": 0.7}, lambda p, c, r: pairwise(p, c, r, 0.7)),
    (pl.ListwiseLTRLoss, {}, listwise),
    (
        pl.ListwiseLTRLoss,
        {"temperature": 0.3},
        lambda p, c, r: listwise(p, c, r, 0.3),
    ),
]
IDS = ["pointwise", "pairwise", "pairwise-margin", "listwise", "listwise-tau"]


@pytest.mark.parametrize("cls, options, oracle", CASES, ids=IDS)
def test_ltr_three_paths_closed_form(cls, options, oracle):
    with jax.enable_x64(True):
        pred, costs = random_costs(0, (6, 5)), random_costs(1, (6, 5))
        # Two stored paths in a pool of capacity 5 (three unused zero rows).
        rows = PATHS[[2, 0]]
        pool = pl.SolutionPool.from_solutions(rows, capacity=5)
        loss = jax.jit(cls(path_layer(), **options))
        p, c = jnp.asarray(pred), jnp.asarray(costs)
        value = loss(p, c, pool)
        grad = jax.jit(jax.grad(lambda t: loss(t, c, pool).sum()))(p)
        for b in range(6):
            v, g = oracle(pred[b], costs[b], rows)
            np.testing.assert_allclose(value[b], v, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grad[b], g, rtol=1e-10, atol=1e-12)
        assert np.any(np.abs(grad) > 1e-3)  # the check above was not vacuous
        # Finite differences: exact for the piecewise-linear pairwise loss away from
        # kinks, O(h²) for the smooth ones.
        h = 1e-6
        for j in range(5):
            e = jnp.zeros_like(p).at[:, j].set(h)
            fd = (loss(p + e, c, pool) - loss(p - e, c, pool)) / (2 * h)
            np.testing.assert_allclose(fd, grad[:, j], rtol=1e-6, atol=1e-7)
        # The full pool of three paths gives another value: the pool is read.
        full = pl.SolutionPool.from_solutions(PATHS)
        assert not np.allclose(loss(p, c, full), value)


def test_listwise_temperature_scale_is_tested():
    # The value at τ = 0.5 matches the definition with τ in both softmaxes, and not
    # any of the plausible mistakes: τ left out, τ applied twice or inverted, τ on
    # one distribution only.
    with jax.enable_x64(True):
        pred, costs = random_costs(2, (8, 5)), random_costs(3, (8, 5))
        pool = pl.SolutionPool.from_solutions(PATHS)
        loss = jax.jit(pl.ListwiseLTRLoss(path_layer(), temperature=0.5))
        value = np.asarray(loss(jnp.asarray(pred), jnp.asarray(costs), pool))

        def written(tau_pred, tau_true):
            q = softmax(-(costs @ PATHS.T) / tau_true, axis=1)
            return -np.sum(q * log_softmax(-(pred @ PATHS.T) / tau_pred, axis=1), 1)

        np.testing.assert_allclose(value, written(0.5, 0.5), rtol=1e-12)
        for wrong in [(1.0, 1.0), (0.25, 0.25), (2.0, 2.0), (0.5, 1.0), (1.0, 0.5)]:
            assert not np.allclose(value, written(*wrong), rtol=1e-3), wrong
        # The gradient carries 1/τ: (q − p) S / τ.
        grad = jax.grad(lambda t: loss(t, jnp.asarray(costs), pool).sum())(
            jnp.asarray(pred)
        )
        q = softmax(-(costs @ PATHS.T) / 0.5, axis=1)
        p = softmax(-(pred @ PATHS.T) / 0.5, axis=1)
        np.testing.assert_allclose(grad, (q - p) @ PATHS / 0.5, rtol=1e-10)
        assert not np.allclose(grad, (q - p) @ PATHS, rtol=1e-3)


@pytest.mark.parametrize(
    "cls, options, oracle",
    [CASES[i] for i in (0, 1, 3)],
    ids=[IDS[i] for i in (0, 1, 3)],
)
def test_ltr_scores_mirror_costs(cls, options, oracle):
    # For scores (argmax) the loss is the costs loss on −θ̂, −θ: written out, the
    # pairwise best is the argmax of ⟨θ, s⟩, listwise softmaxes are of +⟨θ, s⟩.
    del oracle
    rng = np.random.default_rng(4)
    theta_hat = rng.normal(size=(5, 4))
    theta = rng.normal(size=(5, 4))
    rows = np.eye(4)[[0, 2, 3]]
    pool = pl.SolutionPool.from_solutions(rows, capacity=6)
    loss = jax.jit(cls(argmax_layer(), **options))
    value = loss(jnp.asarray(theta_hat, jnp.float32), jnp.asarray(theta), pool)
    pred_obj, true_obj = theta_hat @ rows.T, theta @ rows.T
    if cls is pl.PointwiseLTRLoss:
        want = np.mean((pred_obj - true_obj) ** 2, axis=1)
    elif cls is pl.PairwiseLTRLoss:
        best = np.argmax(true_obj, axis=1)
        top = pred_obj[np.arange(5), best][:, None]
        hinge = np.maximum(0, pred_obj - top)  # margin 0: the best slot adds 0
        want = hinge.sum(1) / 2
    else:
        want = -np.sum(softmax(true_obj, 1) * log_softmax(pred_obj, 1), axis=1)
    np.testing.assert_allclose(value, want, rtol=1e-5, atol=1e-6)
    mirrored = jax.jit(cls(argmin_layer(), **options))
    th = jnp.asarray(theta_hat, jnp.float32)
    t = jnp.asarray(theta, jnp.float32)
    np.testing.assert_allclose(mirrored(-th, -t, pool), value, rtol=1e-5, atol=1e-6)
    g_max = jax.grad(lambda x: loss(x, t, pool).sum())(th)
    g_min = jax.grad(lambda x: mirrored(x, -t, pool).sum())(-th)
    np.testing.assert_allclose(g_min, -g_max, atol=1e-6)
    if cls is not pl.PointwiseLTRLoss:  # pointwise does not depend on the sign
        assert not np.allclose(mirrored(th, t, pool), value, atol=1e-4)


@pytest.mark.slow
def test_ltr_properties_at_the_truth():
    costs = jnp.asarray(random_costs(5, (20, 5)), jnp.float32)
    pool = pl.SolutionPool.from_solutions(PATHS)
    np.testing.assert_allclose(
        pl.PointwiseLTRLoss(path_layer())(costs, costs, pool), 0.0, atol=1e-6
    )
    np.testing.assert_allclose(
        pl.PairwiseLTRLoss(path_layer())(costs, costs, pool), 0.0, atol=1e-6
    )
    # Listwise: cross-entropy, minimised at p = q (ĉ = c), where it is q's entropy.
    listwise_loss = pl.ListwiseLTRLoss(path_layer(), temperature=0.5)
    at_truth = listwise_loss(costs, costs, pool)
    q = jax.nn.softmax(-(costs @ PATHS.T.astype(np.float32)) / 0.5, axis=1)
    np.testing.assert_allclose(at_truth, -jnp.sum(q * jnp.log(q), 1), rtol=1e-5)
    other = jnp.asarray(random_costs(6, (20, 5)), jnp.float32)
    assert np.all(np.asarray(listwise_loss(other, costs, pool)) >= at_truth - 1e-6)


@pytest.mark.slow
def test_ltr_value_and_pool_nan_and_errors():
    pred = jnp.asarray(random_costs(7, (4, 5)), jnp.float32).at[:, 4].set(0.01)
    costs = jnp.asarray(random_costs(8, (4, 5)), jnp.float32)
    pool = pl.SolutionPool.from_solutions(PATHS[:2], capacity=3)
    loss = pl.ListwiseLTRLoss(path_layer())
    value, new_pool = loss.value_and_pool(pred, costs, pool)
    assert int(new_pool.size) == 3  # w*(ĉ) = path 2 added
    np.testing.assert_allclose(value, loss(pred, costs, new_pool))
    bad = costs.at[2, 1].set(jnp.nan)
    for cls in (pl.PointwiseLTRLoss, pl.PairwiseLTRLoss, pl.ListwiseLTRLoss):
        out = cls(path_layer())(pred, bad, pool)
        assert np.isnan(out[2]) and np.all(np.isfinite(out[jnp.array([0, 1, 3])]))
    with pytest.raises(ValueError, match="costs_true"):
        loss(pred, jnp.ones((4, 4)), pool)
    with pytest.raises(ValueError, match="pool holds solutions"):
        loss(pred, costs, pl.SolutionPool.empty(2, (4,)))
    with pytest.raises(ValueError, match="temperature"):
        pl.ListwiseLTRLoss(path_layer(), temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        pl.ListwiseLTRLoss(path_layer(), temperature=float("inf"))
    with pytest.raises(ValueError, match="margin"):
        pl.PairwiseLTRLoss(path_layer(), margin=-1.0)
    with pytest.raises(ValueError, match="solve_ratio"):
        pl.PointwiseLTRLoss(path_layer(), solve_ratio=2.0)
