"""Build an experiment from a validated config: data, model, layer, loss, optimiser."""

import dataclasses
from typing import Any

import equinox as eqx
import jax
import optax
from jaxtyping import PRNGKeyArray

import perturbed_layers as pl

from ._config import Config, ConfigError
from ._parallel import SAMPLES
from ._tasks import AbstractStatefulLoss, Dataset, Loss


@dataclasses.dataclass
class Experiment:
    """Everything a config builds: data, model, layer, loss, optimiser, key, and
    the loss's state.

    `key` is the training key (noise and nothing else); the model was initialised
    from its sibling, both split from `training.seed`. `loss_state` is the state of
    an `AbstractStatefulLoss` before the first step (a solution pool seeded with the
    training set's target solutions, AI-MLE's initial step), `None` for every other
    loss.
    """

    dataset: Dataset
    model: Any
    layer: pl.AbstractPerturbed
    loss: Loss
    optimizer: optax.GradientTransformation
    opt_state: Any
    key: PRNGKeyArray
    loss_state: Any = None


# An optax transformation is a pair of closures, a static part of the compiled step:
# building a new one for each run of a comparison (or a test) would compile the step
# again each time. Equal options give the same object.
_OPTIMIZERS: dict[tuple[str, str, int], optax.GradientTransformation] = {}


def _optimizer(options: Any, total_steps: int) -> optax.GradientTransformation:
    key = (type(options).__qualname__, options.model_dump_json(), total_steps)
    if key not in _OPTIMIZERS:
        _OPTIMIZERS[key] = options.build(total_steps)
    return _OPTIMIZERS[key]


def build(config: Config, source: str = "<config>") -> Experiment:
    """Generate or load the data, then build the model, layer, loss and optimiser.

    **Raises:** `ConfigError`, naming `source` and the group, if a group's options do
    not fit the data (e.g. a conv net on feature vectors, a batch larger than the
    training set, a missing data file).
    """
    try:
        dataset = config.data.build()
    except (OSError, ValueError) as error:
        raise ConfigError(f"{source}: data: {error}") from None
    model_key, key = jax.random.split(jax.random.key(config.training.seed))
    in_shape, out_shape = dataset.train.x.shape[1:], dataset.train.y.shape[1:]
    try:
        model = config.model.build(in_shape, out_shape, key=model_key)
    except ValueError as error:
        raise ConfigError(f"{source}: model.name: {error}") from None
    try:
        sample_axis = SAMPLES if config.mesh.samples > 1 else None
        layer = config.layer.build(dataset.task, sample_axis=sample_axis)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: layer: {error}") from None
    n_train = int(dataset.train.x.shape[0])
    if config.training.batch_size > n_train:
        raise ConfigError(
            f"{source}: training.batch_size: {config.training.batch_size} is larger "
            f"than the training set ({n_train})"
        )
    steps = config.training.epochs * (n_train // config.training.batch_size)
    optimizer = _optimizer(config.optimizer, steps)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    try:
        loss = config.loss.build(layer, dataset.task)
    except (TypeError, ValueError) as error:
        raise ConfigError(f"{source}: loss: {error}") from None
    loss_state = (
        loss.initial_state(dataset.train)
        if isinstance(loss, AbstractStatefulLoss)
        else None
    )
    return Experiment(
        dataset, model, layer, loss, optimizer, opt_state, key, loss_state
    )
