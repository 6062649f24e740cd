"""Sharded inputs and sample parallelism on four forced CPU devices, in a subprocess
(the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
    import perturbed_layers as pl

    assert jax.device_count() == 4
    mesh = jax.make_mesh((2, 2), ("data", "samples"), axis_types=(AxisType.Auto,) * 2)
    theta = jax.random.normal(jax.random.key(0), (8, 6))
    v = jax.random.normal(jax.random.key(1), (8, 6))
    y_true = pl.solvers.argmax_one_hot(v)
    key = jax.random.key(2)

    def run(layer, t):
        loss = pl.FenchelYoungLoss(layer)
        def f(t, k):
            fwd, vjp = jax.value_and_grad(lambda u: jnp.sum(layer(u, key=k) * v))(t)
            val, grad = jax.value_and_grad(lambda u: loss(u, y_true, key=k).sum())(t)
            return fwd, vjp, val, grad
        return jax.jit(f)(t, key), jax.jit(f).lower(t, key).compile().as_text()

    kw = dict(num_samples=64, sigma=0.5, noise=pl.Gumbel())
    reference, _ = run(pl.PerturbedArgmax(**kw), theta)
    sharded_theta = jax.device_put(theta, NamedSharding(mesh, P("data")))
    cases = {
        "batch sharded": (pl.PerturbedArgmax(**kw), sharded_theta),
        "samples split": (pl.PerturbedArgmax(**kw, sample_axis="samples"), theta),
        "both, chunked": (
            pl.PerturbedArgmax(**kw, sample_axis="samples", chunk_size=16),
            sharded_theta,
        ),
    }
    with jax.set_mesh(mesh):
        for name, (layer, t) in cases.items():
            out, hlo = run(layer, t)
            for a, b in zip(out, reference):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
            if name == "batch sharded":
                assert "all-gather" not in hlo, name
                assert out[1].sharding.spec == P("data"), out[1].sharding
            else:
                assert "all-reduce" in hlo, name
            print(name, "ok")
    """
)


def test_sharded_equals_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count(" ok") == 3, result.stdout
