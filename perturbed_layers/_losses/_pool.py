"""A fixed-capacity pool of feasible solutions that lives in the training state."""

import functools
import math
from typing import Any, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Bool, Float, Int

from .._custom_types import DType, Shape

WhenFull = Literal["fifo", "keep"]


@jax.jit
def pool_objectives(theta: Array, solutions: Array) -> Array:
    """⟨θ_b, s_j⟩ for a flat batch θ (B, *event) and solutions (C, *event): (B, C).

    As `_common.inner`, an infinite θ entry where s_j is 0 (a graph's missing arc) is
    skipped rather than give 0·inf = NaN; where s_j is non-zero it makes the
    objective ±inf. The derivative in θ is s_j (0 at the skipped entries)."""
    d = math.prod(solutions.shape[1:])
    theta = theta.reshape(theta.shape[0], d)
    flat = solutions.reshape(solutions.shape[0], d).astype(theta.dtype)
    inf = jnp.isinf(theta)
    value = jnp.where(inf, 0, theta) @ flat.T
    used = (flat != 0).astype(theta.dtype).T
    up = (jnp.isposinf(theta).astype(theta.dtype) @ used) > 0
    down = (jnp.isneginf(theta).astype(theta.dtype) @ used) > 0
    return value + jnp.where(up, jnp.inf, 0) - jnp.where(down, jnp.inf, 0)


@functools.partial(jax.jit, static_argnames=("tol", "fifo"))
def _merge(
    solutions: Array, size: Array, new: Array, ok: Array, *, tol: float, fifo: bool
) -> tuple[Array, Array]:
    """`SolutionPool.add` on arrays (compiled once per shape, also when called
    eagerly): the new rows `ok` and not within `tol` of a stored or an earlier kept
    one, appended in order; past capacity the oldest go (`fifo`) or the new ones."""
    n, capacity = new.shape[0], solutions.shape[0]
    flat_new = new.reshape(n, -1)
    flat_old = solutions.reshape(capacity, -1)
    valid = jnp.arange(capacity) < size
    # One solution at a time keeps the memory at (capacity, d), not (n, capacity, d).
    near_old = jax.lax.map(
        lambda s: jnp.any((jnp.sum(jnp.abs(flat_old - s), axis=1) <= tol) & valid),
        flat_new,
    )
    near_new = jax.lax.map(
        lambda s: jnp.sum(jnp.abs(flat_new - s), axis=1) <= tol, flat_new
    )
    first = ok & ~near_old
    earlier = jnp.tril(jnp.ones((n, n), bool), k=-1)
    keep = first & ~jnp.any(near_new & earlier & first[None, :], axis=1)
    # The kept rows first, in their order; then everything else.
    order = jnp.argsort(~keep, stable=True)
    total = size + jnp.sum(keep, dtype=jnp.int32)
    shift = jnp.maximum(total - capacity, 0) if fifo else jnp.zeros((), jnp.int32)
    new_size = jnp.minimum(total, capacity).astype(jnp.int32)
    # Row j of the new pool is row j + shift of [stored..., kept new...].
    source = jnp.arange(capacity, dtype=jnp.int32) + shift
    from_old = jnp.take(solutions, jnp.minimum(source, capacity - 1), axis=0)
    from_new = jnp.take(new[order], jnp.clip(source - size, 0, n - 1), axis=0)
    pick = (source < size).reshape((-1,) + (1,) * (solutions.ndim - 1))
    rows = jnp.where(pick, from_old, from_new)
    live = (jnp.arange(capacity) < new_size).reshape(pick.shape)
    return jnp.where(live, rows, 0), new_size


@functools.partial(jax.jit, static_argnames=("sign",))
def _best(solutions: Array, size: Array, theta: Array, sign: int) -> Array:
    """Per row of a flat θ (B, *event), the stored solution of least sign·⟨θ, s⟩."""
    value = sign * pool_objectives(theta, solutions)
    value = jnp.where(jnp.arange(solutions.shape[0]) < size, value, jnp.inf)
    chosen = jnp.take(solutions, jnp.argmin(value, axis=-1), axis=0)
    return jnp.where(size > 0, chosen.astype(theta.dtype), 0)


def _as_size(size: Any) -> Any:
    size = jnp.asarray(size)
    if jnp.issubdtype(size.dtype, jnp.integer):
        return size.astype(jnp.int32)
    return size  # refused by the check


