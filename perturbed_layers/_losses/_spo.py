"""The SPO+ loss (Elmachtoub & Grigas, 2022)."""

from typing import Any

import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._common import (
    AbstractTrueCostsLoss,
    bad_instances,
    check_like,
    check_linear_layer,
    inner,
    solve,
    times,
    true_solutions,
    unflatten,
)


class SPOPlusLoss(AbstractTrueCostsLoss):
    r"""The SPO+ loss of predicted costs (or scores) against the true ones.

    For a minimising layer (θ costs), with ĉ the predicted and c the true costs, w*
    the exact solver and z*(c) = ⟨c, w*(c)⟩, per instance

        ℓ(ĉ, c) = max_w ⟨c − 2ĉ, w⟩ + 2⟨ĉ, w*(c)⟩ − z*(c)
                = ⟨2ĉ − c, w*(c) − w*(2ĉ − c)⟩,

    a convex upper bound of the regret ⟨c, w*(ĉ)⟩ − z*(c) with ℓ ≥ 0 and ℓ(c, c) = 0,
    whose (sub)gradient in ĉ is 2(w*(c) − w*(2ĉ − c)). For a maximising layer (θ
    scores, θ̂ predicted, θ true) the signs mirror: ℓ = ⟨2θ̂ − θ, y*(2θ̂ − θ) −
    y*(θ)⟩ (the same loss on the costs −θ̂, −θ), gradient 2(y*(2θ̂ − θ) − y*(θ)).

    The solver is the layer's exact `solve`, vmapped over the batch: no noise, no key,
    one solve per instance (two without `y_true`). Derivatives (forward and reverse
    mode) are those of the formula with the solutions held fixed (Danskin); second
    derivatives are 0. `value_and_solutions` also returns the solutions it computed
    (PyEPO issue 50).

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩ (its
        `objective` is `"max"` or `"min"`); only its exact `solve` is used, its noise
        settings are not.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    def cheapest(costs):  # a minimiser: one-hot of the cheapest item
        return jax.nn.one_hot(jnp.argmin(costs), costs.shape[-1])

    layer = pl.Perturbed(cheapest, num_samples=1, sigma=1.0, noise=pl.Normal(),
                         objective="min")
    loss = pl.SPOPlusLoss(layer)
    pred = jnp.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5]])
    costs = jnp.array([[1.5, 0.5, 3.0], [2.0, 1.0, 0.5]])
    value = loss(pred, costs)  # [3.0, 0.0]: the second prediction is exact
    grad = jax.grad(lambda p: loss(p, costs).sum())(pred)  # 2(w*(c) − w*(2ĉ − c))
    ```

    **Reference:** Elmachtoub, Grigas, *Smart "Predict, then Optimize"*, Management
    Science 68(1), 2022.
    """

    layer: AbstractPerturbed

    def __check_init__(self):
        check_linear_layer("SPOPlusLoss", self.layer)

    def _values(
        self, pred: Array, costs_true: Any, args: Any, y_true: Any, key: Key | None
    ) -> Array:
        del key
        return self.value_and_solutions(pred, costs_true, args, y_true=y_true)[0]

    def value_and_solutions(
        self,
        pred: Float[Array, "..."],
        costs_true: Float[Array, "..."],
        args: Any = None,
        *,
        y_true: Float[Array, "..."] | None = None,
    ) -> tuple[Float[Array, "*batch"], tuple[Array, Array]]:
        """The loss per instance and the solutions it used, `(w*(c), w*(2ĉ − c))`, each
        of `pred`'s shape (`w*(c)` is `y_true` when given). Arguments as `__call__`.

        ```python
        import jax
        import jax.numpy as jnp
        import perturbed_layers as pl

        loss = pl.SPOPlusLoss(
            pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
        )
        value, (y_true, y_spo) = loss.value_and_solutions(
            jnp.array([0.0, 1.0, 0.2]), jnp.array([1.0, 0.0, 0.0])
        )
        # y_true = [1, 0, 0] = y*(θ); y_spo = [0, 1, 0] = y*(2θ̂ − θ); value = 3.0
        ```
        """
        flat_p, flat_args, batch = self.layer.split_batch(pred, args, name="pred")
        costs_true = check_like(
            "costs_true", costs_true, "pred", jnp.asarray(pred)
        ).reshape(flat_p.shape)
        w_true = true_solutions(
            self.layer, y_true, jnp.asarray(pred), costs_true, flat_args
        )
        # 2ĉ − c, exactly ĉ where ĉ = c (so that equal infinities stay infinite).
        shifted = jnp.where(flat_p == costs_true, flat_p, 2 * flat_p - costs_true)
        w_spo = solve(self.layer, shifted, flat_args)
        delta = w_true - w_spo
        # ⟨2ĉ − c, w*(c) − w*(2ĉ − c)⟩ for costs; its mirror for scores.
        value = 2 * inner(flat_p, delta) - inner(costs_true, delta)
        if self.layer.objective == "max":
            value = -value
        mask = bad_instances(self.layer, flat_p, costs_true)
        value = times(mask, value)
        return unflatten(value, batch), (
            unflatten(w_true, batch),
            unflatten(w_spo, batch),
        )
