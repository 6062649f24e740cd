"""One-hot argmax: the maximiser of ⟨y, θ⟩ over the vertices of the simplex."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def argmax_one_hot(theta: Float[Array, "*batch n"]) -> Float[Array, "*batch n"]:
    """One-hot indicator of the largest entry of the last axis (first one on ties).

    **Arguments:**

    - `theta`: scores to maximise, shape `(*batch, n)`.

    **Returns:**

    An array of `theta`'s shape and dtype with a single 1 per row.

    ```python
    import jax.numpy as jnp
    from perturbed_layers.solvers import argmax_one_hot

    argmax_one_hot(jnp.array([0.1, 2.0, -1.0]))  # [0., 1., 0.]
    ```
    """
    # Max, then the first position that attains it. Same result as jnp.argmax, but
    # XLA:CPU fuses an argmax reduction with its producer (the noise transform of a
    # perturbed layer) and recomputes it: measured 1.6x slower per perturbed call.
    n = theta.shape[-1]
    is_max = theta == jnp.max(theta, axis=-1, keepdims=True)
    first = jnp.min(jnp.where(is_max, jnp.arange(n), n), axis=-1)
    return jax.nn.one_hot(first, n, dtype=theta.dtype)
