"""The engine's contracts: batching, chunking, dtypes, transformations, inference mode,
static configuration and second derivatives."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import TF_THETA, core_layers, rel_error, softmax_jacobian

import perturbed_layers as pl


def _vjp_row0_error(batch, keys, sigma=0.5, num_samples=200):
    """Mean relative error of row 0's VJP against the exact one, over keys."""
    layer = pl.PerturbedArgmax(num_samples=num_samples, sigma=sigma, noise=pl.Gumbel())
    v = jax.random.normal(jax.random.key(100), batch.shape)
    exact = jnp.einsum("i,ij->j", v[0], softmax_jacobian(batch[0], sigma))
    errors = []
    for key in keys:
        _, vjp = jax.vjp(lambda t, k=key: layer(t, key=k), batch)
        errors.append(rel_error(vjp(v)[0][0], exact))
    return float(np.mean(errors))


@pytest.mark.slow
def test_row_gradient_error_does_not_grow_with_batch():
    theta = jax.random.normal(jax.random.key(0), (64, 10))
    keys = [jax.random.key(i) for i in range(20)]
    alone = _vjp_row0_error(theta[:1], keys)
    among_64 = _vjp_row0_error(theta, keys)
    # Independent rows: the two are the same in distribution (ratio ~1 +- 0.15 over
    # 20 keys). A whole-batch estimator (optax) would be about sqrt(64) = 8x worse.
    assert among_64 < 1.3 * alone


