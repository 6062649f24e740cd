"""The regret of a differentiable solver layer's decision, learnt from observed costs."""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array

from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._blackbox import BlackboxDifferentiation, NegativeIdentity
from ._common import (
    AbstractTrueCostsLoss,
    bad_instances,
    check_like,
    inner,
    times,
    true_solutions,
    unflatten,
)
from ._imle import IMLE

_WRAPPERS = (BlackboxDifferentiation, NegativeIdentity, IMLE)


class RegretLoss(AbstractTrueCostsLoss):
    r"""The regret of a layer's decision under the true costs: the perturbed regret
    (PyEPO's DPO + regret, InferOpt's pushforward) and its DBB, NID and I-MLE forms.

    For a minimising layer, ĉ the predicted and c the true costs, per instance

        R(ĉ, c) = ⟨c, y(ĉ)⟩ − z*(c),   z*(c) = ⟨c, w*(c)⟩ = min_w ⟨c, w⟩,

    where y(ĉ) is the layer's output: y_ε(ĉ) = E[w*(ĉ + σZ)] for a perturbed layer
    (smooth; ∇_ĉ R = J_{y_ε}(ĉ)ᵀ c, the layer's Jacobian estimate), or w*(ĉ) with the
    surrogate backward pass of `pl.BlackboxDifferentiation`, `pl.NegativeIdentity` or
    `pl.IMLE`. For a maximising layer (θ scores) R(θ̂, θ) = z*(θ) − ⟨θ, y(θ̂)⟩. With a
    perturbed layer, R ≥ 0 for every ĉ; it needs the observed costs only, no solution
    labels (w*(c) is solved here unless `y_true` is given; it carries no derivative).

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩, or a
        `pl.BlackboxDifferentiation`, `pl.NegativeIdentity` or `pl.IMLE` around one.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1000, sigma=0.5, noise=pl.Gumbel())
    loss = pl.RegretLoss(layer)
    pred = jnp.array([[0.0, 1.0, 0.5]])
    scores = jnp.array([[1.0, 0.0, 0.5]])
    key = jax.random.key(0)
    value = loss(pred, scores, key=key)  # 1 − ⟨scores, softmax(pred / 0.5)⟩ ≈ 0.79
    grad = jax.grad(lambda p: loss(p, scores, key=key).sum())(pred)
    ```

    **References:** Berthet et al., NeurIPS 2020; Dalle, Baty, Bouvier, Parmentier,
    *Learning with Combinatorial Optimization Layers: a Probabilistic Approach*, 2022
    (InferOpt.jl's `PushForward`); Tang, Khalil, *PyEPO*, Math. Prog. Comp. 2024.
    """

    layer: Any

    def __check_init__(self):
        if not isinstance(self.layer, (AbstractPerturbed, *_WRAPPERS)):
            raise TypeError(
                "RegretLoss: layer must be a perturbed layer or a "
                "pl.BlackboxDifferentiation, pl.NegativeIdentity or pl.IMLE, got "
                f"{type(self.layer).__name__}"
            )
        solver = self._solver()
        if solver.objective not in ("max", "min"):
            raise ValueError(
                "RegretLoss needs a layer whose solver maximises or minimises ⟨y, θ⟩: "
                "declare it with objective='max' or 'min' (got objective="
                f"{solver.objective!r})"
            )

    def _solver(self) -> AbstractPerturbed:
        return (
            self.layer
            if isinstance(self.layer, AbstractPerturbed)
            else self.layer.layer
        )

    def _values(
        self, pred: Array, costs_true: Any, args: Any, y_true: Any, key: Key | None
    ) -> Array:
        solver = self._solver()
        flat_c, flat_args, batch = solver.split_batch(
            check_like("costs_true", costs_true, "pred", pred), args, name="costs_true"
        )
        y = self.layer(pred, args, key=key)
        flat_y = jnp.reshape(y, flat_c.shape).astype(flat_c.dtype)
        w_true = true_solutions(solver, y_true, pred, flat_c, flat_args)
        # ±inf costs (a graph's missing arcs) are never on a decision: count them as 0
        # there rather than let 0·inf make a NaN (and a derivative that is not one).
        finite_c = jnp.where(jnp.isinf(flat_c), 0, flat_c)
        axes = tuple(range(1, flat_c.ndim))
        regret = jnp.sum(finite_c * flat_y, axis=axes) - inner(flat_c, w_true)
        if solver.objective == "max":
            regret = -regret
        return unflatten(times(bad_instances(solver, flat_c), regret), batch)
