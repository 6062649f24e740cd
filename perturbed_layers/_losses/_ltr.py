"""Learning to rank the solutions of a pool: pointwise, pairwise and listwise losses
(Mandi et al., 2022)."""

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp

from .._perturbed import AbstractPerturbed
from ._common import check_positive
from ._pool import pool_objectives
from ._pool_loss import AbstractPoolLoss, Instances, OnPool, PerInstance
from ._solve_ratio import check_ratio


def _finite_margin(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"margin must be a non-negative number, got {value!r}")
    if not 0 <= float(value) < float("inf"):
        raise ValueError(f"margin must be a non-negative number, got {value!r}")
    return float(value)


def _positive(value: object) -> float:
    check_positive("temperature", value)
    return float(value)  # pyright: ignore[reportArgumentType]


class PointwiseLTRLoss(AbstractPoolLoss):
    r"""Pointwise learning to rank over a solution pool (Mandi et al., PyEPO's
    `ptLTR`): each pooled solution's predicted objective regressed on its true one.

    Per instance, ĉ the predicted and c the true costs (or scores: the loss is the
    same for both), S the pool's stored solutions,

        ℓ(ĉ) = (1/|S|) Σ_{s∈S} (⟨c, s⟩ − ⟨ĉ, s⟩)²,
        ∇_ĉ ℓ = (2/|S|) Σ_s (⟨ĉ, s⟩ − ⟨c, s⟩) s.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` (for the pool), `objective` and `event_ndim` are used.
    - `solve_ratio`: the fraction of instances solved per `value_and_pool` call, in
        [0, 1] (default 1).

    **Example:**

    ```python
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    loss = pl.PointwiseLTRLoss(layer)
    pool = pl.SolutionPool.from_solutions(jnp.eye(3), capacity=8)
    pred, scores = jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[1.0, 1.0, 1.0]])
    value = loss(pred, scores, pool)  # (0² + 1² + 1²) / 3
    ```

    **References:** Mandi, Bucarey, Mulamba, Guns, *Decision-Focused Learning:
    Through the Lens of Learning to Rank*, ICML 2022; Tang, Khalil, *PyEPO*, Math.
    Prog. Comp. 2024 (`pyepo.func.pointwiseLTR`).
    """

    layer: AbstractPerturbed
    solve_ratio: float = eqx.field(default=1.0, static=True, converter=check_ratio)
    target_name: ClassVar[str] = "costs_true"
    owner: ClassVar[str] = "PointwiseLTRLoss"

    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        true = pool_objectives(target, pool.solutions)
        return pool.mean((true - pool.objectives) ** 2)


class PairwiseLTRLoss(AbstractPoolLoss):
    r"""Pairwise learning to rank over a solution pool (Mandi et al., PyEPO's
    `prLTR`): the pool's truly best solution should be predicted better than each
    of the others.

    For a minimising layer, ĉ the predicted and c the true costs, S the pool's stored
    solutions, s⁺ = argmin_{s∈S} ⟨c, s⟩ (the first on ties), per instance

        ℓ(ĉ) = 1/max(|S| − 1, 1) · Σ_{s∈S, s≠s⁺} max(0, m + ⟨ĉ, s⁺⟩ − ⟨ĉ, s⟩),

    a hinge on each (best, other) pair with margin m; ∇_ĉ ℓ = Σ over the active pairs
    of (s⁺ − s), divided by the same count. With m = 0 this is PyEPO's `prLTR`
    (which sums over every s, s⁺ included, where the hinge is 0). For a maximising
    layer (θ̂, θ scores): s⁺ = argmax ⟨θ, s⟩ and the hinge is max(0, m + ⟨θ̂, s⟩ −
    ⟨θ̂, s⁺⟩).

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` (for the pool), `objective` and `event_ndim` are used.
    - `solve_ratio`: the fraction of instances solved per `value_and_pool` call, in
        [0, 1] (default 1).
    - `margin`: m ≥ 0 (default 0, PyEPO's).

    **Example:**

    ```python
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    loss = pl.PairwiseLTRLoss(layer)
    pool = pl.SolutionPool.from_solutions(jnp.eye(3), capacity=8)
    pred, scores = jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[3.0, 1.0, 2.0]])
    value = loss(pred, scores, pool)  # s⁺ = e_0: (max(0, 0 − 1) + max(0, 2 − 1)) / 2
    ```

    **References:** Mandi et al., ICML 2022; Tang, Khalil, *PyEPO*, Math. Prog.
    Comp. 2024 (`pyepo.func.pairwiseLTR`).
    """

    layer: AbstractPerturbed
    solve_ratio: float = eqx.field(default=1.0, static=True, converter=check_ratio)
    margin: float = eqx.field(
        default=0.0, static=True, kw_only=True, converter=_finite_margin
    )
    target_name: ClassVar[str] = "costs_true"
    owner: ClassVar[str] = "PairwiseLTRLoss"

    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        valid = pool.valid
        true = pool_objectives(target, pool.solutions)
        best = jnp.argmin(jnp.where(valid, true, jnp.inf), axis=1)
        predicted_best = jnp.take_along_axis(pool.objectives, best[:, None], axis=1)
        hinge = jax.nn.relu(self.margin + predicted_best - pool.objectives)
        others = valid[None, :] & (jnp.arange(valid.shape[0]) != best[:, None])
        total = jnp.sum(jnp.where(others, hinge, 0), axis=1)
        return total / jnp.maximum(pool.count - 1, 1)


