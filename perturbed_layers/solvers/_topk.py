"""Top-k: the maximiser of ⟨y, θ⟩ over the 0/1 vectors with k ones."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def top_k_mask(theta: Float[Array, "*batch n"], k: int) -> Float[Array, "*batch n"]:
    """k-hot indicator of the k largest entries of the last axis.

    **Arguments:**

    - `theta`: scores, shape `(*batch, n)`.
    - `k`: how many entries to select, `1 <= k <= n`.

    **Returns:**

    A 0/1 array of `theta`'s shape and dtype with k ones per row (lowest index first
    on ties).

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import top_k_mask

    top_k_mask(jnp.array([0.3, -1.0, 2.0]), 2)  # [1., 0., 1.]
    ```
    """
    n = theta.shape[-1]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(
            f"k must be an int with 1 <= k <= {n} (theta.shape[-1]), got {k!r}"
        )
    _, idx = jax.lax.top_k(theta, k)
    return jnp.sum(jax.nn.one_hot(idx, n, dtype=theta.dtype), axis=-2)
