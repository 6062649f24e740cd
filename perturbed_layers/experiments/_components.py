"""Registries of perturbed layers, noises, losses and optimisers, with their options.

Losses are called per instance as `loss(theta, batch, *, key)`:

- `fenchel_young`: the perturbed Fenchel–Young loss of the layer, `pl.FenchelYoungLoss`
    (gradient y_ε(θ) − y for a maximising layer, y − y_ε(θ) for a minimising one).
- `squared`: ‖y_ε(θ) − y‖², the squared error of the perturbed layer's output (its
    gradient goes through the layer's Monte-Carlo Jacobian).
- `regression`: ‖θ − t‖², no layer; `target: costs` fits the true costs (the
    "two-stage" or least-squares baseline of predict-then-optimise), `target:
    solution` fits the target solution itself (e.g. the ranks).
"""

import functools
from typing import ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array
from pydantic import Field, field_validator, model_validator

import perturbed_layers as pl

from ._options import (
    FiniteFloat,
    LayerOptions,
    LossOptions,
    OptimizerOptions,
    PositiveFloat,
    PositiveInt,
    describe,
)
from ._pyepo import PyEPOTask
from ._tasks import AbstractLoss, AbstractTask
from ._warcraft import WarcraftTask

NOISES: dict[str, type[pl.AbstractNoise]] = {"normal": pl.Normal, "gumbel": pl.Gumbel}


# ---------------------------------------------------------------------- layers


class _PerturbedOptions(LayerOptions):
    """Options shared by every perturbed layer (those of `pl.Perturbed`)."""

    num_samples: PositiveInt
    sigma: PositiveFloat
    noise: str = "normal"
    perturbation: Literal["additive", "multiplicative"] = "additive"
    chunk_size: PositiveInt | None = None

    @field_validator("noise")
    @classmethod
    def _known_noise(cls, value: str) -> str:
        if value not in NOISES:
            raise ValueError(
                f"unknown noise {value!r}; valid names: {describe(NOISES)}"
            )
        return value

    @model_validator(mode="after")
    def _multiplicative_is_normal(self) -> "_PerturbedOptions":
        if self.perturbation == "multiplicative" and self.noise != "normal":
            raise ValueError(
                "perturbation 'multiplicative' uses θ ⊙ exp(σZ − σ²/2) with standard "
                f"normal Z: set noise: normal (got {self.noise!r})"
            )
        return self

    def common(self) -> dict:
        return dict(
            num_samples=self.num_samples,
            sigma=self.sigma,
            noise=NOISES[self.noise](),
            perturbation=self.perturbation,
            chunk_size=self.chunk_size,
        )


class PyEPOLayer(_PerturbedOptions):
    """`layer: {name: pyepo_shortest_path, ...}`: perturbed shortest path on PyEPO's
    grid (arc costs in, arc indicator out, minimised)."""

    name: Literal["pyepo_shortest_path"]

    def build(self, task: AbstractTask) -> pl.AbstractPerturbed:
        assert isinstance(task, PyEPOTask)
        return pl.Perturbed(
            functools.partial(pl.solvers.pyepo_shortest_path, m=task.grid),
            objective="min",
            event_ndim=1,
            # Every source-sink path has 2(m - 1) arcs, so adding a constant to all
            # arc costs never changes the solution.
            shift_invariant=True,
            **self.common(),
        )


class GridShortestPathLayer(_PerturbedOptions):
    """`layer: {name: grid_shortest_path, ...}`: `pl.PerturbedShortestPath` on vertex
    costs (they must stay positive: use `perturbation: multiplicative`, or a small
    sigma against costs kept away from 0)."""

    name: Literal["grid_shortest_path"]
    connectivity: Literal[4, 8] = 8

    def build(self, task: AbstractTask) -> pl.AbstractPerturbed:
        assert isinstance(task, WarcraftTask)
        return pl.PerturbedShortestPath(connectivity=self.connectivity, **self.common())


