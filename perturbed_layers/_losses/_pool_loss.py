"""What the solution-pool losses (NCE, CMAP, learning to rank) share: checking the
inputs, the objectives of the pool's solutions, and refreshing the pool."""

import abc
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._common import bad_instances, check_like, check_linear_layer, times, unflatten
from ._pool import SolutionPool, pool_objectives
from ._solve_ratio import check_pool, pool_is_empty_error, solve_with_pool

# A flat batch of instances (costs, solutions), and one number per instance.
Instances = Float[Array, " B *event"]
PerInstance = Float[Array, " B"]


class OnPool(NamedTuple):
    """The pool as a pool loss sees it for a flat batch of B predictions."""

    solutions: Float[Array, " C *event"]
    # ⟨pred, s⟩ for each row s of `solutions`, per instance.
    objectives: Float[Array, "B C"]
    # Which rows are stored, and how many.
    valid: Bool[Array, " C"]
    count: Array

    def mean(self, x: Float[Array, "B C"]) -> PerInstance:
        """The mean of `x` over the stored solutions (axis 1)."""
        return jnp.sum(jnp.where(self.valid, x, 0), axis=1) / jnp.maximum(self.count, 1)


class AbstractPoolLoss(eqx.Module):
    """A loss of predicted costs (or scores) that compares them on the solutions of a
    `pl.SolutionPool`: NCE, CMAP and the learning-to-rank losses.

    `loss(pred, target, pool, args)` evaluates it on the pool as given;
    `loss.value_and_pool(pred, target, pool, args, key=key)` first refreshes the pool
    as PyEPO does (the predicted costs of a fraction `solve_ratio` of the instances
    are solved exactly and their solutions added, see `pl.solve_with_pool`) and
    returns the loss on the refreshed pool with the new pool, for
    `eqx.filter_value_and_grad(..., has_aux=True)`.
    """

    layer: eqx.AbstractVar[AbstractPerturbed]
    solve_ratio: eqx.AbstractVar[float]
    # What the second argument is: "y_true" (a solution) or "costs_true".
    target_name: eqx.AbstractClassVar[str]
    owner: eqx.AbstractClassVar[str]

    def __check_init__(self):
        check_linear_layer(self.owner, self.layer)

    @abc.abstractmethod
    def _loss(self, pred: Instances, target: Instances, pool: OnPool) -> PerInstance:
        """The loss per instance on a flat batch, for costs (`objective="min"`)."""

    def __call__(
        self,
        pred: Float[Array, "..."],
        target: Float[Array, "..."],
        pool: SolutionPool,
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance, an array of the batch shape, on `pool` as it is.

        **Arguments:**

        - `pred`: predicted costs (scores for a maximising layer), `(*batch, *event)`.
        - `target`: `y_true`, the true optimal solutions (NCE, CMAP), or `costs_true`,
            the true costs or scores (learning to rank); of `pred`'s shape; no
            derivative flows into it.
        - `pool`: a `pl.SolutionPool` of solutions of the instances' shape (at least
            one stored: an empty pool is a runtime error).
        - `args`: per-instance problem data for the solver, batched like `pred`; only
            `value_and_pool` solves, but `args` is checked against the batch here too.
        - `key`: ignored (the pool losses are exact); accepted so that every loss is
            called alike.
        """
        del key
        pred = jnp.asarray(pred)
        flat, _, batch = self.layer.split_batch(pred, args, name="pred")
        target = check_like(self.target_name, target, "pred", pred).reshape(flat.shape)
        target = jax.lax.stop_gradient(target)
        pool = check_pool(pool, flat.shape[1:])
        solutions = jax.lax.stop_gradient(pool.solutions.astype(flat.dtype))
        sign = 1 if self.layer.objective == "min" else -1
        # A maximising layer's loss is the minimising one's on the costs −θ.
        value = self._loss(
            sign * flat,
            sign * target if self.target_name == "costs_true" else target,
            OnPool(
                solutions,
                pool_objectives(sign * flat, solutions),
                pool.valid,
                pool.size,
            ),
        )
        mask = bad_instances(self.layer, flat)
        if self.target_name == "costs_true":
            mask = mask * bad_instances(self.layer, target)
        value = pool_is_empty_error(times(mask, value), pool, self.owner)
        return unflatten(value, batch)

    def value_and_pool(
        self,
        pred: Float[Array, "..."],
        target: Float[Array, "..."],
        pool: SolutionPool,
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> tuple[Float[Array, "*batch"], SolutionPool]:
        """Refresh the pool with the solutions of `pred` (a fraction `solve_ratio`
        of the instances, chosen from `key`: `pl.solve_with_pool`), then evaluate
        the loss on the new pool: `(values, new_pool)`. Arguments as `__call__`;
        `key` is required when `0 < solve_ratio·B < B`."""
        _, new_pool = solve_with_pool(
            self.layer,
            jax.lax.stop_gradient(jnp.asarray(pred)),
            pool,
            args,
            solve_ratio=self.solve_ratio,
            key=key,
        )
        return self(pred, target, new_pool, args), new_pool
