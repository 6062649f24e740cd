"""Test metrics: the model's θ, the exact solver's solution, the task's metrics.

The solver is the perturbed layer in inference mode (`eqx.nn.inference_mode`): no noise,
no key, the exact y*(θ). The test set is processed in chunks of one fixed size (the last
one padded, the padding dropped), so each function compiles once per run; the trivial
predictor goes through the same compiled scoring function.
"""

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

import perturbed_layers as pl

from ._tasks import AbstractTask, Batch


@eqx.filter_jit
def predict(model: Any, x: Array) -> Array:
    """θ for a batch of inputs."""
    return jax.vmap(model)(x)


@eqx.filter_jit
def score(
    solver: pl.AbstractPerturbed, task: AbstractTask, theta: Array, batch: Batch
) -> tuple[Array, dict[str, Array]]:
    """The exact solutions for θ and the task's per-instance metrics."""
    y_pred = solver(theta)
    return y_pred, task.metrics(theta, y_pred, batch)


def _chunks(split: Batch, size: int):
    n = int(split.x.shape[0])
    size = min(size, n)
    for start in range(0, n, size):
        index = np.minimum(np.arange(start, start + size), n - 1)
        yield jax.tree.map(lambda a: a[index], split), min(size, n - start)


def evaluate_split(
    model: Any,
    solver: pl.AbstractPerturbed,
    task: AbstractTask,
    split: Batch,
    chunk_size: int,
    constant_theta: np.ndarray | None = None,
    max_chunks: int | None = None,
) -> tuple[dict[str, float], tuple[np.ndarray, np.ndarray]]:
    """Summarised metrics over `split`, and θ and y_pred of its first chunk.

    With `constant_theta`, the model is replaced by that constant prediction (the
    trivial predictor); with `max_chunks`, only the first chunks are evaluated.
    """
    per_instance: dict[str, list[np.ndarray]] = {}
    first: tuple[np.ndarray, np.ndarray] | None = None
    for count, (part, keep) in enumerate(_chunks(split, chunk_size)):
        if max_chunks is not None and count >= max_chunks:
            break
        if constant_theta is None:
            theta = predict(model, part.x)
        else:
            theta = jnp.broadcast_to(constant_theta, part.y.shape).astype(
                part.costs.dtype
            )
        y_pred, metrics = score(solver, task, theta, part)
        for name, values in metrics.items():
            per_instance.setdefault(name, []).append(np.asarray(values)[:keep])
        if first is None:
            first = (np.asarray(theta)[:keep], np.asarray(y_pred)[:keep])
    assert first is not None
    summary = task.summarise({k: np.concatenate(v) for k, v in per_instance.items()})
    return summary, first
