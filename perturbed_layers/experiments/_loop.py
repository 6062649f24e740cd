"""The training loop's compiled parts: one step, several steps in one call, an epoch.

**One compiled step.** `train_step` (model → θ, loss through the perturbed layer, its
gradient, the optax update) is one `eqx.filter_jit` function, or with
`training.steps_per_call > 1` a `fori_loop` over it (`train_steps`), compiled once per
run: batches have one static shape (the last partial batch of an epoch is dropped), each
epoch's batches are placed on the devices at once, and a call receives only the range
of steps to run. Fewer, longer calls save the per-call dispatch, which dominates for
small models (but XLA:CPU runs convolutions several times slower inside the loop);
every step's loss still reaches the progress bar and the divergence check.

**Training state.** Parameters, optimiser state and the loss's state: for a loss over
a solution pool (NCE, CMAP, learning to rank) the `pl.SolutionPool`, a fixed-capacity
array seeded with the training set's target solutions before epoch 0 and refreshed
inside the compiled step; for AI-MLE its adapted step size, measured in the backward
pass. It is carried by the `fori_loop` and saved in every checkpoint. Other losses
carry `None` in its place.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray

from . import _parallel as parallel
from ._tasks import AbstractMeasuringLoss, AbstractStatefulLoss, Batch, Loss


class State(NamedTuple):
    """What training changes: the model, the optimiser state, the loss's state (a
    solution pool, AI-MLE's step size; `None` for a loss without)."""

    model: Any
    opt_state: Any
    loss_state: Any


@eqx.filter_jit
def train_step(
    model: Any,
    opt_state: Any,
    loss_state: Any,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    batches: Batch,
    step: ArrayLike,
    key: PRNGKeyArray,
) -> tuple[Any, Any, Any, Array]:
    """One step on the batch `batches[step]` (of an epoch's `(steps, batch, ...)`
    batches): mean loss, gradient, update. The noise key is `fold_in(key, step)`.

    `loss_state` is the state of an `AbstractStatefulLoss` (a solution pool, which
    the loss refreshes; AI-MLE's step size, which the loss's backward pass
    measures), returned updated; `None` for any other loss."""
    batch = jax.tree.map(lambda a: a[step], batches)
    key = jax.random.fold_in(key, step)

    def mean_loss(model, loss_state):
        theta = jax.vmap(model)(batch.x)
        if isinstance(loss, AbstractStatefulLoss):
            values, new_state = loss.value_and_state(theta, batch, loss_state, key=key)
            return jnp.mean(values), new_state
        return jnp.mean(loss(theta, batch, key=key)), None

    if isinstance(loss, AbstractMeasuringLoss):
        grad = eqx.filter_value_and_grad(lambda both: mean_loss(*both), has_aux=True)
        (value, new_state), (grads, measured) = grad((model, loss_state))
        loss_state = loss.next_state(new_state, measured)
    else:
        grad = eqx.filter_value_and_grad(mean_loss, has_aux=True)
        (value, loss_state), grads = grad(model, loss_state)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, loss_state, value


@eqx.filter_jit
def train_steps(
    model: Any,
    opt_state: Any,
    loss_state: Any,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    batches: Batch,
    start: ArrayLike,
    stop: ArrayLike,
    key: PRNGKeyArray,
    losses: Float[ArrayLike, " steps"],
) -> tuple[Any, Any, Any, Float[Array, " steps"]]:
    """Steps `start, …, stop − 1` of an epoch in one call (a `fori_loop` of
    `train_step`, the loss's state in its carry; `start` and `stop` are traced, so
    one compilation serves every call). `losses[step]` receives each step's loss."""
    arrays, static = eqx.partition(model, eqx.is_array)

    def body(step, carry):
        arrays, opt_state, loss_state, losses = carry
        model = eqx.combine(arrays, static)
        model, opt_state, loss_state, value = train_step(
            model, opt_state, loss_state, loss, optimizer, batches, step, key
        )
        arrays = eqx.filter(model, eqx.is_array)
        return arrays, opt_state, loss_state, losses.at[step].set(value)

    carry = (arrays, opt_state, loss_state, jnp.asarray(losses))
    arrays, opt_state, loss_state, filled = jax.lax.fori_loop(start, stop, body, carry)
    return eqx.combine(arrays, static), opt_state, loss_state, filled


@eqx.filter_jit
def _set(losses: Float[ArrayLike, " steps"], step: ArrayLike, value: Array) -> Array:
    return jnp.asarray(losses).at[step].set(value)


def run_epoch(
    state: State,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    train_rows: Batch,
    order: np.ndarray,
    mesh: Mesh,
    key: PRNGKeyArray,
    steps_per_call: int,
    on_steps: Callable[[int, Array], None] = lambda end, losses: None,
) -> tuple[State, np.ndarray]:
    """One epoch: the batches `train_rows[order]` (`order` of shape `(steps, batch)`)
    placed on the mesh, then `steps_per_call` steps per compiled call; `on_steps(end,
    losses)` after each call (the progress bar). Returns the new state and each
    step's loss (NaN or inf where the loss was not finite)."""
    model, opt_state, loss_state = state
    num_batches = order.shape[0]
    with jax.set_mesh(mesh):
        batches = parallel.epoch_batches(train_rows, order, mesh)
        # Replicated from the start, as the compiled calls return it: a host array in
        # the first call would compile the step twice.
        losses = parallel.replicate(np.full(num_batches, np.nan, np.float32), mesh)
        for begin in range(0, num_batches, steps_per_call):
            end = min(begin + steps_per_call, num_batches)
            if steps_per_call == 1:  # no loop around the step
                model, opt_state, loss_state, value = train_step(
                    model, opt_state, loss_state, loss, optimizer, batches,
                    np.int32(begin), key,
                )  # fmt: skip
                losses = _set(losses, np.int32(begin), value)
            else:
                model, opt_state, loss_state, losses = train_steps(
                    model, opt_state, loss_state, loss, optimizer, batches,
                    np.int32(begin), np.int32(end), key, losses,
                )  # fmt: skip
            on_steps(end, losses)
        return State(model, opt_state, loss_state), parallel.to_host(losses)
