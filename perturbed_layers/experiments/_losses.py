"""The training losses a config can name (`loss:`), with their options.

Losses are called per instance as `loss(theta, batch, *, key)`:

- `fenchel_young`: the perturbed Fenchel–Young loss of the layer, `pl.FenchelYoungLoss`
    (gradient y_ε(θ) − y for a maximising layer, y − y_ε(θ) for a minimising one).
- `squared`: ‖y_ε(θ) − y‖², the squared error of the perturbed layer's output (its
    gradient goes through the layer's Monte-Carlo Jacobian).
- `regression`: ‖θ − t‖², no layer; `target: costs` fits the true costs (the
    "two-stage" or least-squares baseline of predict-then-optimise), `target:
    solution` fits the target solution itself (e.g. the ranks).
- `cave`: CaVE, on the normal cone of the true solution (the task's constraints).
- `aimle`: the regret through adaptive I-MLE, whose step size is training state.
- `spo_plus`, `regret`, `dbb`, `nid`, `imle`, `ssvm`, `pg`: the decision-focused
    losses of `perturbed_layers` (SPO+, the perturbed regret, the regret through
    blackbox differentiation, the negative identity or I-MLE, the structured SVM, the
    perturbation gradient) on the layer's solver; each needs only the task's true
    costs (and y, which is w*(c)).
- `nce`, `cmap`, `ltr_pointwise`, `ltr_pairwise`, `ltr_listwise`: the losses over a
    solution pool carried in the training state (`_pool_losses.py`).
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array
from pydantic import Field

import perturbed_layers as pl

from ._options import FiniteFloat, LossOptions, PositiveFloat, PositiveInt
from ._tasks import AbstractLoss, AbstractMeasuringLoss, AbstractTask


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

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return FenchelYoung(pl.FenchelYoungLoss(layer))


class SquaredOptions(LossOptions):
    """`loss: {name: squared}`: ‖y_ε(θ) − y‖² through the perturbed layer."""

    name: Literal["squared"]

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return SquaredThroughLayer(layer)


class RegressionOptions(LossOptions):
    """`loss: {name: regression, target: costs | solution}`: ‖θ − target‖²."""

    name: Literal["regression"]
    target: Literal["costs", "solution"] = Field(
        "costs", description="fit the true costs, or the target solution itself"
    )

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
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

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return SPOPlus(pl.SPOPlusLoss(layer))


class RegretOptions(LossOptions):
    """`loss: {name: regret}`: the perturbed regret ⟨c, y_ε(ĉ)⟩ − z*(c) through the
    layer (PyEPO's DPO + regret); trains from the true costs, no solution labels."""

    name: Literal["regret"]

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return Regret(pl.RegretLoss(layer))


class BlackboxOptions(LossOptions):
    """`loss: {name: dbb, lambd: 10}`: the regret through blackbox differentiation
    (Vlastelica et al.), exact forward, interpolation backward of strength λ."""

    name: Literal["dbb"]
    lambd: PositiveFloat = Field(10.0, description="λ, the interpolation strength")

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return Regret(
            pl.RegretLoss(pl.BlackboxDifferentiation(layer, lambd=self.lambd))
        )


class NegativeIdentityOptions(LossOptions):
    """`loss: {name: nid}`: the regret through the negative identity (Sahoo et al.)."""

    name: Literal["nid"]

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return Regret(pl.RegretLoss(pl.NegativeIdentity(layer)))


class _PerturbAndMAPOptions(LossOptions):
    """The Sum-of-Gamma perturb-and-MAP options shared by I-MLE and AI-MLE."""

    k: PositiveInt = Field(5, description="Sum-of-Gamma k (the structure's size)")
    tau: PositiveFloat = Field(1.0, description="Sum-of-Gamma temperature τ")
    s: PositiveInt = Field(10, description="Sum-of-Gamma terms s")
    num_samples: PositiveInt = Field(1, description="perturb-and-MAP samples")
    sigma: PositiveFloat = Field(1.0, description="noise scale")

    def noise(self) -> pl.SumOfGamma:
        return pl.SumOfGamma(self.k, tau=self.tau, s=self.s)


class IMLEOptions(_PerturbAndMAPOptions):
    """`loss: {name: imle, lambd: 10, k: 5, tau: 1, s: 10, num_samples: 1}`: the regret
    through I-MLE (Niepert et al.) with Sum-of-Gamma noise."""

    name: Literal["imle"]
    lambd: PositiveFloat = Field(10.0, description="λ, the step to the target")

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        imle = pl.IMLE(
            layer,
            lambd=self.lambd,
            noise=self.noise(),
            num_samples=self.num_samples,
            sigma=self.sigma,
        )
        return Regret(pl.RegretLoss(imle))


class AdaptiveIMLERegret(AbstractMeasuringLoss):
    """The regret ⟨c, ŵ⟩ − z*(c) through AI-MLE, its adapted step the loss's state."""

    aimle: pl.AdaptiveIMLE

    def value_and_state(self, theta, batch, state, *, key):
        w = self.aimle(theta, state, key=key)
        costs = batch.costs.astype(theta.dtype)
        sign = 1 if self.aimle.layer.objective == "min" else -1
        regret = sign * _per_instance(costs * (w - batch.y.astype(theta.dtype)))
        return regret, state

    def initial_state(self, train):
        del train
        return self.aimle.init()

    def next_state(self, state, measured):
        return self.aimle.update(state, measured)


class AdaptiveIMLEOptions(_PerturbAndMAPOptions):
    """`loss: {name: aimle, k: 5, tau: 1, s: 10, num_samples: 1, init_beta: 1, step:
    1e-3, target_norm: 1, decay: 0.9, momentum: 0}`: the regret through adaptive I-MLE
    (Minervini et al.) with Sum-of-Gamma noise; its step size adapts during training
    and is saved in checkpoints."""

    name: Literal["aimle"]
    init_beta: PositiveFloat = Field(1.0, description="β₀, the initial relative step")
    step: PositiveFloat = Field(1e-3, description="the change of β per update")
    target_norm: PositiveFloat = Field(
        1.0, description="target non-zero entries per sample gradient"
    )
    decay: FiniteFloat = Field(0.9, ge=0, lt=1, description="running average decay")
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1, description="momentum of β")

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractMeasuringLoss:
        return AdaptiveIMLERegret(
            pl.AdaptiveIMLE(
                layer,
                noise=self.noise(),
                num_samples=self.num_samples,
                sigma=self.sigma,
                init_beta=self.init_beta,
                step=self.step,
                target_norm=self.target_norm,
                decay=self.decay,
                momentum=self.momentum,
            )
        )


