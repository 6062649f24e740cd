"""Registries of perturbed layers, noises, losses and optimisers, with their options.

Losses are called per instance as `loss(theta, batch, *, key)`:

- `fenchel_young`: the perturbed Fenchel–Young loss of the layer, `pl.FenchelYoungLoss`
    (gradient y_ε(θ) − y for a maximising layer, y − y_ε(θ) for a minimising one).
- `squared`: ‖y_ε(θ) − y‖², the squared error of the perturbed layer's output (its
    gradient goes through the layer's Monte-Carlo Jacobian).
- `regression`: ‖θ − t‖², no layer; `target: costs` fits the true costs (the
    "two-stage" or least-squares baseline of predict-then-optimise), `target:
    solution` fits the target solution itself (e.g. the ranks).
- `spo_plus`, `regret`, `dbb`, `nid`, `imle`, `ssvm`, `pg`: the decision-focused
    losses of `perturbed_layers` (SPO+, the perturbed regret, the regret through
    blackbox differentiation, the negative identity or I-MLE, the structured SVM, the
    perturbation gradient) on the layer's solver; each needs only the task's true
    costs (and y, which is w*(c)).
- `nce`, `cmap`, `ltr_pointwise`, `ltr_pairwise`, `ltr_listwise`: the losses over a
    solution pool carried in the training state (`_pool_losses.py`).
"""

import functools
from typing import Literal

import equinox as eqx
import jax.numpy as jnp
import optax
from jaxtyping import Array
from pydantic import Field, field_validator, model_validator

import perturbed_layers as pl

from ._knapsack import KnapsackTask
from ._options import (
    FiniteFloat,
    LayerOptions,
    LossOptions,
    OptimizerOptions,
    PositiveFloat,
    PositiveInt,
    describe,
)
from ._pool_losses import (
    CMAPOptions,
    ListwiseLTROptions,
    NCEOptions,
    PairwiseLTROptions,
    PointwiseLTROptions,
)
from ._pyepo import PyEPOTask
from ._tasks import AbstractLoss, AbstractTask
from ._warcraft import WarcraftTask

NOISES: dict[str, type[pl.AbstractNoise]] = {"normal": pl.Normal, "gumbel": pl.Gumbel}


# ---------------------------------------------------------------------- layers


class _PerturbedOptions(LayerOptions):
    """Options shared by every perturbed layer (those of `pl.Perturbed`)."""

    num_samples: PositiveInt = Field(description="M, Monte-Carlo samples per instance")
    sigma: PositiveFloat = Field(description="σ, the noise scale")
    noise: str = Field("normal", description="a name in NOISES: normal, gumbel")
    perturbation: Literal["additive", "multiplicative"] = Field(
        "additive", description="θ + σZ, or θ ⊙ exp(σZ − σ²/2) (keeps costs positive)"
    )
    chunk_size: PositiveInt | None = Field(
        None, description="samples processed at a time (None: all at once)"
    )

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

    def common(self, sample_axis: str | None) -> dict:
        return dict(
            num_samples=self.num_samples,
            sigma=self.sigma,
            noise=NOISES[self.noise](),
            perturbation=self.perturbation,
            chunk_size=self.chunk_size,
            sample_axis=sample_axis,
        )


@functools.cache
def _pyepo_solver(m: int) -> functools.partial:
    # The solver is a static field of the layer, and a partial equals only itself:
    # one per grid size, so that every run on that grid reuses the compiled step.
    return functools.partial(pl.solvers.pyepo_shortest_path, m=m)


class PyEPOLayer(_PerturbedOptions):
    """`layer: {name: pyepo_shortest_path, ...}`: perturbed shortest path on PyEPO's
    grid (arc costs in, arc indicator out, minimised)."""

    name: Literal["pyepo_shortest_path"]

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, PyEPOTask)
        return pl.Perturbed(
            _pyepo_solver(task.grid),
            objective="min",
            event_ndim=1,
            # Every source-sink path has 2(m - 1) arcs, so adding a constant to all
            # arc costs never changes the solution.
            shift_invariant=True,
            **self.common(sample_axis),
        )


