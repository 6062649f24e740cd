"""Test metrics: the model's θ, the exact solver's solution, the task's metrics.

The solver is the perturbed layer in inference mode (`eqx.nn.inference_mode`): no noise,
no key, the exact y*(θ). The test set is processed in chunks of one fixed size (the last
one padded, the padding dropped), so each function compiles once per run; the trivial
predictor goes through the same compiled scoring function.
"""

import json
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

import perturbed_layers as pl

from . import _run_folder as files
from ._build import Experiment, build
from ._config import load_config
from ._plots import plot_examples
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
        index = np.minimum(
            np.arange(start, start + size), n - 1
        )  # pad: repeat the last
        yield Batch(*(a[index] for a in split)), min(size, n - start)


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
            theta = jnp.broadcast_to(constant_theta, part.y.shape)
            # On the device the model's θ is on (committed), so that `score`
            # compiles once for both.
            theta = jax.device_put(
                theta.astype(part.costs.dtype), jax.local_devices()[0]
            )
        y_pred, metrics = score(solver, task, theta, part)
        for name, values in metrics.items():
            per_instance.setdefault(name, []).append(np.asarray(values)[:keep])
        if first is None:
            first = (np.asarray(theta)[:keep], np.asarray(y_pred)[:keep])
    assert first is not None
    summary = task.summarise({k: np.concatenate(v) for k, v in per_instance.items()})
    return summary, first


def test_metrics(exp: Experiment, model: Any, chunk_size: int) -> dict[str, float]:
    """The model's test metrics, as `{"test_<metric>": value}`."""
    solver = eqx.nn.inference_mode(exp.layer)
    data = exp.dataset
    metrics, _ = evaluate_split(model, solver, data.task, data.test, chunk_size)
    return {f"test_{k}": v for k, v in metrics.items()}


def trivial_metrics(exp: Experiment, chunk_size: int) -> dict[str, Any]:
    """The trivial predictor's test metrics, and what it is (`"predictor"`)."""
    solver = eqx.nn.inference_mode(exp.layer)
    data = exp.dataset
    constant, predictor = data.task.trivial_theta(data.train)
    metrics, _ = evaluate_split(
        None, solver, data.task, data.test, chunk_size, constant
    )
    return {"predictor": predictor, **{f"test_{k}": v for k, v in metrics.items()}}


def plot_test_examples(
    exp: Experiment, model: Any, chunk_size: int, path: pathlib.Path
) -> None:
    """Draw the first test instances with their true and predicted solutions."""
    solver = eqx.nn.inference_mode(exp.layer)
    task, test = exp.dataset.task, exp.dataset.test
    # The first evaluation chunk: shapes already compiled.
    _, (theta, y_pred) = evaluate_split(
        model, solver, task, test, chunk_size, max_chunks=1
    )
    count = min(8, len(theta))
    shown = Batch(*(a[:count] for a in test))
    plot_examples(task, shown, theta[:count], y_pred[:count], path)


def format_metrics(record: dict[str, Any], headline: str) -> str:
    """`train loss …  <headline> …  <other metrics> …` for the log."""
    keys = [f"test_{headline}"] + [k for k in record if k.startswith("test_")]
    parts = [
        f"{k.removeprefix('test_')} {record[k]:.4f}"
        for k in dict.fromkeys(keys)
        if k in record
    ]
    if "train_loss" in record:
        parts.insert(0, f"train loss {record['train_loss']:.4f}")
    return "  ".join(parts)


def evaluate(
    run: str | pathlib.Path, *, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Re-evaluate a run folder's last checkpoint on its test set.

    Rebuilds the data from the saved `config.yaml`, loads `checkpoint.eqx`, writes
    `evaluation.json` and `examples.png`, and returns the metrics (with the trivial
    predictor's under `"trivial"`).
    """
    run = pathlib.Path(run)
    config = load_config(run / files.CONFIG)
    exp = build(config, str(run / files.CONFIG))
    model, _, epoch, *_ = files.load_checkpoint(
        run / files.CHECKPOINT, exp.model, exp.opt_state, exp.key, exp.loss_state
    )
    chunk = config.training.eval_batch_size
    result = {
        "epoch": epoch,
        **test_metrics(exp, model, chunk),
        "trivial": trivial_metrics(exp, chunk),
    }
    plot_test_examples(exp, model, chunk, run / files.EXAMPLES)
    files.write_text(run / "evaluation.json", json.dumps(result, indent=2) + "\n")
    log(f"{run} (epoch {epoch}): {format_metrics(result, exp.dataset.task.headline)}")
    return result
