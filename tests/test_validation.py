"""Every bad argument gets a clear error that names it."""

import jax
import jax.numpy as jnp
import pytest

import perturbed_layers as pl

GOOD = dict(num_samples=10, sigma=0.5, noise=pl.Gumbel())


@pytest.mark.parametrize(
    "override, error, name",
    [
        (dict(num_samples=2.5), TypeError, "num_samples"),
        (dict(num_samples=0), ValueError, "num_samples"),
        (dict(num_samples=True), TypeError, "num_samples"),
        (dict(sigma=0.0), ValueError, "sigma"),
        (dict(sigma=-1.0), ValueError, "sigma"),
        (dict(sigma=float("inf")), ValueError, "sigma"),
        (dict(sigma=float("nan")), ValueError, "sigma"),
        (dict(sigma="0.5"), ValueError, "sigma"),
        (dict(noise=object()), TypeError, "noise"),
        (dict(noise=pl.Gumbel), TypeError, "noise"),
        (dict(noise="gumbel"), TypeError, "noise"),
        (dict(perturbation="mult"), ValueError, "perturbation"),
        (dict(perturbation="multiplicative"), ValueError, "pl.Normal"),
        (dict(chunk_size=0), ValueError, "chunk_size"),
        (dict(chunk_size=1.5), TypeError, "chunk_size"),
    ],
)
def test_constructor_errors_name_the_argument(override, error, name):
    with pytest.raises(error, match=name):
        pl.PerturbedArgmax(**{**GOOD, **override})


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        (dict(objective="maximise"), ValueError, "objective"),
        (dict(event_ndim=-1), ValueError, "event_ndim"),
        (dict(event_ndim=1.0), TypeError, "event_ndim"),
    ],
)
def test_generic_perturbed_errors(kwargs, error, name):
    with pytest.raises(error, match=name):
        pl.Perturbed(jnp.sort, **GOOD, **kwargs)
    with pytest.raises(TypeError, match="fn"):
        pl.Perturbed(3, **GOOD)


def test_topk_k_is_checked():
    with pytest.raises(ValueError, match="k must"):
        pl.PerturbedTopK(0, **GOOD)
    with pytest.raises(ValueError, match="k must"):
        pl.PerturbedTopK(4, **GOOD)(jnp.zeros(3), key=jax.random.key(0))


def test_call_errors():
    layer = pl.PerturbedArgmax(**GOOD)
    with pytest.raises(RuntimeError, match="key"):
        layer(jnp.zeros(3))
    with pytest.raises(TypeError, match="floating"):
        layer(jnp.arange(3), key=jax.random.key(0))
    with pytest.raises(ValueError, match="at least 1 axes"):
        layer(jnp.float32(1.0), key=jax.random.key(0))
    objective_needs_shape = pl.Perturbed(jnp.max, **GOOD, objective="max")
    with pytest.raises(ValueError, match="objective='max'"):
        objective_needs_shape(jnp.zeros(3), key=jax.random.key(0))


def test_loss_errors():
    loss = pl.FenchelYoungLoss(pl.PerturbedArgmax(**GOOD))
    with pytest.raises(
        ValueError, match=r"theta.shape=\(2, 3\).*y_true.shape=\(2, 4\)"
    ):
        loss(jnp.zeros((2, 3)), jnp.zeros((2, 4)), key=jax.random.key(0))
    with pytest.raises(RuntimeError, match="key"):
        loss(jnp.zeros(3), jnp.zeros(3))
    with pytest.raises(ValueError, match="objective"):
        pl.FenchelYoungLoss(pl.Perturbed(jnp.sort, **GOOD))
    with pytest.raises(TypeError, match="layer"):
        pl.FenchelYoungLoss(jnp.sort)


def test_multiplicative_rejects_zero_costs_gradient():
    layer = pl.Perturbed(
        lambda t: t,
        num_samples=10,
        sigma=0.5,
        noise=pl.Normal(),
        perturbation="multiplicative",
    )
    with pytest.raises(Exception, match="nonzero"):
        jax.grad(lambda t: layer(t, key=jax.random.key(0)).sum())(jnp.array([1.0, 0.0]))


def test_make_perturbed_fun_errors():
    with pytest.raises(TypeError, match="num_samples"):
        pl.make_perturbed_fun(jnp.max, num_samples=2.5)
    with pytest.raises(ValueError, match="sigma"):
        pl.make_perturbed_fun(jnp.max, sigma=-0.1)
    with pytest.raises(TypeError, match="noise"):
        pl.make_perturbed_fun(jnp.max, noise=object())
    with pytest.raises(ValueError, match="chunk_size"):
        pl.make_perturbed_fun(jnp.max, chunk_size=0)