class GridShortestPathLayer(_PerturbedOptions):
    """`layer: {name: grid_shortest_path, ...}`: `pl.PerturbedShortestPath` on vertex
    costs (they must stay positive: use `perturbation: multiplicative`, or a small
    sigma against costs kept away from 0)."""

    name: Literal["grid_shortest_path"]
    connectivity: Literal[4, 8] = Field(8, description="8: king moves, 4: rook moves")

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, WarcraftTask)
        return pl.PerturbedShortestPath(
            connectivity=self.connectivity, **self.common(sample_axis)
        )


class RankingLayer(_PerturbedOptions):
    """`layer: {name: ranking, ...}`: `pl.PerturbedRanking` (ranks, maximised)."""

    name: Literal["ranking"]

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        del task
        return pl.PerturbedRanking(**self.common(sample_axis))


class KnapsackLayer(_PerturbedOptions):
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


LAYERS: dict[str, type[LayerOptions]] = {
    "pyepo_shortest_path": PyEPOLayer,
    "grid_shortest_path": GridShortestPathLayer,
    "ranking": RankingLayer,
    "knapsack": KnapsackLayer,
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
    target: Literal["costs", "solution"] = Field(
        "costs", description="fit the true costs, or the target solution itself"
    )

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        del layer
        return Regression(self.target)


class SPOPlus(AbstractLoss):
    loss: pl.SPOPlusLoss

    def __call__(self, theta, batch, *, key):
        del key
        costs = batch.costs.astype(theta.dtype)
        return self.loss(theta, costs, y_true=batch.y.astype(theta.dtype))


class Regret(AbstractLoss):
    loss: pl.RegretLoss

    def __call__(self, theta, batch, *, key):
        costs = batch.costs.astype(theta.dtype)
        return self.loss(theta, costs, y_true=batch.y.astype(theta.dtype), key=key)


class StructuredSVM(AbstractLoss):
    loss: pl.StructuredSVMLoss

    def __call__(self, theta, batch, *, key):
        return self.loss(theta, batch.y.astype(theta.dtype), key=key)


class SPOPlusOptions(LossOptions):
    """`loss: {name: spo_plus}`: SPO+ (Elmachtoub & Grigas), exact solver, no noise."""

    name: Literal["spo_plus"]

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return SPOPlus(pl.SPOPlusLoss(layer))


class RegretOptions(LossOptions):
    """`loss: {name: regret}`: the perturbed regret ⟨c, y_ε(ĉ)⟩ − z*(c) through the
    layer (PyEPO's DPO + regret); trains from the true costs, no solution labels."""

    name: Literal["regret"]

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return Regret(pl.RegretLoss(layer))


class BlackboxOptions(LossOptions):
    """`loss: {name: dbb, lambd: 10}`: the regret through blackbox differentiation
    (Vlastelica et al.), exact forward, interpolation backward of strength λ."""

    name: Literal["dbb"]
    lambd: PositiveFloat = Field(10.0, description="λ, the interpolation strength")

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return Regret(
            pl.RegretLoss(pl.BlackboxDifferentiation(layer, lambd=self.lambd))
        )


class NegativeIdentityOptions(LossOptions):
    """`loss: {name: nid}`: the regret through the negative identity (Sahoo et al.)."""

    name: Literal["nid"]

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return Regret(pl.RegretLoss(pl.NegativeIdentity(layer)))


class IMLEOptions(LossOptions):
    """`loss: {name: imle, lambd: 10, k: 5, tau: 1, s: 10, num_samples: 1}`: the regret
    through I-MLE (Niepert et al.) with Sum-of-Gamma noise."""

    name: Literal["imle"]
    lambd: PositiveFloat = Field(10.0, description="λ, the step to the target")
    k: PositiveInt = Field(5, description="Sum-of-Gamma k (the structure's size)")
    tau: PositiveFloat = Field(1.0, description="Sum-of-Gamma temperature τ")
    s: PositiveInt = Field(10, description="Sum-of-Gamma terms s")
    num_samples: PositiveInt = Field(1, description="perturb-and-MAP samples")
    sigma: PositiveFloat = Field(1.0, description="noise scale")

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        imle = pl.IMLE(
            layer,
            lambd=self.lambd,
            noise=pl.SumOfGamma(self.k, tau=self.tau, s=self.s),
            num_samples=self.num_samples,
            sigma=self.sigma,
        )
        return Regret(pl.RegretLoss(imle))


class PerturbationGradient(AbstractLoss):
    loss: pl.PerturbationGradientLoss

    def __call__(self, theta, batch, *, key):
        return self.loss(theta, batch.costs.astype(theta.dtype), key=key)


class PerturbationGradientOptions(LossOptions):
    """`loss: {name: pg, h: 0.1, variant: backward}`: the perturbation-gradient loss
    (Gupta & Huang): a finite difference of the optimal value along the true costs,
    backward (PGB) or central (PGC); needs only the true costs."""

    name: Literal["pg"]
    h: PositiveFloat = Field(0.1, description="h, the step along the true costs")
    variant: Literal["backward", "central"] = Field(
        "backward", description="backward (PGB) or central (PGC) difference"
    )

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return PerturbationGradient(
            pl.PerturbationGradientLoss(layer, h=self.h, variant=self.variant)
        )


class StructuredSVMOptions(LossOptions):
    """`loss: {name: ssvm, margin: 1}`: the structured hinge with the Hamming margin."""

    name: Literal["ssvm"]
    margin: PositiveFloat = Field(1.0, description="α, the margin per differing entry")

    def build(self, layer: pl.AbstractPerturbed) -> AbstractLoss:
        return StructuredSVM(pl.StructuredSVMLoss(layer, margin=self.margin))


LOSSES: dict[str, type[LossOptions]] = {
    "fenchel_young": FenchelYoungOptions,
    "squared": SquaredOptions,
    "regression": RegressionOptions,
    "spo_plus": SPOPlusOptions,
    "regret": RegretOptions,
    "dbb": BlackboxOptions,
    "nid": NegativeIdentityOptions,
    "imle": IMLEOptions,
    "ssvm": StructuredSVMOptions,
    "pg": PerturbationGradientOptions,
    "nce": NCEOptions,
    "cmap": CMAPOptions,
    "ltr_pointwise": PointwiseLTROptions,
    "ltr_pairwise": PairwiseLTROptions,
    "ltr_listwise": ListwiseLTROptions,
}


# ------------------------------------------------------------------- optimisers


Schedule = Literal["constant", "cosine"]


def _learning_rate(
    options: "AdamOptions | AdamWOptions | SGDOptions", total_steps: int
):
    if options.schedule == "cosine":
        return optax.cosine_decay_schedule(options.learning_rate, max(total_steps, 1))
    return options.learning_rate


class AdamOptions(OptimizerOptions):
    """`optimizer: {name: adam, learning_rate, b1, b2, eps, schedule}` (`optax.adam`).

    `schedule: cosine` decays the learning rate to 0 over the run (cosine); the
    default `constant` keeps it.
    """

    name: Literal["adam"]
    learning_rate: PositiveFloat = Field(description="the (initial) step size")
    b1: FiniteFloat = Field(0.9, ge=0, lt=1)
    b2: FiniteFloat = Field(0.999, ge=0, lt=1)
    eps: PositiveFloat = 1e-8
    schedule: Schedule = Field(
        "constant", description="constant, or cosine decay to 0 over the run"
    )

    def build(self, total_steps: int) -> optax.GradientTransformation:
        lr = _learning_rate(self, total_steps)
        return optax.adam(lr, self.b1, self.b2, self.eps)


class AdamWOptions(OptimizerOptions):
    """`optimizer: {name: adamw, learning_rate, weight_decay, schedule}` (`optax.adamw`)."""

    name: Literal["adamw"]
    learning_rate: PositiveFloat
    weight_decay: FiniteFloat = Field(1e-4, ge=0)
    schedule: Schedule = "constant"

    def build(self, total_steps: int) -> optax.GradientTransformation:
        lr = _learning_rate(self, total_steps)
        return optax.adamw(lr, weight_decay=self.weight_decay)


class SGDOptions(OptimizerOptions):
    """`optimizer: {name: sgd, learning_rate, momentum, schedule}` (`optax.sgd`)."""

    name: Literal["sgd"]
    learning_rate: PositiveFloat
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1)
    schedule: Schedule = "constant"

    def build(self, total_steps: int) -> optax.GradientTransformation:
        return optax.sgd(_learning_rate(self, total_steps), self.momentum or None)


OPTIMIZERS: dict[str, type[OptimizerOptions]] = {
    "adam": AdamOptions,
    "adamw": AdamWOptions,
    "sgd": SGDOptions,
}
