"""PyEPO's `solve_ratio` under jit: solve a fraction of a batch exactly, answer the
rest from a solution pool, and grow the pool with what was solved."""

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._checks import error_if_any
from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._common import bad_instances, check_linear_layer, solve, times, unflatten
from ._pool import SolutionPool


def check_ratio(value: object) -> float:
    """`solve_ratio` as a float in [0, 1], or a ValueError naming it."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not 0 <= float(value) <= 1
    ):
        raise ValueError(f"solve_ratio must be a number in [0, 1], got {value!r}")
    return float(value)


def check_pool(pool: Any, event: tuple[int, ...], name: str = "pred") -> SolutionPool:
    """`pool` must be a `SolutionPool` whose solutions have the instances' shape."""
    if not isinstance(pool, SolutionPool):
        raise TypeError(
            "pool must be a pl.SolutionPool (pl.SolutionPool.empty(capacity, "
            f"event_shape) or pl.SolutionPool.from_solutions(...)), got "
            f"{type(pool).__name__}"
        )
    if pool.event_shape != tuple(event):
        raise ValueError(
            f"pool holds solutions of shape {pool.event_shape}, but the instances of "
            f"{name} have shape {tuple(event)} (pool.solutions.shape="
            f"{pool.solutions.shape})"
        )
    return pool


def _solve_some(
    layer: AbstractPerturbed, flat: Array, flat_args: Any, count: int, order: Array
) -> tuple[Array, Array]:
    """Solve the instances `order[:count]` exactly: (solutions, solved) of the whole
    batch, zeros and False elsewhere. `count` is static, so only `count` solves run."""
    size = flat.shape[0]
    if count == 0:
        return jnp.zeros_like(flat), jnp.zeros((size,), bool)
    if count == size:
        return solve(layer, flat, flat_args), jnp.ones((size,), bool)
    chosen = order[:count]
    some = solve(layer, flat[chosen], jax.tree.map(lambda a: a[chosen], flat_args))
    exact = jnp.zeros_like(flat).at[chosen].set(some)
    return exact, jnp.zeros((size,), bool).at[chosen].set(True)


def solve_with_pool(
    layer: AbstractPerturbed,
    theta: Float[Array, "..."],
    pool: SolutionPool,
    args: Any = None,
    *,
    solve_ratio: float = 1.0,
    key: Key | None = None,
) -> tuple[Float[Array, "..."], SolutionPool]:
    r"""Solve a fraction `solve_ratio` of the instances exactly, add their solutions to
    the pool, and answer the others with the pool's best solution.

    For a batch of B instances, r·B of them on average are solved with the layer's
    exact `solve`: ⌊r·B⌋ or ⌊r·B⌋ + 1 instances, the latter with probability
    r·B − ⌊r·B⌋, chosen uniformly from `key`. Their solutions are added to the pool
    (`SolutionPool.add`: duplicates skipped), and every other instance gets
    `pool.best(θ)` over the updated pool: argmin ⟨c, s⟩ for costs
    (`objective="min"`), argmax ⟨θ, s⟩ for scores.

    **Cost.** The number of solves is static within each of the two cases, so only
    those instances are solved (a gather, the solver on ⌊r·B⌋ or ⌊r·B⌋ + 1 rows, a
    scatter); `lax.cond` picks the case, so on CPU and GPU only one runs. Under
    `jax.vmap` a `lax.cond` becomes a select and both run: about r·B + 1 + ⌊r·B⌋
    solves instead of B. The pool's part is an (B, capacity) objective matrix and
    the deduplication's distances, small beside most solvers.

    **Differences from PyEPO.** PyEPO draws once per batch: with probability r the
    whole batch is solved, else none of it. Here every batch solves about r·B
    instances, so the solver time per step is even. PyEPO's pool grows without
    bound on the host; this one has a fixed capacity (see `pl.SolutionPool`).

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only
        its exact `solve` is used.
    - `theta`: costs (scores for a maximising layer), `(*batch, *event)`; no
        derivative flows through (the outputs are solutions).
    - `pool`: a `pl.SolutionPool` of the instances' shape.
    - `args`: per-instance problem data for the solver, batched like `theta`. The
        pool's solutions must be feasible for every instance answered from it:
        PyEPO's setting, where the feasible set is shared and only the costs vary.
    - `solve_ratio`: the fraction r ∈ [0, 1] solved exactly (a Python number: it
        fixes how many solves are compiled).
    - `key`: a `jax.random` key, required when 0 < r·B < B.

    **Returns:**

    `(solutions, pool)`: the solutions, of `theta`'s shape (NaN rows for instances
    with a NaN θ), and the updated pool.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    pool = pl.SolutionPool.from_solutions(jnp.eye(3)[:2], capacity=3)
    theta = jnp.array([[0.0, 1.0, 2.0], [3.0, 0.0, 1.0]])
    y, pool = pl.solve_with_pool(layer, theta, pool, solve_ratio=0.5,
                                 key=jax.random.key(0))
    # one row solved exactly (and added if new), the other the pool's best
    ```

    **Reference:** Tang, Khalil, *PyEPO: a PyTorch-based end-to-end
    predict-then-optimize library*, Math. Prog. Comp. 2024 (`solve_ratio`);
    Mulamba et al., IJCAI 2021 (the pool as a cheap stand-in for the solver).
    """
    check_linear_layer("solve_with_pool", layer)
    ratio = check_ratio(solve_ratio)
    flat, flat_args, batch = layer.split_batch(theta, args)
    flat = jax.lax.stop_gradient(flat)
    pool = check_pool(pool, flat.shape[1:], name="theta")
    size = flat.shape[0]
    expected = ratio * size
    low = math.floor(expected)
    high_probability = expected - low
    random = 0 < expected < size
    if random and key is None:
        raise RuntimeError(
            f"solve_with_pool needs a PRNG key to choose which instances to solve "
            f"(solve_ratio={ratio} of a batch of {size}): pass key=..."
        )
    order, count_key = jnp.arange(size), None
    if random:
        assert key is not None
        order_key, count_key = jax.random.split(key)
        order = jax.random.permutation(order_key, size)
    if count_key is not None and high_probability > 0:
        exact, solved = jax.lax.cond(
            jax.random.bernoulli(count_key, high_probability),
            lambda: _solve_some(layer, flat, flat_args, low + 1, order),
            lambda: _solve_some(layer, flat, flat_args, low, order),
        )
    else:
        exact, solved = _solve_some(layer, flat, flat_args, low, order)
    usable = jnp.isfinite(bad_instances(layer, flat))
    pool = pool.add(exact, where=solved & usable)
    best = pool.best(flat, layer.objective)  # pyright: ignore[reportArgumentType]
    answer = jnp.where(solved.reshape((-1,) + (1,) * (flat.ndim - 1)), exact, best)
    answer = times(bad_instances(layer, flat), answer.astype(flat.dtype))
    return unflatten(answer, batch), pool


def pool_is_empty_error(values: Array, pool: SolutionPool, owner: str) -> Array:
    """`values`, with a runtime error if the pool holds no solution."""
    return error_if_any(
        values,
        pool.size <= 0,
        f"{owner}: the solution pool is empty; seed it with "
        "pl.SolutionPool.from_solutions(true solutions) or use value_and_pool with "
        "solve_ratio > 0",
    )
