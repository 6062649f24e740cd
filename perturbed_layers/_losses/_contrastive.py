"""Contrastive losses over a solution pool: NCE and CMAP (Mulamba et al., 2021)."""

from typing import ClassVar

import equinox as eqx
import jax.numpy as jnp

from .._perturbed import AbstractPerturbed
from ._common import inner
from ._pool_loss import AbstractPoolLoss, Instances, OnPool, PerInstance
from ._solve_ratio import check_ratio


class NCELoss(AbstractPoolLoss):
    r"""Noise-contrastive estimation over a solution pool (Mulamba et al., PyEPO's
    `NCE`): the true optimum against every pooled solution, in the predicted costs.

    For a minimising layer, ĉ the predicted costs, w*(c) the true optimal solution and
    S the pool's stored solutions, per instance

        ℓ(ĉ) = (1/|S|) Σ_{s∈S} (⟨ĉ, w*(c)⟩ − ⟨ĉ, s⟩),   ∇_ĉ ℓ = w*(c) − (1/|S|) Σ_s s:

    it pushes the predicted cost of the true solution below the pool's average. It is
    linear in ĉ and unbounded below (scale ĉ up and it falls without end when w*(c)
    is best under ĉ); a model is usually trained with it from a normalised output or
    with weight decay, as in PyEPO. For a maximising layer (θ̂ scores) the signs
    mirror: ℓ = (1/|S|) Σ_s (⟨θ̂, s⟩ − ⟨θ̂, y*⟩). No solver call in the loss;
    `value_and_pool` refreshes the pool first (solves `solve_ratio` of the
    instances' predicted costs and adds the solutions, as PyEPO does).

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` (for the pool), `objective` and `event_ndim` are used.
    - `solve_ratio`: the fraction of instances solved per `value_and_pool` call, in
        [0, 1] (default 1: every instance, PyEPO's default).

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    loss = pl.NCELoss(layer)
    pool = pl.SolutionPool.from_solutions(jnp.eye(3), capacity=8)
    pred = jnp.array([[1.0, 0.0, 2.0]])  # scores
    y_true = jnp.array([[1.0, 0.0, 0.0]])
    value = loss(pred, y_true, pool)  # mean(θ̂) − θ̂_0 = 0.0
    grad = jax.grad(lambda p: loss(p, y_true, pool).sum())(pred)  # 1/3 − y_true
    value, pool = loss.value_and_pool(pred, y_true, pool)  # pool refreshed first
    ```

    **References:** Mulamba, Mandi, Diligenti, Lombardi, Bucarey, Guns,
    *Contrastive Losses and Solution Caching for Predict-and-Optimize*, IJCAI 2021;
    Tang, Khalil, *PyEPO*, Math. Prog. Comp. 2024 (`pyepo.func.NCE`).
    """

    layer: AbstractPerturbed
    solve_ratio: float = eqx.field(default=1.0, static=True, converter=check_ratio)
    target_name: ClassVar[str] = "y_true"
    owner: ClassVar[str] = "NCELoss"

    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        return pool.mean(inner(pred, target)[:, None] - pool.objectives)


class CMAPLoss(AbstractPoolLoss):
    r"""Contrastive maximum a posteriori over a solution pool (Mulamba et al., PyEPO's
    `CMAP`): the true optimum against the pool's best solution under the predicted
    costs.

    For a minimising layer, ĉ the predicted costs, w*(c) the true optimal solution and
    S the pool's stored solutions, per instance

        ℓ(ĉ) = ⟨ĉ, w*(c)⟩ − min_{s∈S} ⟨ĉ, s⟩,   ∇_ĉ ℓ = w*(c) − ŝ,

    ŝ = argmin_{s∈S} ⟨ĉ, s⟩ (the first on ties). With w*(c) in the pool ℓ ≥ 0, and
    ℓ = 0 exactly when w*(c) is best among the pooled solutions under ĉ; it is
    self-contrastive NCE with the max over S in place of the mean. For a maximising
    layer (θ̂ scores): ℓ = max_s ⟨θ̂, s⟩ − ⟨θ̂, y*⟩. No solver call in the loss;
    `value_and_pool` refreshes the pool first.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` (for the pool), `objective` and `event_ndim` are used.
    - `solve_ratio`: the fraction of instances solved per `value_and_pool` call, in
        [0, 1] (default 1).

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    loss = pl.CMAPLoss(layer)
    pool = pl.SolutionPool.from_solutions(jnp.eye(3), capacity=8)
    pred = jnp.array([[1.0, 0.0, 2.0]])  # scores
    y_true = jnp.array([[1.0, 0.0, 0.0]])
    value = loss(pred, y_true, pool)  # max(θ̂) − θ̂_0 = 1.0
    grad = jax.grad(lambda p: loss(p, y_true, pool).sum())(pred)  # e_2 − e_0
    ```

    **References:** Mulamba et al., IJCAI 2021; Tang, Khalil, *PyEPO*, Math. Prog.
    Comp. 2024 (`pyepo.func.CMAP`).
    """

    layer: AbstractPerturbed
    solve_ratio: float = eqx.field(default=1.0, static=True, converter=check_ratio)
    target_name: ClassVar[str] = "y_true"
    owner: ClassVar[str] = "CMAPLoss"

    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        # The first minimiser carries the gradient (jnp.min would share it on ties).
        index = jnp.argmin(jnp.where(pool.valid, pool.objectives, jnp.inf), axis=1)
        best = jnp.take_along_axis(pool.objectives, index[:, None], axis=1)[:, 0]
        return inner(pred, target) - best