class CaVE(AbstractLoss):
    loss: pl.CaVELoss
    region: pl.PerturbedLinearProgram

    def __call__(self, theta, batch, *, key):
        normals = pl.binding_normals(self.region, batch.y.astype(theta.dtype))
        return self.loss(theta, normals, key=key)


class CaVEOptions(LossOptions):
    """`loss: {name: cave, num_iterations: 500}`: CaVE (Tang & Khalil): the predicted
    costs aligned with the normal cone of the true solution's binding constraints,
    which the task gives as a linear program (PyEPO's shortest path and knapsack)."""

    name: Literal["cave"]
    num_iterations: PositiveInt = Field(
        500, description="projected-gradient steps of the cone projection"
    )

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        region = getattr(task, "linear_program", None)
        if region is None:
            raise ValueError(
                f"name: cave needs the task's constraints, which "
                f"{type(task).__name__} does not give; tasks that do: "
                "pyepo_shortest_path, pyepo_knapsack"
            )
        loss = pl.CaVELoss(layer, num_iterations=self.num_iterations)
        return CaVE(loss, region())


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

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return PerturbationGradient(
            pl.PerturbationGradientLoss(layer, h=self.h, variant=self.variant)
        )


class StructuredSVMOptions(LossOptions):
    """`loss: {name: ssvm, margin: 1}`: the structured hinge with the Hamming margin."""

    name: Literal["ssvm"]
    margin: PositiveFloat = Field(1.0, description="α, the margin per differing entry")

    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> AbstractLoss:
        return StructuredSVM(pl.StructuredSVMLoss(layer, margin=self.margin))
