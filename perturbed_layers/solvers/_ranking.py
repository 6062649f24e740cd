"""Ranks: the maximiser of ⟨y, θ⟩ over the permutations of (0, 1, …, n − 1)."""

import jax.numpy as jnp
from jaxtyping import Array, Float


def ranks(theta: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
    """Rank of each entry along the last axis: 0 for the smallest, n − 1 the largest.

    This is `argsort(argsort(theta))`, as in the optax perturbations notebook. By the
    rearrangement inequality it maximises ⟨y, θ⟩ over the permutations y of
    (0, …, n − 1). Ties are broken by position (stable sort).

    **Arguments:**

    - `theta`: scores, shape `(*batch, n)`.

    **Returns:**

    The ranks, as `theta`'s dtype.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import ranks

    ranks(jnp.array([0.3, -1.0, 2.0]))  # [1., 0., 2.]
    ```
    """
    order = jnp.argsort(theta, axis=-1, stable=True)
    return jnp.argsort(order, axis=-1, stable=True).astype(theta.dtype)
