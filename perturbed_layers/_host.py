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


def _call_on_host(fn, event_ndim, out_event, out_dtype, args_ndim, x, args):
    # Every leading axis, from explicit batch axes or from `jax.vmap`, is one instance;
    # args leaves that a vmap did not map come with size-1 axes: broadcast them.
    x = np.asarray(x)
    batch = x.shape[: x.ndim - event_ndim]
    flat = x.reshape(-1, *x.shape[x.ndim - event_ndim :])
    # An instance with a NaN never reaches `fn` (it could pick the NaN, or fail): it
    # is solved as zeros and its output is NaN.
    bad = np.isnan(flat).reshape(flat.shape[0], -1).any(axis=1)
    if bad.any():
        flat = np.where(bad.reshape((-1,) + (1,) * (flat.ndim - 1)), 0, flat)
    if args is None:
        y = np.asarray(fn(flat))
    else:

        def one(leaf, nd):
            leaf = np.asarray(leaf)
            event = leaf.shape[leaf.ndim - nd :]
            return np.broadcast_to(leaf, (*batch, *event)).reshape(-1, *event)

        leaves, tree = jax.tree_util.tree_flatten(args)
        y = np.asarray(fn(flat, tree.unflatten(map(one, leaves, args_ndim))))
    if y.shape != (flat.shape[0], *out_event):
        raise ValueError(
            f"host solver {fn!r} returned shape {y.shape} for a batch of shape "
            f"{flat.shape}; expected {(flat.shape[0], *out_event)}"
        )
    y = y.astype(out_dtype, copy=bool(bad.any()))
    if bad.any():
        if not np.issubdtype(y.dtype, np.floating):
            raise ValueError(
                f"host solver {fn!r} was given a NaN input and has a non-float output "
                f"dtype {y.dtype}, which cannot carry the NaN"
            )
        y[bad] = np.nan
    return y.reshape(*batch, *out_event)


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

    def __call__(self, x: Array, args: Any = None) -> Array:
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
        if args is not None:
            args = jax.tree.map(jnp.asarray, args)
            for leaf in jax.tree.leaves(args):
                if leaf.shape[: len(batch)] != batch:
                    raise ValueError(
                        "every leaf of args must have x's batch axes "
                        f"{batch} in front, got a leaf of shape {leaf.shape}"
                    )
            args_ndim = tuple(leaf.ndim - len(batch) for leaf in jax.tree.leaves(args))
            args = lax.stop_gradient(args)
        else:
            args_ndim = ()
        callback = functools.partial(
            _call_on_host, self.fn, event_ndim, out_event, out_dtype, args_ndim
        )
        return jax.pure_callback(
            callback,
            jax.ShapeDtypeStruct((*batch, *out_event), out_dtype),
            lax.stop_gradient(x),
            args,
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
    flattened into `N`) and returns an array-like of shape `(N, *out_event)`. Called
    with problem data, `solver(x, args)`, it gets `fn(x, args)` with every leaf of
    `args` as a NumPy array of shape `(N, ...)`, row i the data of instance i (data a
    `jax.vmap` did not map is repeated), still in one callback for all instances.
    An instance with a NaN input is not passed to `fn`: its output is NaN (an error
    for a non-float `out_dtype`). The result
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
