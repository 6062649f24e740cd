"""Problem data in the solver contract: per-instance `args` and shared array fields,
under jit, vmap, grad, filter_jit, chunking, host solvers and four forced devices."""

import os
import subprocess
import sys
import textwrap

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perturbed_layers as pl


def budgeted(theta, args):
    """Top-b indicator, b = args["budget"] (an int per instance): max ⟨y, θ⟩ over
    0/1 vectors with b ones."""
    ranks = pl.solvers.ranks(theta)
    return (ranks >= theta.shape[-1] - args["budget"]).astype(theta.dtype)


def budget_layer(**kwargs):
    return pl.Perturbed(
        budgeted,
        objective="max",
        shift_invariant=True,
        num_samples=kwargs.pop("num_samples", 200),
        sigma=0.5,
        noise=pl.Gumbel(),
        **kwargs,
    )


THETA = jax.random.normal(jax.random.key(0), (3, 6))
BUDGETS = jnp.array([1, 2, 3])
V = jax.random.normal(jax.random.key(1), (3, 6))
KEY = jax.random.key(2)


def top_k_rows(chunk_size=None):
    """Row b of PerturbedTopK(budget_b) on the same batch: the same noise as the
    budgeted layer's row b, hence the same forward, derivative and loss."""
    ys, grads, losses = [], [], []
    for b, k in enumerate(BUDGETS.tolist()):
        layer = pl.PerturbedTopK(
            k, num_samples=200, sigma=0.5, noise=pl.Gumbel(), chunk_size=chunk_size
        )
        y, vjp = jax.vjp(lambda t, layer=layer: layer(t, key=KEY), THETA)
        y_true = pl.solvers.top_k_mask(V, k)
        loss = pl.FenchelYoungLoss(layer)(THETA, y_true, key=KEY)
        ys.append(y[b])
        grads.append(vjp(V)[0][b])
        losses.append(loss[b])
    return jnp.stack(ys), jnp.stack(grads), jnp.stack(losses)


def y_true_rows():
    return jnp.stack(
        [pl.solvers.top_k_mask(V[b], k) for b, k in enumerate(BUDGETS.tolist())]
    )


