"""The solution-pool losses as registry entries: NCE, CMAP and learning to rank.

Each compares the predicted costs on a `pl.SolutionPool` that lives in the training
state (`AbstractStatefulLoss`): the pool is seeded with the training set's target
solutions before epoch 0 (PyEPO's `dataset.sols`), refreshed inside every compiled
step (`loss.value_and_state`: a fraction `solve_ratio` of the batch's predictions is
solved exactly and the new solutions added), saved in each checkpoint and restored on
resume.

- `nce`, `cmap`: the target solution against the pool (`batch.y`).
- `ltr_pointwise`, `ltr_pairwise` (`margin`), `ltr_listwise` (`temperature`): the
    pool's solutions ranked by the true costs (`batch.costs`).

Every entry takes `solve_ratio`, `pool_capacity` and `when_full`.
"""

from typing import Literal

import equinox as eqx
import jax.numpy as jnp
from pydantic import Field

import perturbed_layers as pl

from ._options import (
    FiniteFloat,
    LossOptions,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
)
from ._tasks import AbstractStatefulLoss, AbstractTask, Batch

WhenFull = Literal["fifo", "keep"]
_Loss = (
    pl.NCELoss
    | pl.CMAPLoss
    | pl.PointwiseLTRLoss
    | pl.PairwiseLTRLoss
    | pl.ListwiseLTRLoss
)


class PoolLoss(AbstractStatefulLoss):
    """A `pl` pool loss on a batch: its target is `batch.y` (a solution) or
    `batch.costs` (the true costs), as the loss declares."""

    loss: _Loss
    capacity: int = eqx.field(static=True)
    when_full: WhenFull = eqx.field(static=True)

    def value_and_state(self, theta, batch, state, *, key):
        target = batch.y if self.loss.target_name == "y_true" else batch.costs
        return self.loss.value_and_pool(
            theta, target.astype(theta.dtype), state, key=key
        )

    def initial_state(self, train: Batch) -> pl.SolutionPool:
        return pl.SolutionPool.from_solutions(
            jnp.asarray(train.y), self.capacity, when_full=self.when_full
        )


class _PoolOptions(LossOptions):
    """Options shared by every solution-pool loss."""

    solve_ratio: FiniteFloat = Field(
        1.0,
        ge=0,
        le=1,
        description="fraction of each batch's predictions solved exactly and added to "
        "the pool (PyEPO's solve_ratio)",
    )
    pool_capacity: PositiveInt = Field(
        1024, description="solutions the pool holds (a fixed-size array)"
    )
    when_full: WhenFull = Field(
        "fifo", description="a full pool evicts its oldest solution (fifo) or keeps all"
    )

    def wrap(self, loss: _Loss) -> AbstractStatefulLoss:
        return PoolLoss(loss, self.pool_capacity, self.when_full)


class NCEOptions(_PoolOptions):
    """`loss: {name: nce, solve_ratio: 1, pool_capacity: 1024}`: noise-contrastive
    estimation (Mulamba et al.): the target solution against the pool's mean. It is
    linear and unbounded below in θ: PyEPO trains it with weight decay."""

    name: Literal["nce"]

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractStatefulLoss:
        return self.wrap(pl.NCELoss(layer, self.solve_ratio))


class CMAPOptions(_PoolOptions):
    """`loss: {name: cmap}`: contrastive MAP (Mulamba et al.): the target solution
    against the pool's best under θ."""

    name: Literal["cmap"]

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractStatefulLoss:
        return self.wrap(pl.CMAPLoss(layer, self.solve_ratio))


class PointwiseLTROptions(_PoolOptions):
    """`loss: {name: ltr_pointwise}`: each pooled solution's predicted objective
    regressed on its true one (Mandi et al.)."""

    name: Literal["ltr_pointwise"]

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractStatefulLoss:
        return self.wrap(pl.PointwiseLTRLoss(layer, self.solve_ratio))


class PairwiseLTROptions(_PoolOptions):
    """`loss: {name: ltr_pairwise, margin: 0}`: a hinge between the pool's truly best
    solution and each other one (Mandi et al.)."""

    name: Literal["ltr_pairwise"]
    margin: NonNegativeFloat = Field(0.0, description="m, the hinge's margin")

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractStatefulLoss:
        loss = pl.PairwiseLTRLoss(layer, self.solve_ratio, margin=self.margin)
        return self.wrap(loss)


class ListwiseLTROptions(_PoolOptions):
    """`loss: {name: ltr_listwise, temperature: 1}`: cross-entropy between the pool's
    softmax rankings under the true and the predicted costs (Mandi et al.)."""

    name: Literal["ltr_listwise"]
    temperature: PositiveFloat = Field(1.0, description="τ, of both softmaxes")

    def build(
        self, layer: pl.AbstractPerturbed, task: AbstractTask
    ) -> AbstractStatefulLoss:
        loss = pl.ListwiseLTRLoss(layer, self.solve_ratio, temperature=self.temperature)
        return self.wrap(loss)
