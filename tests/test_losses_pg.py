"""The perturbation-gradient losses PGB and PGC against their definitions, written out
on a 3-path shortest path and an argmax, and against PyEPO's JAX front end."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import PATHS, argmax_layer, path_layer, three_paths

import perturbed_layers as pl

VARIANTS = ("backward", "central")


def pg_paths_oracle(pred, costs, h, variant):
    """The definition over the three paths: z(x) = min_p <x, p>, PGB (z(ĉ) − z(ĉ − hc))/h,
    PGC (z(ĉ + hc) − z(ĉ − hc))/(2h); the gradient is the difference of the argmins
    divided by the same denominator."""

    def z_and_w(x):
        k = int(np.argmin(PATHS @ x))
        return PATHS[k] @ x, PATHS[k]

    z_lo, w_lo = z_and_w(pred - h * costs)
    if variant == "backward":
        (z_up, w_up), denom = z_and_w(pred), h
    else:
        (z_up, w_up), denom = z_and_w(pred + h * costs), 2 * h
    return (z_up - z_lo) / denom, (w_up - w_lo) / denom


def random_instances(seed, shape):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.5, 3.0, shape), rng.uniform(0.5, 3.0, shape)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pg_three_paths_closed_form(variant):
    with jax.enable_x64(True):
        pred, costs = random_instances(0, (2, 3, 5))
        h = 0.7
        loss = pl.PerturbationGradientLoss(path_layer(), h=h, variant=variant)
        value = loss(jnp.asarray(pred), jnp.asarray(costs))
        grad = jax.grad(lambda p: loss(p, jnp.asarray(costs)).sum())(jnp.asarray(pred))
        assert value.shape == (2, 3) and value.dtype == jnp.float64
        moved = 0
        for i, j in itertools.product(range(2), range(3)):
            v, g = pg_paths_oracle(pred[i, j], costs[i, j], h, variant)
            np.testing.assert_allclose(value[i, j], v, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(grad[i, j], g, atol=1e-12)
            if np.any(g != 0):
                moved += 1
                # The scale 1/h (1/(2h)) matters: the oracle with a wrong step or a
                # wrong denominator does not match.
                for wrong in (
                    pg_paths_oracle(pred[i, j], costs[i, j], 2 * h, variant)[1],
                    g / 2,
                    2 * g,
                ):
                    assert not np.allclose(grad[i, j], wrong)
        assert moved >= 2  # the check above was not vacuous


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_pg_gradient_is_finite_differences(variant):
    # PG is piecewise linear in ĉ (the solutions are piecewise constant): central
    # differences away from the kinks are exact, a check of the 1/h scale that does
    # not go through the formula.
    with jax.enable_x64(True):
        pred, costs = random_instances(1, (8, 5))
        pred, costs = jnp.asarray(pred), jnp.asarray(costs)
        loss = pl.PerturbationGradientLoss(path_layer(), h=0.5, variant=variant)
        grad = jax.grad(lambda p: loss(p, costs).sum())(pred)
        eps = 1e-6
        fd = np.zeros(pred.shape)
        for j in range(5):
            e = jnp.zeros_like(pred).at[:, j].set(eps)
            fd[:, j] = (loss(pred + e, costs) - loss(pred - e, costs)) / (2 * eps)
        np.testing.assert_allclose(grad, fd, atol=1e-6)
        assert np.abs(fd).max() > 0.5  # some entry moves


def test_pgb_bounds_the_decision_cost_and_converges_to_it():
    # z is concave, so (z(ĉ) − z(ĉ − hc))/h ≥ <c, w*(ĉ)> for every h, with equality once
    # h is below the distance to the next change of decision.
    pred, costs = random_instances(2, (200, 5))
    pred, costs = jnp.asarray(pred), jnp.asarray(costs)
    decision = jnp.sum(costs * jax.vmap(three_paths)(pred), -1)
    big = pl.PerturbationGradientLoss(path_layer(), h=1.0)(pred, costs)
    assert np.all(np.asarray(big) >= np.asarray(decision) - 1e-5)
    assert np.any(np.asarray(big) > np.asarray(decision) + 0.1)
    small = pl.PerturbationGradientLoss(path_layer(), h=1e-3)(pred, costs)
    close = np.isclose(small, decision, rtol=1e-3, atol=1e-3)
    assert close.mean() > 0.95


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_pg_maximisation_mirrors_minimisation(variant):
    rng = np.random.default_rng(3)
    theta_hat = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    theta = jnp.asarray(rng.normal(size=(16, 4)), jnp.float32)
    h = 0.8
    loss = pl.PerturbationGradientLoss(argmax_layer(), h=h, variant=variant)
    value = loss(theta_hat, theta)
    grad = jax.grad(lambda t: loss(t, theta).sum())(theta_hat)
    # Written out for scores: z(x) = max_i x_i, ℓ = −(z(up) − z(θ̂ − hθ))/denom.
    lo = theta_hat - h * theta
    up, denom = (
        (theta_hat, h) if variant == "backward" else (theta_hat + h * theta, 2 * h)
    )
    exact = -(jnp.max(up, -1) - jnp.max(lo, -1)) / denom
    np.testing.assert_allclose(value, exact, rtol=1e-5, atol=1e-5)
    one_hot = lambda x: jax.nn.one_hot(jnp.argmax(x, -1), 4)  # noqa: E731
    expected = -(one_hot(up) - one_hot(lo)) / denom
    np.testing.assert_allclose(grad, expected, rtol=1e-6)
    assert float(jnp.abs(expected).sum()) > 0
    # Minimisation's signs on scores would not match.
    assert not np.allclose(value, -exact, atol=1e-3)
    # The same loss as for the costs −θ̂, −θ with the argmin solver.
    argmin = path_layer(lambda c: jax.nn.one_hot(jnp.argmin(c), c.shape[-1]))
    mirrored = pl.PerturbationGradientLoss(argmin, h=h, variant=variant)
    np.testing.assert_allclose(mirrored(-theta_hat, -theta), value, rtol=1e-6)
    grad_min = jax.grad(lambda c: mirrored(c, -theta).sum())(-theta_hat)
    np.testing.assert_allclose(grad_min, -grad)


@pytest.mark.slow
def test_pg_inside_jit_forward_mode_and_solutions():
    pred, costs = random_instances(4, (6, 5))
    pred, costs = jnp.asarray(pred, jnp.float32), jnp.asarray(costs, jnp.float32)
    loss = pl.PerturbationGradientLoss(path_layer(), h=0.5, variant="central")
    value, grad = jax.jit(jax.value_and_grad(lambda p: loss(p, costs).sum()))(pred)
    value_each, (w_up, w_lo) = loss.value_and_solutions(pred, costs)
    np.testing.assert_allclose(value, value_each.sum(), rtol=1e-5)
    np.testing.assert_array_equal(w_up, jax.vmap(three_paths)(pred + 0.5 * costs))
    np.testing.assert_array_equal(w_lo, jax.vmap(three_paths)(pred - 0.5 * costs))
    np.testing.assert_allclose(grad, (w_up - w_lo) / 1.0)
    tangent = jnp.ones_like(pred)
    _, out = jax.jvp(lambda p: loss(p, costs), (pred,), (tangent,))
    np.testing.assert_allclose(out, jnp.sum(w_up - w_lo, -1), rtol=1e-6)


def test_pg_args_reach_the_solver():
    def masked_argmin(costs, mask):
        return jax.nn.one_hot(jnp.argmin(jnp.where(mask, costs, jnp.inf)), 3)

    layer = path_layer(masked_argmin)
    costs = jnp.array([[0.1, 1.0, 2.0], [0.1, 1.0, 2.0]])
    pred = jnp.array([[0.0, 3.0, 1.0], [0.0, 3.0, 1.0]])
    mask = jnp.array([[True, True, True], [False, True, True]])
    loss = pl.PerturbationGradientLoss(layer, h=1.0)
    _, (w, _) = loss.value_and_solutions(pred, costs, mask)
    np.testing.assert_array_equal(w, [[1, 0, 0], [0, 0, 1]])


def test_pg_nan_instance_only_and_shared_infinity():
    pred, costs = random_instances(5, (3, 5))
    pred = jnp.asarray(pred, jnp.float32).at[1, 2].set(jnp.nan)
    loss = pl.PerturbationGradientLoss(path_layer(), h=0.5)
    value = loss(pred, jnp.asarray(costs, jnp.float32))
    assert np.isnan(value[1]) and np.all(np.isfinite(value[jnp.array([0, 2])]))


def test_pg_bad_input():
    loss = pl.PerturbationGradientLoss(path_layer(), h=0.5)
    with pytest.raises(ValueError, match="costs_true"):
        loss(jnp.ones((2, 5)), jnp.ones((2, 4)))
    with pytest.raises(TypeError, match="pred"):
        loss(jnp.ones((2, 5), jnp.int32), jnp.ones((2, 5)))
    for h in (0.0, -1.0, float("nan"), float("inf"), True):
        with pytest.raises(ValueError, match="h must be"):
            pl.PerturbationGradientLoss(path_layer(), h=h)
    with pytest.raises(ValueError, match="variant"):
        pl.PerturbationGradientLoss(path_layer(), h=0.5, variant="forward")  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="objective"):
        pl.PerturbationGradientLoss(
            pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal()), h=0.5
        )
    with pytest.raises(TypeError, match="layer"):
        pl.PerturbationGradientLoss(three_paths, h=0.5)  # pyright: ignore[reportArgumentType]


def _pyepo_shortest_path():
    """PyEPO's 5×5 grid shortest path (Gurobi), as bench/pyepo_losses.py builds it,
    with our exact solver of the same problem as a minimising layer."""
    pytest.importorskip("pyepo")
    grb = pytest.importorskip("pyepo.model.grb")
    try:
        optmodel = grb.shortestPathModel(grid=(5, 5))
    except Exception as e:  # no Gurobi licence
        pytest.skip(f"PyEPO's Gurobi model is not usable: {e}")
    optmodel._model.Params.Threads = 1
    layer = pl.Perturbed(
        pl.solvers.pyepo_shortest_path,
        objective="min",
        event_ndim=1,
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
    )
    return optmodel, layer


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_pg_is_pyepos_on_the_shortest_path(variant):
    # PyEPO divides by h + 1e-8 and solves with Gurobi: values agree to float32
    # rounding (rtol 1e-5), gradients exactly where both solvers pick the same paths
    # (random real costs: no ties).
    pj = pytest.importorskip("pyepo.func.jax")
    optmodel, layer = _pyepo_shortest_path()
    rng = np.random.default_rng(6)
    pred = jnp.asarray(rng.uniform(0.5, 2.0, (16, 40)), jnp.float32)
    costs = jnp.asarray(rng.uniform(0.5, 2.0, (16, 40)), jnp.float32)
    for h in (0.3, 1.0):
        theirs_fn = pj.PG(
            optmodel, sigma=h, two_sides=variant == "central", reduction="none"
        )
        ours_fn = pl.PerturbationGradientLoss(layer, h=h, variant=variant)
        theirs, theirs_grad = jax.value_and_grad(
            lambda p: theirs_fn(p, costs).sum()  # noqa: B023
        )(pred)
        ours = ours_fn(pred, costs)
        ours_grad = jax.grad(lambda p: ours_fn(p, costs).sum())(pred)  # noqa: B023
        np.testing.assert_allclose(ours.sum(), theirs, rtol=1e-5)
        np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-5, atol=1e-6)
        assert float(jnp.abs(ours_grad).sum()) > 0
        per_instance = theirs_fn(pred, costs)
        np.testing.assert_allclose(ours, per_instance, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("variant", VARIANTS)
def test_pg_is_pyepos_on_the_knapsack(variant):
    # The maximising side: PyEPO's knapsack (Gurobi, modelSense maximise) against
    # pl.PerturbedKnapsack on the same weights and capacities.
    pj = pytest.importorskip("pyepo.func.jax")
    grb = pytest.importorskip("pyepo.model.grb")
    rng = np.random.default_rng(7)
    weights = rng.uniform(1.0, 3.0, (2, 10))
    capacity = np.array([8.0, 8.0])
    try:
        optmodel = grb.knapsackModel(weights, capacity)
    except Exception as e:
        pytest.skip(f"PyEPO's Gurobi model is not usable: {e}")
    optmodel._model.Params.Threads = 1
    layer = pl.PerturbedKnapsack(
        weights=jnp.asarray(weights, jnp.float32),
        capacity=jnp.asarray(capacity, jnp.float32),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
    )
    pred = jnp.asarray(rng.uniform(1.0, 5.0, (8, 10)), jnp.float32)
    values = jnp.asarray(rng.uniform(1.0, 5.0, (8, 10)), jnp.float32)
    h = 0.5
    theirs_fn = pj.PG(
        optmodel, sigma=h, two_sides=variant == "central", reduction="none"
    )
    ours_fn = pl.PerturbationGradientLoss(layer, h=h, variant=variant)
    theirs = theirs_fn(pred, values)
    theirs_grad = jax.grad(lambda p: theirs_fn(p, values).sum())(pred)
    ours = ours_fn(pred, values)
    ours_grad = jax.grad(lambda p: ours_fn(p, values).sum())(pred)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours_grad, theirs_grad, rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(ours_grad).sum()) > 0