class SolutionPool(eqx.Module):
    r"""A pool of feasible solutions of fixed capacity, as arrays: it can be carried
    in a training state, updated inside `jax.jit`, and saved with
    `eqx.tree_serialise_leaves`.

    `solutions[:size]` are the stored solutions, oldest first; the remaining rows are
    zeros and never read. `add` appends the new solutions that are not already
    there (two solutions are the same when their L1 distance is at most
    `tolerance`), and, once the pool is full, either evicts the oldest (`"fifo"`) or
    ignores the new ones (`"keep"`). Capacity, instance shape and dtype are fixed
    when the pool is made, so a jit-compiled step that updates it compiles once.

    **Arguments:**

    - `solutions`: `(capacity, *event)` floating array; rows `size:` are unused.
    - `size`: int32 scalar array, the number of stored solutions.
    - `when_full`: `"fifo"` (default: the oldest solution makes room for a new one)
        or `"keep"` (a full pool ignores new solutions).
    - `tolerance`: the L1 distance at or below which two solutions are one; `None`
        (default) takes PyEPO's `min(1e-4·d, 0.1)`, d the number of entries: 0/1
        solutions never merge, a first-order LP solver's near-identical vertices do.

    Usually made with `SolutionPool.empty` or `SolutionPool.from_solutions`.

    **Example:**

    ```python
    import jax.numpy as jnp
    import perturbed_layers as pl

    paths = jnp.array([[1.0, 1, 0, 0, 0], [0, 0, 1, 1, 0], [1, 1, 0, 0, 0]])
    pool = pl.SolutionPool.from_solutions(paths, capacity=4)  # size 2: one duplicate
    pool = pool.add(jnp.array([[0.0, 0, 0, 0, 1]]))  # size 3
    costs = jnp.array([[1.0, 1.0, 0.5, 0.5, 3.0]])
    best = pool.best(costs, objective="min")  # [[0, 0, 1, 1, 0]]
    ```
    """

    solutions: Float[Array, " capacity *event"] = eqx.field(converter=jnp.asarray)
    size: Int[Array, ""] = eqx.field(converter=_as_size)
    when_full: WhenFull = eqx.field(default="fifo", static=True, kw_only=True)
    tolerance: float | None = eqx.field(default=None, static=True, kw_only=True)

    def __check_init__(self):
        if self.solutions.ndim < 1 or self.solutions.shape[0] < 1:
            raise ValueError(
                "SolutionPool: solutions must have shape (capacity, *event) with "
                f"capacity >= 1, got shape {self.solutions.shape}"
            )
        if not jnp.issubdtype(self.solutions.dtype, jnp.floating):
            raise TypeError(
                "SolutionPool: solutions must be a floating-point array, got "
                f"{self.solutions.dtype}"
            )
        if jnp.shape(self.size) != () or not jnp.issubdtype(
            jnp.result_type(self.size), jnp.integer
        ):
            raise TypeError(
                f"SolutionPool: size must be an integer scalar, got {self.size!r}"
            )
        if self.when_full not in ("fifo", "keep"):
            raise ValueError(
                f"SolutionPool: when_full must be 'fifo' or 'keep', got "
                f"{self.when_full!r}"
            )
        if self.tolerance is not None and not (
            isinstance(self.tolerance, int | float) and self.tolerance >= 0
        ):
            raise ValueError(
                "SolutionPool: tolerance must be a non-negative number or None, got "
                f"{self.tolerance!r}"
            )

    @classmethod
    def empty(
        cls,
        capacity: int,
        event_shape: Shape,
        dtype: DType = jnp.float32,
        *,
        when_full: WhenFull = "fifo",
        tolerance: float | None = None,
    ) -> "SolutionPool":
        """An empty pool for `capacity` solutions of shape `event_shape`."""
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be a positive integer, got {capacity!r}")
        solutions = jnp.zeros((capacity, *tuple(event_shape)), dtype)
        return cls(
            solutions,
            jnp.zeros((), jnp.int32),
            when_full=when_full,
            tolerance=tolerance,
        )

    @classmethod
    def from_solutions(
        cls,
        solutions: ArrayLike,
        capacity: int | None = None,
        *,
        when_full: WhenFull = "fifo",
        tolerance: float | None = None,
    ) -> "SolutionPool":
        """A pool holding `solutions` `(n, *event)` without duplicates (PyEPO seeds
        its pool with the training set's true solutions), of capacity `capacity`
        (default n; past it, `when_full` decides which stay). A floating dtype is
        kept; other dtypes become float32."""
        solutions = jnp.asarray(solutions)
        if solutions.ndim < 2:
            raise ValueError(
                "solutions must have shape (n, *event), one solution per row, got "
                f"shape {solutions.shape}"
            )
        if not jnp.issubdtype(solutions.dtype, jnp.floating):
            solutions = solutions.astype(jnp.float32)
        if capacity is None:
            capacity = max(solutions.shape[0], 1)
        pool = cls.empty(
            capacity,
            solutions.shape[1:],
            solutions.dtype,
            when_full=when_full,
            tolerance=tolerance,
        )
        return pool.add(solutions)

    @property
    def capacity(self) -> int:
        return self.solutions.shape[0]

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.solutions.shape[1:])

    @property
    def valid(self) -> Bool[Array, " capacity"]:
        """Which rows of `solutions` are stored solutions."""
        return jnp.arange(self.capacity) < self.size

    def _tolerance(self) -> float:
        if self.tolerance is not None:
            return float(self.tolerance)
        return min(1e-4 * math.prod(self.event_shape), 0.1)

    def add(
        self,
        new_solutions: Float[ArrayLike, " n *event"],
        where: Bool[ArrayLike, " n"] | None = None,
    ) -> "SolutionPool":
        """A new pool with the rows of `new_solutions` that are not yet in it.

        A row is skipped if `where` is false for it, if it has a non-finite entry, if
        it is within `tolerance` of a stored solution or of an earlier row of this
        call. The rest are appended in order; past capacity the oldest are evicted
        (`"fifo"`) or the new ones dropped (`"keep"`). Static shapes throughout: it
        runs under `jax.jit`, and its cost is one (n, capacity) distance matrix.
        """
        new = jnp.asarray(new_solutions)
        if new.ndim != self.solutions.ndim or new.shape[1:] != self.event_shape:
            raise ValueError(
                "new_solutions must have shape (n, *event) with the pool's event "
                f"shape {self.event_shape}, got shape {new.shape}"
            )
        new = jax.lax.stop_gradient(new.astype(self.solutions.dtype))
        n = new.shape[0]
        if n == 0:
            return self
        ok = jnp.all(jnp.isfinite(new.reshape(n, -1)), axis=1)
        if where is not None:
            where = jnp.asarray(where)
            if where.shape != (n,):
                raise ValueError(
                    f"where must have shape ({n},), one flag per new solution, got "
                    f"shape {where.shape}"
                )
            ok = ok & where.astype(bool)
        solutions, size = _merge(
            self.solutions,
            self.size,
            new,
            ok,
            tol=self._tolerance(),
            fifo=self.when_full == "fifo",
        )
        return SolutionPool(
            solutions, size, when_full=self.when_full, tolerance=self.tolerance
        )

    def objectives(self, theta: Float[ArrayLike, "..."]) -> Array:
        """⟨θ, s⟩ for every instance of θ and every row s of `solutions`:
        `(*batch, capacity)`; rows past `size` are meaningless (see `valid`)."""
        theta = self._check_theta(theta)
        batch = theta.shape[: theta.ndim - len(self.event_shape)]
        flat = theta.reshape(-1, *self.event_shape)
        value = pool_objectives(flat, self.solutions)
        return value.reshape(*batch, self.capacity)

    def best(
        self,
        theta: Float[ArrayLike, "..."],
        objective: Literal["max", "min"],
    ) -> Float[Array, "..."]:
        """Per instance, the stored solution with the best objective ⟨θ, s⟩: the
        smallest for costs (`objective="min"`), the largest for scores (`"max"`);
        the first on ties. An empty pool returns zeros (there is nothing to pick)."""
        if objective not in ("max", "min"):
            raise ValueError(f"objective must be 'max' or 'min', got {objective!r}")
        theta = self._check_theta(theta)
        flat = theta.reshape(-1, *self.event_shape)
        sign = 1 if objective == "min" else -1
        return _best(self.solutions, self.size, flat, sign).reshape(theta.shape)

    def _check_theta(self, theta: Any) -> Array:
        theta = jnp.asarray(theta)
        event = self.event_shape
        if theta.ndim < len(event) or theta.shape[theta.ndim - len(event) :] != event:
            raise ValueError(
                f"theta must end with the pool's event shape {event}, got shape "
                f"{theta.shape}"
            )
        return theta
