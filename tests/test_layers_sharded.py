"""The assignment, knapsack, spanning-tree and LP layers on a batch sharded over four
forced CPU devices: the same forward and Fenchel–Young gradient as on one device,
with problem data per instance (args) sharded with the batch."""

import os
import subprocess
import sys
import textwrap

import pytest

SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import perturbed_layers as pl

    assert jax.device_count() == 4
    B, key = 8, jax.random.key(0)
    normal = dict(num_samples=8, sigma=0.5, noise=pl.Normal())
    k1, k2, k3 = jax.random.split(jax.random.key(1), 3)
    weights = jnp.round(jax.random.uniform(k1, (2, 10), minval=3, maxval=8), 2)
    a_ub = jax.random.uniform(k2, (3, 4), minval=0.5, maxval=2.0)
    cases = {
        "assignment": (
            pl.PerturbedAssignment(**normal),
            jax.random.normal(k3, (B, 5, 5)),
            None,
        ),
        "knapsack": (
            pl.PerturbedKnapsack(weights=weights, **normal),
            jnp.ceil(5 * jax.random.uniform(k3, (B, 10))),
            {"capacity": jnp.linspace(10.0, 25.0, 2 * B).reshape(B, 2)},
        ),
        "spanning_tree": (
            pl.PerturbedSpanningTree(**normal),
            jax.random.normal(k3, (B, 10)),
            {"edges": jnp.ones((B, 10), bool).at[::2, 3].set(False)},
        ),
        "linear_program": (
            pl.PerturbedLinearProgram(A_ub=a_ub, **normal),
            -jax.random.uniform(k3, (B, 4), minval=0.5, maxval=2.0),
            {"b_ub": jnp.linspace(1.0, 6.0, 3 * B).reshape(B, 3)},
        ),
    }
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    for name, (layer, theta, args) in cases.items():
        y_true = jax.tree.map(lambda x: x.round(), layer(theta[::-1], args, key=key))
        loss = pl.FenchelYoungLoss(layer)

        def f(t, a, layer=layer, loss=loss, y_true=y_true):
            g = jax.grad(lambda u: loss(u, y_true, a, key=key).sum())(t)
            return layer(t, a, key=key), g

        single = jax.jit(f)(theta, args)
        with jax.set_mesh(mesh):
            shard = NamedSharding(mesh, P("data"))
            many = jax.jit(f)(jax.device_put(theta, shard), jax.device_put(args, shard))
            assert many[0].sharding.spec[0] == "data", (name, many[0].sharding)
        for s, m in zip(single, many):
            np.testing.assert_allclose(np.asarray(m), np.asarray(s), atol=1e-5)
        assert float(jnp.max(jnp.abs(single[1]))) > 0, name
        print(name, "ok")
    print("all ok")
    """
)


@pytest.mark.slow
def test_four_layers_on_a_batch_sharded_over_four_devices():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    result = subprocess.run(
        [sys.executable, "-c", SHARDED],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("all ok"), result.stdout