class ListwiseLTRLoss(AbstractPoolLoss):
    r"""Listwise learning to rank over a solution pool (Mandi et al., PyEPO's
    `lsLTR`): the cross-entropy between the pool's ranking distributions under the
    true and the predicted costs.

    For a minimising layer, ĉ the predicted and c the true costs, S the pool's stored
    solutions and τ the temperature, per instance

        q_s = softmax_{s∈S}(−⟨c, s⟩/τ),   p_s = softmax_{s∈S}(−⟨ĉ, s⟩/τ),
        ℓ(ĉ) = −Σ_{s∈S} q_s log p_s,   ∇_ĉ ℓ = (1/τ) Σ_s (q_s − p_s) s.

    For a maximising layer (θ̂, θ scores) the softmaxes are of +⟨θ, s⟩/τ and
    +⟨θ̂, s⟩/τ, and ∇ = (1/τ) Σ_s (p_s − q_s) s. With τ = 1 this is PyEPO's `lsLTR`,
    except that PyEPO clips q at 1e-8 (which adds at most 1e-8·Σ_s |log p_s|); here
    q is not clipped, and ℓ − H(q) = KL(q ‖ p) ≥ 0.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` (for the pool), `objective` and `event_ndim` are used.
    - `solve_ratio`: the fraction of instances solved per `value_and_pool` call, in
        [0, 1] (default 1).
    - `temperature`: τ > 0 (default 1, PyEPO's), the same for both distributions.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    loss = pl.ListwiseLTRLoss(layer, temperature=0.5)
    pool = pl.SolutionPool.from_solutions(jnp.eye(3), capacity=8)
    pred, scores = jnp.array([[1.0, 0.0, 2.0]]), jnp.array([[3.0, 1.0, 2.0]])
    value = loss(pred, scores, pool)
    # −Σ softmax(scores / 0.5) · log_softmax(pred / 0.5)
    ```

    **References:** Mandi et al., ICML 2022; Cao, Qin, Liu, Tsai, Li, *Learning to
    Rank: from Pairwise Approach to Listwise Approach* (ListNet), ICML 2007; Tang,
    Khalil, *PyEPO*, Math. Prog. Comp. 2024 (`pyepo.func.listwiseLTR`).
    """

    layer: AbstractPerturbed
    solve_ratio: float = eqx.field(default=1.0, static=True, converter=check_ratio)
    temperature: float = eqx.field(
        default=1.0, static=True, kw_only=True, converter=_positive
    )
    target_name: ClassVar[str] = "costs_true"
    owner: ClassVar[str] = "ListwiseLTRLoss"

    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        valid, tau = pool.valid, self.temperature
        true = pool_objectives(target, pool.solutions)
        q = jax.nn.softmax(jnp.where(valid, -true / tau, -jnp.inf), axis=1)
        log_p = jax.nn.log_softmax(
            jnp.where(valid, -pool.objectives / tau, -jnp.inf), axis=1
        )
        # Unused rows have q = 0 and log p = −inf: leave them out, not 0·inf.
        return -jnp.sum(q * jnp.where(valid, log_p, 0), axis=1)
