"""Black-box solvers that run on the host (NumPy, SciPy, …) inside JAX programs."""

import functools
from collections.abc import Callable, Hashable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jaxtyping import Array

OutShape = tuple[int, ...] | Callable[[tuple[int, ...]], tuple[int, ...]] | None


def _call_on_host(fn, event_ndim, out_event, out_dtype, x):
    # Every leading axis, from explicit batch axes or from `jax.vmap`, is one instance.
    x = np.asarray(x)
    batch = x.shape[: x.ndim - event_ndim]
    flat = x.reshape(-1, *x.shape[x.ndim - event_ndim :])
    y = np.asarray(fn(flat))
    if y.shape != (flat.shape[0], *out_event):
        raise ValueError(
            f"host solver {fn!r} returned shape {y.shape} for a batch of shape "
            f"{flat.shape}; expected {(flat.shape[0], *out_event)}"
        )
    return y.astype(out_dtype, copy=False).reshape(*batch, *out_event)


class HostSolver(eqx.Module):
    """A NumPy solver of batches, as a JAX function of one instance. See `host_solver`."""

    fn: Callable[[np.ndarray], Any] = eqx.field(static=True)
    event_ndim: int | None = eqx.field(static=True)
    out_shape: OutShape = eqx.field(static=True)
    out_dtype: Any = eqx.field(static=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {self.fn!r}")
        if not isinstance(self.fn, Hashable):
            raise TypeError(f"fn must be hashable (a static field), got {self.fn!r}")
        if self.event_ndim is not None and (
            not isinstance(self.event_ndim, int) or self.event_ndim < 0
        ):
            raise ValueError(f"event_ndim must be an int >= 0, got {self.event_ndim!r}")

    def __call__(self, x: Array) -> Array:
        x = jnp.asarray(x)
        event_ndim = x.ndim if self.event_ndim is None else self.event_ndim
        if x.ndim < event_ndim:
            raise ValueError(
                f"x must have at least event_ndim={event_ndim} axes, got shape {x.shape}"
            )
        batch, event = x.shape[: x.ndim - event_ndim], x.shape[x.ndim - event_ndim :]
        if self.out_shape is None:
            out_event = event
        elif callable(self.out_shape):
            out_event = tuple(self.out_shape(event))
        else:
            out_event = tuple(self.out_shape)
        out_dtype = x.dtype if self.out_dtype is None else jnp.dtype(self.out_dtype)
        callback = functools.partial(
            _call_on_host, self.fn, event_ndim, out_event, out_dtype
        )
        return jax.pure_callback(
            callback,
            jax.ShapeDtypeStruct((*batch, *out_event), out_dtype),
            lax.stop_gradient(x),
            vmap_method="expand_dims",
        )


def host_solver(
    fn: Callable[[np.ndarray], Any],
    *,
    out_shape: OutShape = None,
    out_dtype: Any = None,
    event_ndim: int | None = None,
) -> HostSolver:
    """Wrap a NumPy/SciPy solver of batches as a JAX function of one instance.

    `fn` receives a NumPy array of shape `(N, *event)` holding every instance of one call
    (all the leading axes of a `jax.vmap`, nested or not, and any batch axes are
    flattened into `N`) and returns an array-like of shape `(N, *out_event)`. The result
    is a hashable, callable `HostSolver` that runs `fn` in a single `jax.pure_callback`,
    so it works under `jax.jit` and `jax.vmap` and can be stored as a static field of an
    Equinox module, e.g. as the solver of a perturbed layer. Its gradient is zero (the
    input passes through `lax.stop_gradient`), as for any piecewise-constant solver.

    **Arguments:**

    - `fn`: the host solver, batched over its first axis. It must be hashable (a
        module-level function or a frozen dataclass instance): two `HostSolver`s compare
        equal, and share compiled code, iff their fields do. Exceptions it raises surface
        as runtime errors of the JAX program.
    - `out_shape`: the output shape of one instance: `None` for the input's (a cost
        vector to an indicator of its shape), a tuple, or a function of the input's.
    - `out_dtype`: the output dtype; `None` for the input's.
    - `event_ndim`: the number of trailing axes of one instance; `None` means the whole
        input is one instance. Given, extra leading axes are solved as a batch.

    **Returns:**

    A `HostSolver`; calling it on an array of the instance shape returns the solution.

    ```python
    import jax
    import jax.numpy as jnp
    import numpy as np
    from perturbed_layers import host_solver

    def one_hot_argmax(theta):  # (N, n) -> (N, n), on the host
        return np.eye(theta.shape[1])[np.argmax(theta, axis=1)]

    solver = host_solver(one_hot_argmax)
    jax.jit(jax.vmap(solver))(jnp.array([[0.1, 2.0], [3.0, -1.0]]))
    # [[0., 1.], [1., 0.]]: one host call for both rows
    ```
    """
    return HostSolver(fn, event_ndim, out_shape, out_dtype)
