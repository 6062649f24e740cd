"""The training loop of the benchmarks that train (pyepo_compare.py, pyepo_losses.py):
the library's own step on batches chosen by the benchmark.

`Trainer` runs `perturbed_layers.experiments.train_step` (and `train_steps`, the loop
over it inside one compiled call, with `steps_per_call > 1`) as the experiments CLI
does: a loss as the CLI builds it (an `AbstractLoss`, or an `AbstractStatefulLoss`
whose state, e.g. a solution pool, is seeded from the training set and carried from
step to step), Adam's state, and the noise key `fold_in(fold_in(key, epoch), step)`.

One deliberate difference from the CLI, to pair with PyEPO: the batches are the
benchmark's (PyEPO's order: one permutation per epoch shared with PyEPO's side, the
last, smaller batch kept), where the CLI shuffles on its own and drops the last
partial batch. The full batches go through the CLI's calls; each other batch is a
step of its own, with the key `fold_in(epoch key, number of full batches + i)`.
"""

import time
from collections.abc import Callable
from typing import Any

import _common as C
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from perturbed_layers.experiments import AbstractStatefulLoss, train_step, train_steps


class Trainer:
    """A model trained on `train` (a `Batch`, or a NamedTuple with more fields for a
    loss that reads them), on the host; `epoch(batches)` runs one epoch of the given
    index arrays and returns its seconds.

    `step` is the library's `train_step` unless a side cannot be jitted (PyEPO's NCE
    refuses `jax.jit`): then a function of the same signature."""

    def __init__(
        self,
        model: Any,
        loss: Any,
        optimizer: optax.GradientTransformation,
        train: Any,
        seed: int,
        *,
        steps_per_call: int = 1,
        step: Callable[..., Any] = train_step,
    ):
        self.model = model
        self.loss = loss
        self.optimizer = optimizer
        self.opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
        self.train = train
        self.loss_state = (
            loss.initial_state(train)
            if isinstance(loss, AbstractStatefulLoss)
            else None
        )
        self.key = jax.random.key(seed)
        self.steps_per_call = steps_per_call
        self.step = step
        self.epochs_done = 0

    def _place(self, batches: list[np.ndarray]) -> tuple[Any, list[Any]]:
        """The full batches as one pytree of shape (steps, batch, ...), and each other
        batch as a pytree of one step, gathered on the host and placed on the device
        (as the CLI places an epoch's batches)."""
        size = max(len(idx) for idx in batches)
        full = [idx for idx in batches if len(idx) == size]
        rest = [idx[None] for idx in batches if len(idx) != size]

        def gather(rows: np.ndarray) -> Any:
            return jax.device_put(jax.tree.map(lambda a: a[rows], self.train))

        return gather(np.stack(full)), [gather(rows) for rows in rest]

    def _run(self, state: tuple, batches: list[np.ndarray], epoch: int) -> tuple:
        model, opt_state, loss_state = state
        full, rest = self._place(batches)
        epoch_key = jax.random.fold_in(self.key, epoch)
        steps = len(jax.tree.leaves(full)[0])
        losses = np.full(steps, np.nan, np.float32)
        for begin in range(0, steps, self.steps_per_call):
            end = min(begin + self.steps_per_call, steps)
            if self.steps_per_call == 1:  # no loop around the step, as the CLI
                model, opt_state, loss_state, _ = self.step(
                    model, opt_state, loss_state, self.loss, self.optimizer, full,
                    np.int32(begin), epoch_key,
                )  # fmt: skip
            else:
                model, opt_state, loss_state, losses = train_steps(
                    model, opt_state, loss_state, self.loss, self.optimizer, full,
                    np.int32(begin), np.int32(end), epoch_key, losses,
                )  # fmt: skip
        for i, batch in enumerate(rest):
            key = jax.random.fold_in(epoch_key, steps + i)
            model, opt_state, loss_state, _ = self.step(
                model, opt_state, loss_state, self.loss, self.optimizer, batch,
                np.int32(0), key,
            )  # fmt: skip
        return model, opt_state, loss_state

    def compile(self, batches: list[np.ndarray]) -> float:
        """Trace, compile and run once each program an epoch of `batches` calls (the
        results discarded: only a host-side loss, PyEPO's NCE pool, keeps a trace of
        these steps): seconds."""
        t0 = time.perf_counter()
        full, rest = self._place(batches)
        state = (self.model, self.opt_state, self.loss_state)
        key = jax.random.fold_in(self.key, 0)
        if self.steps_per_call == 1:
            out = self.step(*state, self.loss, self.optimizer, full, np.int32(0), key)
        else:
            steps = len(jax.tree.leaves(full)[0])
            out = train_steps(
                *state, self.loss, self.optimizer, full, np.int32(0),
                np.int32(min(self.steps_per_call, steps)), key,
                np.full(steps, np.nan, np.float32),
            )  # fmt: skip
        C.block(out)
        sizes = {len(jax.tree.leaves(b)[0][0]): b for b in rest}
        for batch in sizes.values():
            out = self.step(*state, self.loss, self.optimizer, batch, np.int32(0), key)
            C.block(out)
        return time.perf_counter() - t0

    def epoch(self, batches: list[np.ndarray]) -> float:
        """One epoch over `batches` (index arrays into `train`): seconds."""
        t0 = time.perf_counter()
        self.epochs_done += 1
        state = self._run(
            (self.model, self.opt_state, self.loss_state), batches, self.epochs_done
        )
        C.block(state)
        seconds = time.perf_counter() - t0
        self.model, self.opt_state, self.loss_state = state
        return seconds

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(jax.vmap(self.model)(jnp.asarray(x)))
