"""Every decision-focused loss inside one jit-compiled training step (model, loss,
gradient, optax update): on a 3-path shortest path with linear costs, 60 steps of
each lower the test regret of a linear model well below its starting value."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import perturbed_layers as pl

PATHS = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], np.float32)


def three_paths(costs):
    paths = jnp.asarray(PATHS, costs.dtype)
    return paths[jnp.argmin(paths @ costs)]


def data(seed, n=256):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    weights = np.random.default_rng(0).normal(size=(3, 5)).astype(np.float32)
    costs = np.exp(0.5 * x @ weights) * rng.uniform(0.8, 1.2, (n, 5))
    return jnp.asarray(x), jnp.asarray(costs, jnp.float32)


def regret(pred, costs):
    w = jnp.asarray(PATHS)[jnp.argmin(pred @ PATHS.T, axis=-1)]
    best = jnp.min(costs @ PATHS.T, axis=-1)
    return float(jnp.sum(jnp.sum(costs * w, -1) - best) / jnp.sum(best))


def solver(**kwargs):
    options = {"num_samples": 1, "sigma": 1.0, "noise": pl.Normal(), **kwargs}
    return pl.Perturbed(three_paths, objective="min", **options)


def losses():
    perturbed = solver(num_samples=8, sigma=0.5)
    spo = pl.SPOPlusLoss(solver())
    regret_loss = pl.RegretLoss(perturbed)
    dbb = pl.RegretLoss(pl.BlackboxDifferentiation(solver(), lambd=5.0))
    nid = pl.RegretLoss(pl.NegativeIdentity(solver()))
    imle = pl.RegretLoss(
        pl.IMLE(solver(), lambd=5.0, noise=pl.SumOfGamma(1, tau=0.3), num_samples=4)
    )
    ssvm = pl.StructuredSVMLoss(solver(), margin=0.1)
    fy = pl.FenchelYoungLoss(perturbed)
    return {
        "spo_plus": lambda p, c, y, k: spo(p, c, y_true=y),
        "regret": lambda p, c, y, k: regret_loss(p, c, y_true=y, key=k),
        "dbb": lambda p, c, y, k: dbb(p, c, y_true=y),
        "nid": lambda p, c, y, k: nid(p, c, y_true=y),
        "imle": lambda p, c, y, k: imle(p, c, y_true=y, key=k),
        "ssvm": lambda p, c, y, k: ssvm(p, y),
        "fenchel_young": lambda p, c, y, k: fy(p, y, key=k),
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", list(losses()))
def test_each_loss_trains_in_one_jit_step(name):
    loss_fn = losses()[name]
    x, costs = data(1)
    x_test, costs_test = data(2)
    y = jax.vmap(three_paths)(costs)
    model = eqx.nn.Linear(3, 5, key=jax.random.key(0))
    optimizer = optax.adam(0.05)
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, key, xb, cb, yb):
        def objective(m):
            return jnp.mean(loss_fn(jax.vmap(m)(xb), cb, yb, key))

        value, grads = eqx.filter_value_and_grad(objective)(model)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(model, updates), state, value

    before = regret(jax.vmap(model)(x_test), costs_test)
    for i in range(60):
        batch = slice((i % 8) * 32, (i % 8 + 1) * 32)
        model, state, value = step(
            model, state, jax.random.key(i), x[batch], costs[batch], y[batch]
        )
        assert np.isfinite(float(value))
    after = regret(jax.vmap(model)(x_test), costs_test)
    assert before > 0.05  # the untrained model decides badly
    assert after < 0.5 * before, (name, before, after)
