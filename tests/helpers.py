"""Closed-form oracles and the configured layers the tests parametrise over."""

import importlib.util
import itertools
import math
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import perturbed_layers as pl

EULER_GAMMA = 0.5772156649015329

# The TensorFlow README's two rows (Gumbel, sigma = 0.5) and their softmax(theta/sigma).
TF_THETA = np.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])
TF_SOFTMAX = np.array(
    [
        [0.00549, 0.81522, 0.01222, 0.16459, 0.00247],
        [0.00668, 0.16386, 0.01486, 0.81160, 0.00300],
    ]
)


def softmax_jacobian(theta, sigma):
    """Jacobian of softmax(theta/sigma) per row: (diag s - s s^T) / sigma."""
    s = jax.nn.softmax(theta / sigma, axis=-1)
    eye = jnp.eye(theta.shape[-1])
    return (s[..., :, None] * eye - s[..., :, None] * s[..., None, :]) / sigma


def gumbel_max_value(theta, sigma):
    """F_eps(theta) = E[max(theta + sigma Z)] = sigma logsumexp(theta/sigma) + sigma gamma."""
    return sigma * jax.nn.logsumexp(theta / sigma, axis=-1) + sigma * EULER_GAMMA


def normal_cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def plackett_luce_topk_marginals(weights, k):
    """P(i in top-k) when drawing k items without replacement with prob. ∝ weights."""
    n = len(weights)
    marg = np.zeros(n)
    for seq in itertools.permutations(range(n), k):
        p, left = 1.0, 1.0
        for i in seq:
            p *= weights[i] / left
            left -= weights[i]
        for i in seq:
            marg[i] += p
    return marg


def rel_error(estimate, exact):
    return float(jnp.linalg.norm(estimate - exact) / jnp.linalg.norm(exact))


# Layers of the three core families, configured alike, for parametrised tests.
def core_layers(num_samples=1000, sigma=0.5, **kwargs):
    return [
        pl.PerturbedArgmax(
            num_samples=num_samples, sigma=sigma, noise=pl.Gumbel(), **kwargs
        ),
        pl.PerturbedRanking(
            num_samples=num_samples, sigma=sigma, noise=pl.Normal(), **kwargs
        ),
        pl.PerturbedTopK(
            2, num_samples=num_samples, sigma=sigma, noise=pl.Gumbel(), **kwargs
        ),
    ]


EXAMPLES = pathlib.Path(__file__).resolve().parent.parent / "examples"


def load_example(name: str) -> Any:
    """Import `examples/<name>.py` as a module."""
    spec = importlib.util.spec_from_file_location(
        f"examples_{name}", EXAMPLES / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_example(name: str, tmp_path_factory: Any) -> dict[str, Any]:
    """Run `examples/<name>.py`'s `main` with its figure in a fresh folder."""
    out = tmp_path_factory.mktemp(name)
    result = load_example(name).main(["--out", str(out)])
    figure = pathlib.Path(result["figure"])
    assert figure.parent == out
    # A PNG that was really drawn: the signature, and more than a blank canvas.
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert figure.stat().st_size > 20_000
    return result


# A 3-path shortest path written out, for the losses' closed-form tests: three s-t
# paths over five arcs, s→a→t (arcs 0, 1), s→b→t (arcs 2, 3), s→t (arc 4).
PATHS = np.array([[1, 1, 0, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]], np.float64)


def three_paths(costs):
    """The cheapest of the three paths, as its arc indicator."""
    paths = jnp.asarray(PATHS, costs.dtype)
    return paths[jnp.argmin(paths @ costs)]


def path_layer(fn=three_paths, **kwargs):
    """`fn` (the 3-path solver) as a minimising layer, one sample, σ = 1, Normal."""
    options = {"num_samples": 1, "sigma": 1.0, "noise": pl.Normal(), **kwargs}
    return pl.Perturbed(fn, objective="min", **options)


def argmax_layer():
    return pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())


def one_hot_argmin(costs):
    """The cheapest item, one-hot."""
    return jax.nn.one_hot(jnp.argmin(costs), costs.shape[-1])


def argmin_layer():
    """`one_hot_argmin` as a minimising layer (`path_layer`'s settings)."""
    return path_layer(one_hot_argmin)