@pytest.mark.slow
@pytest.mark.parametrize("chunk_size", [None, pytest.param(7, marks=pytest.mark.slow)])
def test_per_instance_args_give_each_instance_its_own_problem(chunk_size):
    layer = budget_layer(chunk_size=chunk_size)
    args = {"budget": BUDGETS}
    y, vjp = jax.vjp(lambda t: layer(t, args, key=KEY), THETA)
    loss = pl.FenchelYoungLoss(layer)(THETA, y_true_rows(), args, key=KEY)
    want_y, want_grad, want_loss = top_k_rows(chunk_size)
    np.testing.assert_allclose(y, want_y, atol=1e-6)
    np.testing.assert_allclose(jnp.sum(y, axis=1), BUDGETS, rtol=1e-6)
    np.testing.assert_allclose(vjp(V)[0], want_grad, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_args_under_jit_vmap_grad_filter_jit_and_unbatched():
    layer = budget_layer()
    args = {"budget": BUDGETS}
    want = layer(THETA, args, key=KEY)

    def f(t, a):
        return jnp.sum(layer(t, a, key=KEY) * V)

    grad = jax.grad(f)(THETA, args)
    np.testing.assert_allclose(
        jax.jit(lambda t, a: layer(t, a, key=KEY))(THETA, args), want, atol=1e-6
    )
    np.testing.assert_allclose(
        eqx.filter_jit(lambda m, t, a: m(t, a, key=KEY))(layer, THETA, args),
        want,
        atol=1e-6,
    )
    np.testing.assert_allclose(jax.jit(jax.grad(f))(THETA, args), grad, atol=1e-5)
    # vmap over a leading axis: each slice is a batch of one, with its own key.
    keys = jax.random.split(KEY, 3)
    mapped = jax.vmap(lambda t, a, k: layer(t, a, key=k))(THETA, args, keys)
    for b in range(3):
        one = layer(THETA[b], {"budget": BUDGETS[b]}, key=keys[b])  # unbatched
        assert one.shape == (6,)
        np.testing.assert_allclose(mapped[b], one, atol=1e-6)
        assert float(jnp.sum(one)) == pytest.approx(float(BUDGETS[b]))
    # Nothing flows into args (integers here; a float leaf gets a zero gradient).
    float_args = {"budget": BUDGETS, "unused": jnp.ones(3)}
    g_args = jax.grad(lambda a: jnp.sum(layer(THETA, a, key=KEY) * V), allow_int=True)(
        float_args
    )
    assert float(jnp.max(jnp.abs(g_args["unused"]))) == 0.0


def test_new_args_values_reuse_the_compiled_function():
    layer = budget_layer()
    traces = []

    @jax.jit
    def step(t, a):
        traces.append(1)
        loss = pl.FenchelYoungLoss(layer)
        return jax.value_and_grad(lambda u: loss(u, y_true_rows(), a, key=KEY).sum())(t)

    first = step(THETA, {"budget": BUDGETS})
    second = step(THETA, {"budget": jnp.array([3, 2, 1])})
    assert len(traces) == 1
    assert not np.allclose(first[1], second[1])


class SharedWeights(pl.AbstractPerturbed):
    """A knapsack-like toy with data shared by every instance as an array field:
    choose the items whose score per unit weight is positive. Its weights are an
    integer array, so no optimiser filtering with eqx.is_inexact_array trains them."""

    weights: jax.Array
    event_ndim = 1
    objective = None
    shift_invariant = False
    allows_inf = False

    def solve(self, theta, args=None):
        return (theta / self.weights > 0).astype(theta.dtype)


def test_shared_array_fields_are_traced_not_static_and_get_no_gradient():
    traces = []

    @eqx.filter_jit
    def run(layer, t):
        traces.append(1)
        return jax.grad(lambda u: jnp.sum(layer(u, key=KEY) * V))(t), layer(t, key=KEY)

    make = lambda w: SharedWeights(  # noqa: E731
        jnp.asarray(w), num_samples=100, sigma=0.5, noise=pl.Normal()
    )
    _, y1 = run(make([1, 1, 1, 1, 1, 1]), THETA)
    _, y2 = run(make([1, -1, 1, -1, 1, -1]), THETA)
    assert len(traces) == 1
    np.testing.assert_allclose(y2[:, 1::2], 1 - y1[:, 1::2], atol=1e-6)
    # A float field: traced too, and no derivative flows into it.
    layer = make(jnp.ones(6))
    grads = eqx.filter_grad(lambda m: jnp.sum(m(THETA, key=KEY) * V))(layer)
    assert float(jnp.max(jnp.abs(grads.weights))) == 0.0


def test_args_errors_name_the_argument():
    layer = budget_layer()
    with pytest.raises(ValueError, match="args"):
        layer(THETA, {"budget": jnp.array([1, 2])}, key=KEY)
    with pytest.raises(TypeError, match="takes no args"):
        pl.PerturbedArgmax(num_samples=4, sigma=1.0, noise=pl.Gumbel())(
            THETA, {"budget": BUDGETS}, key=KEY
        )
    with pytest.raises(TypeError, match="args must be a pytree of arrays"):
        layer(THETA, {"budget": "two"}, key=KEY)


_CALLS = []


def _host_budgeted(theta, args):
    _CALLS.append(theta.shape)
    order = np.argsort(np.argsort(theta, axis=1, kind="stable"), axis=1, kind="stable")
    return (order >= theta.shape[1] - args["budget"][:, None]).astype(theta.dtype)


def test_host_solver_gets_numpy_args_in_one_callback():
    solver = pl.host_solver(_host_budgeted, event_ndim=1)
    layer = pl.Perturbed(
        solver, objective="max", num_samples=50, sigma=0.5, noise=pl.Gumbel()
    )
    device = budget_layer(num_samples=50)
    _CALLS.clear()
    y = jax.jit(lambda t, a: layer(t, a, key=KEY))(THETA, {"budget": BUDGETS})
    assert _CALLS == [(150, 6)]  # all M×B instances in one call
    np.testing.assert_allclose(
        y, device(THETA, {"budget": BUDGETS}, key=KEY), atol=1e-6
    )


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import perturbed_layers as pl
    from test_problem_data import budget_layer, THETA, V, KEY

    assert jax.device_count() == 4
    theta = jnp.tile(THETA, (4, 1))
    args = {"budget": jnp.tile(jnp.array([1, 2, 3]), 4)}
    y_true = pl.solvers.top_k_mask(V, 2)
    y_true = jnp.tile(y_true, (4, 1))
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    out = {}
    for chunk in (None, 5):
        layer = budget_layer(chunk_size=chunk)
        loss = pl.FenchelYoungLoss(layer)

        def f(t, a):
            y = layer(t, a, key=KEY)
            g = jax.grad(lambda u: loss(u, y_true, a, key=KEY).sum())(t)
            return y, g

        single = jax.jit(f)(theta, args)
        with jax.set_mesh(mesh):
            shard = NamedSharding(mesh, P("data"))
            t = jax.device_put(theta, shard)
            a = jax.device_put(args, shard)
            many = jax.jit(f)(t, a)
            assert many[0].sharding.spec[0] == "data", many[0].sharding
        for s, m in zip(single, many):
            np.testing.assert_allclose(np.asarray(m), np.asarray(s), atol=1e-5)
    print("ok")
    """
)


@pytest.mark.slow
def test_args_on_a_batch_sharded_over_four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    here = os.path.dirname(__file__)
    env["PYTHONPATH"] = os.pathsep.join([here, env.get("PYTHONPATH", "")])
    result = subprocess.run(
        [sys.executable, "-c", SHARDED],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")
