"""PyEPO's knapsack benchmark: generator, capacities, split, task, metric.

The generator is PyEPO's `pyepo.data.knapsack.genData`, reproduced draw for draw: with
`rnd = np.random.RandomState(seed)`, the item weights W = rnd.choice(range(300, 800),
size=(d, m)) / 100 first (real, two decimals, shared by every instance), then
B = rnd.binomial(1, 0.5, (m, p)), then x = rnd.normal(0, 1, (n, p)), then
ε = rnd.uniform(1 − ē, 1 + ē, (n, m)), and the item values

    c = ⌈(((x Bᵀ)/√p + 3)^deg + 1) · 5 / 3.5^deg ⊙ ε⌉,   as float32

(integers). `genData` draws no capacity: PyEPO's model takes it
(`knapsackModel(weights, capacity)`), so it is the option `capacity`, one number for
every resource or one per resource; the default 20 is that of PyEPO's knapsack
tutorial (notebook "05 2D Knapsack Solution Visualization": `caps = [20] * dim`).

The problem **maximises** the total value: y*(c) = argmax ⟨c, y⟩ over y ∈ {0, 1}^m with
W y ≤ C, solved exactly by `pl.solvers.knapsack`; the model predicts values θ.

Metric: the normalised regret Σᵢ (z*(cᵢ) − ⟨cᵢ, y*(θᵢ)⟩) / Σᵢ |z*(cᵢ)| over the test set
(PyEPO's `pyepo.metric.regret` for a maximisation model), z*(c) = ⟨c, y*(c)⟩.

**References:** Tang & Khalil, *PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
Library*, Math. Prog. Comp. 2023.
"""

from typing import Any, ClassVar, Literal

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from pydantic import Field, model_validator

import perturbed_layers as pl

from ._options import (
    NonNegativeFloat,
    PerturbedLayerOptions,
    PositiveInt,
)
from ._pyepo import AbstractPyEPOData
from ._tasks import AbstractRegretTask, AbstractTask, Batch, Dataset