@pytest.mark.slow
@pytest.mark.parametrize("index", range(3))
@pytest.mark.parametrize("chunk_size", [7, 500])
def test_chunked_equals_unchunked(index, chunk_size):
    # 103 samples: chunks of 7 leave a remainder of 5; 500 is one chunk.
    layer = core_layers(num_samples=103)[index]
    chunked = core_layers(num_samples=103, chunk_size=chunk_size)[index]
    theta = jax.random.normal(jax.random.key(1), (3, 7))
    v = jax.random.normal(jax.random.key(2), (3, 7))
    key = jax.random.key(3)

    def fwd_grad(m):
        return jax.value_and_grad(lambda t: jnp.sum(m(t, key=key) * v))(theta)

    (f0, g0), (f1, g1) = fwd_grad(layer), fwd_grad(chunked)
    np.testing.assert_allclose(f1, f0, rtol=1e-5, atol=1e-5)  # summation order only
    np.testing.assert_allclose(g1, g0, rtol=1e-4, atol=1e-4)
    y_true = layer.solve(theta[0])[None].repeat(3, axis=0)
    loss0 = jax.value_and_grad(
        lambda t: pl.FenchelYoungLoss(layer)(t, y_true, key=key).sum()
    )(theta)
    loss1 = jax.value_and_grad(
        lambda t: pl.FenchelYoungLoss(chunked)(t, y_true, key=key).sum()
    )(theta)
    np.testing.assert_allclose(loss1[0], loss0[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss1[1], loss0[1], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
@pytest.mark.parametrize(
    "layer", core_layers(num_samples=64), ids=lambda x: type(x).__name__
)
@pytest.mark.slow
def test_dtype_preserved(layer, dtype):
    theta = jax.random.normal(jax.random.key(4), (2, 5)).astype(dtype)
    key = jax.random.key(5)
    y = layer(theta, key=key)
    assert y.dtype == dtype
    grad = jax.grad(lambda t: layer(t, key=key).astype(jnp.float32).sum())(theta)
    assert grad.dtype == dtype
    loss = pl.FenchelYoungLoss(layer)(
        theta, layer.solve(theta[0])[None].repeat(2, 0), key=key
    )
    assert loss.dtype == dtype


@pytest.mark.parametrize(
    "layer", core_layers(num_samples=50)[::2], ids=lambda x: type(x).__name__
)
@pytest.mark.slow
def test_jit_vmap_grad_filter_jit_agree(layer):
    theta = jax.random.normal(jax.random.key(6), (4, 6))
    key = jax.random.key(7)
    eager = layer(theta, key=key)
    np.testing.assert_allclose(
        jax.jit(lambda t: layer(t, key=key))(theta), eager, atol=1e-6
    )
    np.testing.assert_allclose(
        eqx.filter_jit(lambda m, t, k: m(t, key=k))(layer, theta, key), eager, atol=1e-6
    )
    # vmap over rows with one key per row equals calling row by row.
    keys = jax.random.split(key, 4)
    mapped = jax.vmap(lambda t, k: layer(t, key=k))(theta, keys)
    rows = jnp.stack([layer(theta[i], key=keys[i]) for i in range(4)])
    np.testing.assert_allclose(mapped, rows, atol=1e-6)
    g_eager = jax.grad(lambda t: jnp.sum(layer(t, key=key) ** 2))(theta)
    g_jit = jax.jit(jax.grad(lambda t: jnp.sum(layer(t, key=key) ** 2)))(theta)
    np.testing.assert_allclose(g_jit, g_eager, atol=1e-5)


@pytest.mark.slow
def test_leading_batch_axes():
    layer = pl.PerturbedArgmax(num_samples=30, sigma=0.5, noise=pl.Gumbel())
    theta = jax.random.normal(jax.random.key(8), (2, 3, 5))
    y = layer(theta, key=jax.random.key(9))
    assert y.shape == (2, 3, 5)
    np.testing.assert_allclose(
        y.reshape(6, 5), layer(theta.reshape(6, 5), key=jax.random.key(9))
    )
    assert layer(theta[0, 0], key=jax.random.key(9)).shape == (5,)
    loss = pl.FenchelYoungLoss(layer)(
        theta, jnp.zeros_like(theta), key=jax.random.key(9)
    )
    assert loss.shape == (2, 3)
    assert (
        pl.FenchelYoungLoss(layer)(
            theta[0, 0], jnp.zeros(5), key=jax.random.key(9)
        ).shape
        == ()
    )


@pytest.mark.slow
def test_pytree_output():
    def solver(theta):
        i = jnp.argmax(theta)
        return {"one_hot": jax.nn.one_hot(i, theta.shape[-1]), "value": theta[i]}

    layer = pl.Perturbed(solver, num_samples=2000, sigma=0.5, noise=pl.Gumbel())
    theta = jnp.array([[0.1, 0.5, -0.3]])
    out = layer(theta, key=jax.random.key(10))
    assert out["one_hot"].shape == (1, 3) and out["value"].shape == (1,)
    np.testing.assert_allclose(out["one_hot"], jax.nn.softmax(theta / 0.5), atol=0.03)
    grad = jax.grad(lambda t: layer(t, key=jax.random.key(10))["value"].sum())(theta)
    # value = max(theta + sZ) - sZ_argmax...: its smoothing's gradient ~ softmax.
    assert grad.shape == theta.shape and bool(jnp.all(jnp.isfinite(grad)))


def test_inference_mode_returns_the_solver_without_key():
    layer = pl.PerturbedRanking(num_samples=10, sigma=0.5, noise=pl.Normal())
    theta = jnp.array([[0.3, -1.0, 2.0]])
    exact = eqx.nn.inference_mode(layer)(theta)
    np.testing.assert_array_equal(exact, [[1.0, 0.0, 2.0]])
    back = eqx.nn.inference_mode(eqx.nn.inference_mode(layer), value=False)
    with pytest.raises(RuntimeError, match="key"):
        back(theta)


def test_configuration_is_static():
    layer = pl.PerturbedArgmax(
        num_samples=10, sigma=0.25, noise=pl.Gumbel(), chunk_size=5
    )
    leaves = jax.tree.leaves(layer)
    assert leaves == [False]  # only the inference flag: no sigma for an optimiser
    assert eqx.filter(layer, eqx.is_array) is not None
    assert jax.tree.leaves(eqx.filter(layer, eqx.is_inexact_array)) == []


@pytest.mark.parametrize(
    "layer", core_layers(num_samples=20), ids=lambda x: type(x).__name__
)
@pytest.mark.slow
def test_second_derivative_is_refused_not_zero(layer):
    theta = jnp.array([0.3, -1.0, 2.0, 0.5])
    key = jax.random.key(11)
    with pytest.raises(NotImplementedError, match="second derivative"):
        jax.hessian(lambda t: jnp.sum(layer(t, key=key) ** 2))(theta)
    with pytest.raises(NotImplementedError, match="second derivative"):
        jax.grad(
            lambda t: jnp.sum(jax.grad(lambda u: jnp.sum(layer(u, key=key) ** 2))(t))
        )(theta)
    loss = pl.FenchelYoungLoss(layer)
    with pytest.raises(NotImplementedError, match="second derivative"):
        jax.hessian(lambda t: loss(t, layer.solve(theta), key=key))(theta)


@pytest.mark.slow
def test_optax_noise_objects_are_accepted():
    theta = jnp.array([[-0.6, 1.9, -0.2, 1.1, -1.0]])
    key = jax.random.key(12)
    ours = pl.PerturbedArgmax(num_samples=5000, sigma=0.5, noise=pl.Gumbel())
    theirs = pl.PerturbedArgmax(
        num_samples=5000, sigma=0.5, noise=optax.perturbations.Gumbel()
    )
    # Same samples, so the same forward pass.
    np.testing.assert_allclose(theirs(theta, key=key), ours(theta, key=key), atol=1e-6)
    jac = jax.jacrev(lambda t: theirs(t, key=key))(theta)[0, :, 0]
    assert rel_error(jac, softmax_jacobian(theta[0], 0.5)) < 0.15
    normal = pl.PerturbedRanking(
        num_samples=100, sigma=0.5, noise=optax.perturbations.Normal()
    )
    np.testing.assert_allclose(
        normal(theta, key=key),
        pl.PerturbedRanking(num_samples=100, sigma=0.5, noise=pl.Normal())(
            theta, key=key
        ),
        atol=1e-6,
    )


def test_noise_scores():
    z = jnp.linspace(-2.0, 3.0, 7)
    np.testing.assert_allclose(pl.Gumbel().score(z), 1 - jnp.exp(-z), rtol=1e-6)
    np.testing.assert_allclose(pl.Normal().score(z), z)
    for noise in (pl.Gumbel(), pl.Normal()):
        autodiff = -jax.grad(lambda t, n=noise: jnp.sum(n.log_prob(t)))(z)
        np.testing.assert_allclose(noise.score(z), autodiff, rtol=1e-6)
        # The shift-invariant score has mean zero along the instance.
        assert abs(float(jnp.sum(noise.centred_score(z)))) < 1e-5


@pytest.mark.parametrize("noise", [pl.Gumbel(), pl.Normal()], ids=["gumbel", "normal"])
@pytest.mark.parametrize("shape", [(4, 7), (3, 2, 5), (1, 1000)])
@pytest.mark.parametrize("centred", [False, True])
def test_sample_and_score_is_sample_then_score(noise, shape, centred, getkey):
    """The engine draws noise and its score together (`Gumbel` shares the log U of
    jax's own draw); they must be `sample`'s noise and `score`/`centred_score` of it."""
    key = getkey()
    z, score = noise.sample_and_score(key, shape, jnp.float32, centred=centred)
    expected = noise.sample(key, shape, jnp.float32)
    np.testing.assert_allclose(z, expected, rtol=1e-6, atol=1e-6)
    want = noise.centred_score(expected) if centred else noise.score(expected)
    np.testing.assert_allclose(score, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("noise", [pl.Gumbel(), pl.Normal()], ids=["gumbel", "normal"])
@pytest.mark.parametrize("centred", [False, True])
def test_score_moment_is_the_second_moment_of_the_score(noise, centred):
    """`score_moment` is what the control variate relies on: E[s sᵀ] = c·I, or
    c·(I − 11ᵀ/n) for the centred score."""
    n = 5
    _, s = noise.sample_and_score(
        jax.random.key(4), (400_000, n), jnp.float32, centred=centred
    )
    moment = np.asarray(s.T @ s / s.shape[0])
    c = noise.score_moment(n, centred=centred)
    want = c * (np.eye(n) - 1 / n if centred else np.eye(n))
    # Entries of s² have variance <= ~9 (Gumbel's 1 − e^{−Z}): standard error of the
    # mean <= 3/sqrt(400,000) = 0.005.
    np.testing.assert_allclose(moment, want, atol=0.025)


def _vjp_samples(layer, theta, v, keys):
    """The layer's VJP of v for each key, stacked: (len(keys), *theta.shape)."""

    def one(key):
        return jax.vjp(lambda t: layer(t, key=key), theta)[1](v)[0]

    return jax.jit(jax.vmap(one))(keys)


def test_control_variate_keeps_the_argmax_vjp_unbiased():
    # M = 4: a control-variate coefficient that used sample k's own output (no
    # leave-one-out) would bias each estimate by O(1/M); averaged over 40,000 keys the
    # estimate must match the exact softmax VJP to Monte-Carlo precision. (The
    # control variate is skipped for tiny problems by "auto", for speed: forced here.)
    theta = jnp.asarray(TF_THETA, jnp.float32)
    v = jax.random.normal(jax.random.key(5), theta.shape)
    exact = jnp.einsum("bi,bij->bj", v, softmax_jacobian(theta, 0.5))
    layer = pl.PerturbedArgmax(
        num_samples=4,
        sigma=0.5,
        noise=pl.Gumbel(),
        estimator=pl.Estimator(control_variate=True),
    )
    vjps = _vjp_samples(layer, theta, v, jax.random.split(jax.random.key(6), 40_000))
    mean, stderr = jnp.mean(vjps, axis=0), jnp.std(vjps, axis=0) / 200
    assert float(jnp.max(jnp.abs(mean - exact) / (stderr + 1e-3))) < 4.5


@pytest.mark.parametrize(
    "make, most",
    [
        (
            lambda noise, e: pl.PerturbedArgmax(
                num_samples=200, sigma=0.5, noise=noise, estimator=e
            ),
            0.95,
        ),
        (
            lambda noise, e: pl.PerturbedTopK(
                3, num_samples=200, sigma=0.5, noise=noise, estimator=e
            ),
            0.85,
        ),
        (
            lambda noise, e: pl.PerturbedRanking(
                num_samples=200, sigma=0.5, noise=noise, estimator=e
            ),
            0.6,
        ),
    ],
    ids=["argmax", "topk", "ranking"],
)
@pytest.mark.slow
@pytest.mark.parametrize("noise", [pl.Gumbel(), pl.Normal()], ids=["gumbel", "normal"])
def test_control_variate_reduces_the_vjp_variance(make, most, noise):
    """Same samples, same scores, with and without the control variate: the spread of
    the VJP over keys shrinks (variance ratios at these keys: 0.86/0.74 argmax with
    Gumbel/Normal noise, 0.72/0.59 top-k, 0.43/0.26 ranking)."""
    theta = jax.random.normal(jax.random.key(7), (16, 8))
    v = jax.random.normal(jax.random.key(8), theta.shape)
    keys = jax.random.split(jax.random.key(9), 64)
    with_cv, without = (
        _vjp_samples(make(noise, pl.Estimator(control_variate=cv)), theta, v, keys)
        for cv in (True, False)
    )
    pooled = (jnp.mean(with_cv, axis=0) + jnp.mean(without, axis=0)) / 2
    ratio = jnp.sum((with_cv - pooled) ** 2) / jnp.sum((without - pooled) ** 2)
    assert float(ratio) < most


@pytest.mark.slow
@pytest.mark.parametrize("index", range(3))
def test_blocked_draw_equals_one_draw(index):
    """Large draws go a block of samples at a time (`pl.Estimator(block_size=...)`);
    each sample keeps its own key, so the layer, its VJP and the loss are those of one
    draw."""
    layers = [
        core_layers(num_samples=12, estimator=pl.Estimator(block_size=size))[index]
        for size in (None, 4)
    ]
    layer = layers[0]
    theta = jax.random.normal(jax.random.key(10), (3, 7))
    v = jax.random.normal(jax.random.key(11), (3, 7))
    y_true = layer.solve(theta)
    key = jax.random.key(12)

    def run(layer):
        value, grad = jax.jit(
            jax.value_and_grad(lambda t: jnp.sum(layer(t, key=key) * v))
        )(theta)
        loss, loss_grad = jax.jit(
            jax.value_and_grad(
                lambda t: pl.FenchelYoungLoss(layer)(t, y_true, key=key).sum()
            )
        )(theta)
        return value, grad, loss, loss_grad

    want = run(layers[0])
    assert layers[1].estimator.resolve(layers[1], theta.shape).block == 4
    for got, expected in zip(run(layers[1]), want, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