class RankingLayer(_PerturbedOptions):
    """`layer: {name: ranking, ...}`: `pl.PerturbedRanking` (ranks, maximised)."""

    name: Literal["ranking"]

    def build(self, task: AbstractTask) -> pl.AbstractPerturbed:
        del task
        return pl.PerturbedRanking(**self.common())


LAYERS: dict[str, type[LayerOptions]] = {
    "pyepo_shortest_path": PyEPOLayer,
    "grid_shortest_path": GridShortestPathLayer,
    "ranking": RankingLayer,
}


# ---------------------------------------------------------------------- losses


def _per_instance(x: Array) -> Array:
    return jnp.sum(x, axis=tuple(range(1, x.ndim)))


class FenchelYoung(AbstractLoss):
    loss: pl.FenchelYoungLoss

    def __call__(self, theta, batch, *, key):
        return self.loss(theta, batch.y.astype(theta.dtype), key=key)


class SquaredThroughLayer(AbstractLoss):
    layer: pl.AbstractPerturbed

    def __call__(self, theta, batch, *, key):
        return _per_instance((self.layer(theta, key=key) - batch.y) ** 2)


class Regression(AbstractLoss):
    target: Literal["costs", "solution"] = eqx.field(static=True)

    def __call__(self, theta, batch, *, key):
        del key
        target = batch.costs if self.target == "costs" else batch.y
        return _per_instance((theta - target) ** 2)


class FenchelYoungOptions(LossOptions):
    """`loss: {name: fenchel_young}`."""

    name: Literal["fenchel_young"]

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return FenchelYoung(pl.FenchelYoungLoss(layer))


class SquaredOptions(LossOptions):
    """`loss: {name: squared}`: ‖y_ε(θ) − y‖² through the perturbed layer."""

    name: Literal["squared"]

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return SquaredThroughLayer(layer)


class RegressionOptions(LossOptions):
    """`loss: {name: regression, target: costs | solution}`: ‖θ − target‖²."""

    name: Literal["regression"]
    target: Literal["costs", "solution"] = "costs"

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        del layer
        return Regression(self.target)


LOSSES: dict[str, type[LossOptions]] = {
    "fenchel_young": FenchelYoungOptions,
    "squared": SquaredOptions,
    "regression": RegressionOptions,
}


# ------------------------------------------------------------------- optimisers


class AdamOptions(OptimizerOptions):
    """`optimizer: {name: adam, learning_rate, b1, b2, eps}` (`optax.adam`)."""

    name: Literal["adam"]
    learning_rate: PositiveFloat
    b1: FiniteFloat = Field(0.9, ge=0, lt=1)
    b2: FiniteFloat = Field(0.999, ge=0, lt=1)
    eps: PositiveFloat = 1e-8

    def build(self) -> optax.GradientTransformation:
        return optax.adam(self.learning_rate, self.b1, self.b2, self.eps)


class AdamWOptions(OptimizerOptions):
    """`optimizer: {name: adamw, learning_rate, weight_decay}` (`optax.adamw`)."""

    name: Literal["adamw"]
    learning_rate: PositiveFloat
    weight_decay: FiniteFloat = Field(1e-4, ge=0)

    def build(self) -> optax.GradientTransformation:
        return optax.adamw(self.learning_rate, weight_decay=self.weight_decay)


class SGDOptions(OptimizerOptions):
    """`optimizer: {name: sgd, learning_rate, momentum}` (`optax.sgd`)."""

    name: Literal["sgd"]
    learning_rate: PositiveFloat
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1)

    def build(self) -> optax.GradientTransformation:
        return optax.sgd(self.learning_rate, self.momentum or None)


OPTIMIZERS: dict[str, type[OptimizerOptions]] = {
    "adam": AdamOptions,
    "adamw": AdamWOptions,
    "sgd": SGDOptions,
}
