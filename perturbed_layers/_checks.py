"""Runtime checks of solver inputs and results that stay cheap on sharded batches."""

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike


def error_if_any(x: Array, pred: ArrayLike, msg: str) -> Array:
    """`x`, with an error (`eqx.error_if`) raised if any element of `pred` is true.

    The check runs on a scalar that is then added to `x`, rather than on `x` itself:
    `eqx.error_if` passes its operand through a conditional whose error branch is a
    host callback, which XLA places on one device, and on a batch sharded over
    devices it would then replicate all of `x` across them to pass it through.
    """
    token = eqx.error_if(jnp.zeros((), x.dtype), jnp.any(pred), msg)
    return x + token
