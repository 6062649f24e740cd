"""What a dataset hands to the training loop: arrays on the device, a task, and the
two kinds of training loss (with and without a solution pool).

A *task* knows the structure being predicted: which perturbed layers fit it, how to
score a prediction (per-instance metrics, computed under `jit`, then summarised on the
host), what the trivial predictor is, and how to draw a few test instances.
"""

import abc
from typing import Any, ClassVar, NamedTuple, TypeAlias

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

import perturbed_layers as pl


class Batch(NamedTuple):
    """Inputs, target solutions and true costs of some instances (leading axis N).

    - `x`: the model's inputs.
    - `y`: the target solutions y (what the Fenchel–Young loss compares y_ε(θ) to).
    - `costs`: the true costs (minimisation) or scores (maximisation) whose optimum is
        `y`; used by the metrics, and as the target of the `regression` loss.
    """

    x: Array
    y: Array
    costs: Array


class Dataset(NamedTuple):
    """A train and a test split on the device, the task, and a one-line description."""

    train: Batch
    test: Batch
    task: "AbstractTask"
    description: str


class AbstractTask(eqx.Module):
    """How to evaluate, baseline and draw one kind of structured prediction."""

    # Metric shown in the progress bar and the curves, and whether higher is better.
    headline: ClassVar[str]
    higher_is_better: ClassVar[bool]
    # The names of the layers (in the layer registry) that fit this task.
    layers: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def metrics(self, theta: Array, y_pred: Array, batch: Batch) -> dict[str, Array]:
        """Per-instance quantities (arrays of shape (N,)), traced under `jit`.

        `theta` is the model's output and `y_pred` the exact solver's solution for it.
        """

    @abc.abstractmethod
    def summarise(self, per_instance: dict[str, np.ndarray]) -> dict[str, float]:
        """The test metrics, from the per-instance quantities of the whole test set."""

    @abc.abstractmethod
    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        """The trivial predictor's output (the same for every input), and its name."""

    @abc.abstractmethod
    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        """Draw a few test instances (inputs, true and predicted solutions) on `fig`."""


class AbstractLoss(eqx.Module):
    """A training loss: per-instance values for a batch of predictions θ."""

    @abc.abstractmethod
    def __call__(
        self, theta: Float[Array, "B ..."], batch: Batch, *, key: PRNGKeyArray
    ) -> Float[Array, " B"]:
        """The loss of each instance of the batch."""


class AbstractPoolLoss(eqx.Module):
    """A training loss over a `pl.SolutionPool` that the training state carries (NCE,
    CMAP, learning to rank): each step refreshes the pool and returns the new one.

    The pool is state, not a field: the loss is a static part of the compiled step,
    while the pool changes every step, is saved in checkpoints and restored on
    resume. Losses without a pool (`AbstractLoss`) run with `None` in its place.
    """

    @abc.abstractmethod
    def value_and_pool(
        self,
        theta: Float[Array, "B ..."],
        batch: Batch,
        pool: pl.SolutionPool,
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, " B"], pl.SolutionPool]:
        """The loss of each instance on the refreshed pool, and that pool."""

    @abc.abstractmethod
    def initial_pool(self, train: Batch) -> pl.SolutionPool:
        """The pool before the first step, from the training set."""


Loss: TypeAlias = AbstractLoss | AbstractPoolLoss
