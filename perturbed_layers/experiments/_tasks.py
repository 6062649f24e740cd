"""What a dataset hands to the training loop: arrays on the device, a task, and the
two kinds of training loss (with and without a solution pool).

A *task* knows the structure being predicted: which perturbed layers fit it, how to
score a prediction (per-instance metrics, computed under `jit`, then summarised on the
host), what the trivial predictor is, and how to draw a few test instances.
"""

import abc
from typing import Any, ClassVar, NamedTuple, TypeAlias

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray


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


class AbstractRegretTask(AbstractTask):
    """A linear optimisation task scored by PyEPO's normalised regret: with c the true
    costs (or values), y* = `batch.y` optimal for them and ŷ the solution for the
    prediction, regret = ⟨c, ŷ⟩ − ⟨c, y*⟩ (minimised costs) or ⟨c, y*⟩ − ⟨c, ŷ⟩
    (maximised values), summed over the test set and divided by Σ|⟨c, y*⟩|
    (`pyepo.metric.regret`, which adds 1e-7 to the denominator)."""

    objective: ClassVar[str]  # "min" (costs) or "max" (values)
    headline: ClassVar[str] = "normalized_regret"
    higher_is_better: ClassVar[bool] = False

    def metrics(self, theta: Array, y_pred: Array, batch: Batch) -> dict[str, Array]:
        del theta
        sign = 1 if self.objective == "min" else -1
        optimum = jnp.sum(batch.costs * batch.y, axis=-1)
        regret = sign * (jnp.sum(batch.costs * y_pred, axis=-1) - optimum)
        return {
            "regret": regret,
            "abs_optimum": jnp.abs(optimum),
            "optimal": regret <= 1e-5 * jnp.abs(optimum),
        }

    def summarise(self, per_instance: dict[str, np.ndarray]) -> dict[str, float]:
        regret = per_instance["regret"].astype(np.float64)
        total = per_instance["abs_optimum"].astype(np.float64).sum()
        return {
            "normalized_regret": float(regret.sum() / (total + 1e-7)),
            "optimal_share": float(np.mean(per_instance["optimal"])),
        }


class AbstractLoss(eqx.Module):
    """A training loss: per-instance values for a batch of predictions θ."""

    @abc.abstractmethod
    def __call__(
        self, theta: Float[Array, "B ..."], batch: Batch, *, key: PRNGKeyArray
    ) -> Float[Array, " B"]:
        """The loss of each instance of the batch."""


class AbstractStatefulLoss(eqx.Module):
    """A training loss with state that the training state carries: a
    `pl.SolutionPool` (NCE, CMAP, learning to rank), AI-MLE's adapted step.

    The state is not a field: the loss is a static part of the compiled step, while
    the state changes every step, is carried by the step loop, saved in checkpoints
    and restored on resume. Losses without state (`AbstractLoss`) run with `None` in
    its place.
    """

    @abc.abstractmethod
    def value_and_state(
        self,
        theta: Float[Array, "B ..."],
        batch: Batch,
        state: Any,
        *,
        key: PRNGKeyArray,
    ) -> tuple[Float[Array, " B"], Any]:
        """The loss of each instance, and the new state (for a measuring loss: what
        `next_state` takes besides the measurement)."""

    @abc.abstractmethod
    def initial_state(self, train: Batch) -> Any:
        """The state before the first step, from the training set."""


class AbstractMeasuringLoss(AbstractStatefulLoss):
    """A stateful loss whose backward pass measures what updates its state (AI-MLE):
    the step differentiates the loss with respect to the state too, and hands that
    derivative to `next_state`."""

    @abc.abstractmethod
    def next_state(self, state: Any, measured: Any) -> Any:
        """The state for the next step, from the derivative with respect to it."""


Loss: TypeAlias = AbstractLoss | AbstractStatefulLoss
