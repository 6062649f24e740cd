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
    return jax.nn.one_hot(
        jnp.argmax(theta, axis=-1), theta.shape[-1], dtype=theta.dtype
    )