def pyepo_knapsack_data(
    num_data: int,
    num_features: int,
    num_items: int,
    dim: int = 1,
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 135,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PyEPO's `genData` for the knapsack: item weights, features and item values.

    **Arguments:** as PyEPO's (`num_data` n, `num_features` p, `num_items` m, `dim` d
    resources, `deg`, `noise_width` ē, `seed`), with PyEPO's defaults.

    **Returns:** `weights` of shape `(d, m)` (float64, two decimals in [3, 7.99]),
    `x` of shape `(n, p)` (float64) and the integer values `c` of shape `(n, m)`
    (float32), as PyEPO returns them.

    ```python
    from perturbed_layers.experiments import pyepo_knapsack_data

    weights, x, c = pyepo_knapsack_data(1100, 5, 16, dim=2, deg=6, noise_width=0.5)
    weights.shape, x.shape, c.shape  # (2, 16), (1100, 5), (1100, 16)
    ```
    """
    if isinstance(deg, bool) or not isinstance(deg, int) or deg <= 0:
        raise ValueError(f"deg must be a positive int, got {deg!r}")
    if not np.isfinite(noise_width) or noise_width < 0:
        raise ValueError(f"noise_width must be finite and >= 0, got {noise_width!r}")
    rnd = np.random.RandomState(seed)
    n, p, m, d = num_data, num_features, num_items, dim
    # `choice` over the 500 integers 300..799: one randint(0, 500) per weight.
    weights = rnd.choice(np.arange(300, 800), size=(d, m)) / 100
    b = rnd.binomial(1, 0.5, (m, p))
    x = rnd.normal(0, 1, (n, p))
    # The same float64 operations in the same order as PyEPO's, so that the ceiling
    # sees the same numbers.
    c = (x @ b.T / np.sqrt(p) + 3) ** deg + 1
    c *= 5
    c /= 3.5**deg
    c *= rnd.uniform(1 - noise_width, 1 + noise_width, (n, m))
    return weights, x, np.ceil(c).astype(np.float32)


class KnapsackTask(AbstractRegretTask):
    """0/1 knapsack with `d` resources shared by every instance; θ are predicted item
    values (maximised)."""

    weights: Float[Array, "d m"]
    capacity: Float[Array, " d"]

    objective: ClassVar[str] = "max"
    layers: ClassVar[tuple[str, ...]] = ("knapsack",)

    def solver(self, values: Float[Array, "*batch m"]) -> Float[Array, "*batch m"]:
        return pl.solvers.knapsack(values, self.weights, self.capacity)

    def linear_program(self) -> pl.PerturbedLinearProgram:
        """The LP relaxation's constraints (for losses that read constraints, CaVE):
        W y ≤ C, 0 ≤ y ≤ 1."""
        return pl.PerturbedLinearProgram(
            A_ub=self.weights,
            b_ub=self.capacity,
            upper=jnp.ones(self.weights.shape[-1], self.weights.dtype),
            num_samples=1,
            sigma=1.0,
            noise=pl.Normal(),
        )

    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        return np.asarray(jnp.mean(train.costs, axis=0)), "mean training item values"

    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        del theta
        values, y_true = np.asarray(test.costs), np.asarray(test.y)
        count = min(8, len(y_pred))
        items = np.arange(values.shape[-1])
        axes = fig.subplots(2, (count + 1) // 2, squeeze=False).ravel()
        for i, ax in enumerate(axes):
            if i >= count:
                ax.set_axis_off()
                continue
            ax.bar(items, values[i], color="0.8")
            chosen = y_true[i] > 0.5
            ax.bar(items[chosen], values[i][chosen], color="tab:green")
            picked = y_pred[i] > 0.5
            ax.bar(
                items[picked],
                values[i][picked],
                fill=False,
                edgecolor="tab:red",
                linestyle="--",
                linewidth=1.5,
            )
            regret = float(values[i] @ y_true[i] - values[i] @ y_pred[i])
            ax.set_title(f"test {i}: regret {regret:.0f}", fontsize=9)
            ax.set_xticks([])
        fig.suptitle(
            "Test instances: true item values, optimal selection (green), predicted "
            "selection (red dashed)"
        )


class PyEPOKnapsack(AbstractPyEPOData):
    """`data: {name: pyepo_knapsack, ...}`: PyEPO's generated knapsack instances.

    Defaults are those of PyEPO's notebook "05 2D Knapsack Solution Visualization":
    1100 points (100 to train, 1000 to test), 5 features, 16 items, 2 resources of
    capacity 20, degree 6, noise half-width 0.5, seed 135 (`genData`'s default), and
    the split `train_test_split(test_size=1000, random_state=246)`.
    """

    layers: ClassVar[tuple[str, ...]] = KnapsackTask.layers

    name: Literal["pyepo_knapsack"]
    num_data: PositiveInt = Field(1100, description="points generated (train + test)")
    num_features: PositiveInt = Field(5, description="p, features per point")
    num_items: PositiveInt = Field(16, description="m, items per instance")
    dim: PositiveInt = Field(2, description="d, resources (knapsack constraints)")
    deg: PositiveInt = Field(6, description="degree of the polynomial feature → value")
    noise_width: NonNegativeFloat = Field(
        0.5, description="ē, half-width of the multiplicative noise"
    )
    seed: int = Field(135, description="the generator's RandomState seed")
    capacity: NonNegativeFloat | list[NonNegativeFloat] = Field(
        20.0,
        description="capacity of every resource, or a list of one per resource "
        "(PyEPO's tutorial: 20 each)",
    )
    test_size: PositiveInt = Field(1000, description="points in the test set")
    split_seed: int = Field(246, description="train_test_split's random_state")

    @model_validator(mode="after")
    def _check_capacity(self) -> "PyEPOKnapsack":
        if isinstance(self.capacity, list) and len(self.capacity) != self.dim:
            raise ValueError(
                f"capacity lists one number per resource: {len(self.capacity)} given "
                f"for dim = {self.dim}"
            )
        return self

    def build(self) -> Dataset:
        weights, x, c = pyepo_knapsack_data(
            self.num_data,
            self.num_features,
            self.num_items,
            self.dim,
            self.deg,
            self.noise_width,
            self.seed,
        )
        train, test = self.split()
        capacity = np.broadcast_to(np.asarray(self.capacity, np.float64), (self.dim,))
        task = KnapsackTask(
            jnp.asarray(weights, jnp.float32), jnp.asarray(capacity, jnp.float32)
        )
        values = jnp.asarray(c)
        y = task.solver(values)  # exact optimal selections for the true values
        x = jnp.asarray(x, jnp.float32)

        def split(idx: np.ndarray) -> Batch:
            return Batch(x[idx], y[idx], values[idx])

        description = (
            f"PyEPO knapsack, {self.num_items} items, {self.dim} resource(s) of "
            f"capacity {self.capacity}: {len(train)} train / {len(test)} test, "
            f"p={self.num_features}, deg={self.deg}, noise half-width "
            f"{self.noise_width}, seed {self.seed}"
        )
        return Dataset(split(train), split(test), task, description)


class KnapsackLayer(PerturbedLayerOptions):
    """`layer: {name: knapsack, ...}`: `pl.PerturbedKnapsack` with the task's weights
    and capacities (item values in, 0/1 selection out, maximised)."""

    name: Literal["knapsack"]
    max_nodes: PositiveInt = Field(
        2**16, description="branch-and-bound nodes allowed per instance"
    )

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, KnapsackTask)
        return pl.PerturbedKnapsack(
            weights=task.weights,
            capacity=task.capacity,
            max_nodes=self.max_nodes,
            **self.common(sample_axis),
        )
