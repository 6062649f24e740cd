"""The training loop: train from a config, checkpoint, resume, stop on divergence.

**One compiled step.** `train_step` (model → θ, loss through the perturbed layer, its
gradient, the optax update) is one `eqx.filter_jit` function, or with
`training.steps_per_call > 1` a `fori_loop` over it (`train_steps`), compiled once per
run: batches have one static shape (the last partial batch of an epoch is dropped), each
epoch's batches are placed on the devices at once, and a call receives only the range
of steps to run. Fewer, longer calls save the per-call dispatch, which dominates for
small models (but XLA:CPU runs convolutions several times slower inside the loop);
every step's loss still reaches the progress bar and the divergence check.

**Training state.** Parameters, optimiser state and, for a loss over a solution pool
(NCE, CMAP, learning to rank), the `pl.SolutionPool`: a fixed-capacity array seeded
with the training set's target solutions before epoch 0, refreshed inside the compiled
step, carried by the `fori_loop`, and saved in every checkpoint. Other losses carry
`None` in its place.

**Reproducible order.** Epoch e shuffles with `np.random.default_rng((seed, e))` and
draws its noise from `fold_in(key, e)`, step s of it from `fold_in(·, s)`: the data
order and the noise are functions of (seed, epoch, step), so a run resumed from its
last checkpoint replays exactly what an uninterrupted run would have done, and ends
with the same metrics.

**Failure.** A NaN or infinite loss (or parameters), or a solver that refuses
non-finite costs, stops the run with `TrainingDiverged` before the epoch's checkpoint is
written: the last good checkpoint stays in place.

**Devices.** The step runs on the `data × samples` mesh of the config's `mesh:` group
(by default every device splits the batch), over one process or several
(`distributed:`); see `_parallel.py`. The pool is replicated, as the parameters
are. Process 0 alone logs and writes the run folder.
Checkpoints hold plain arrays, so a run resumes on any number of devices.
"""

import pathlib
import sys
import time
from collections.abc import Callable, Collection
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh
from jax.typing import ArrayLike
from jaxtyping import Array, Float, PRNGKeyArray
from tqdm.auto import tqdm

import perturbed_layers as pl

from . import _parallel as parallel, _run_folder as files, _run_guard as guard
from ._build import build
from ._config import Config, ConfigError, dump_config, read_yaml
from ._evaluation import (
    format_metrics,
    test_metrics,
    trivial_metrics,
)
from ._finish import TrainingDiverged as TrainingDiverged, diverged, finish, first_line
from ._tasks import AbstractPoolLoss, Batch, Loss
from ._yaml import short


@eqx.filter_jit
def train_step(
    model: Any,
    opt_state: Any,
    pool: pl.SolutionPool | None,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    batches: Batch,
    step: ArrayLike,
    key: PRNGKeyArray,
) -> tuple[Any, Any, pl.SolutionPool | None, Array]:
    """One step on the batch `batches[step]` (of an epoch's `(steps, batch, ...)`
    batches): mean loss, gradient, update. The noise key is `fold_in(key, step)`.

    `pool` is the solution pool of a loss over one (`AbstractPoolLoss`), which
    refreshes it and returns the new one; `None` for any other loss."""
    batch = jax.tree.map(lambda a: a[step], batches)
    key = jax.random.fold_in(key, step)

    def mean_loss(model):
        theta = jax.vmap(model)(batch.x)
        if isinstance(loss, AbstractPoolLoss):
            assert pool is not None
            values, new_pool = loss.value_and_pool(theta, batch, pool, key=key)
            return jnp.mean(values), new_pool
        return jnp.mean(loss(theta, batch, key=key)), None

    grad = eqx.filter_value_and_grad(mean_loss, has_aux=True)
    (value, pool), grads = grad(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, pool, value


@eqx.filter_jit
def train_steps(
    model: Any,
    opt_state: Any,
    pool: pl.SolutionPool | None,
    loss: Loss,
    optimizer: optax.GradientTransformation,
    batches: Batch,
    start: ArrayLike,
    stop: ArrayLike,
    key: PRNGKeyArray,
    losses: Float[ArrayLike, " steps"],
) -> tuple[Any, Any, pl.SolutionPool | None, Float[Array, " steps"]]:
    """Steps `start, …, stop − 1` of an epoch in one call (a `fori_loop` of
    `train_step`, the pool in its carry; `start` and `stop` are traced, so one
    compilation serves every call). `losses[step]` receives each step's loss."""
    arrays, static = eqx.partition(model, eqx.is_array)

    def body(step, carry):
        arrays, opt_state, pool, losses = carry
        model = eqx.combine(arrays, static)
        model, opt_state, pool, value = train_step(
            model, opt_state, pool, loss, optimizer, batches, step, key
        )
        arrays = eqx.filter(model, eqx.is_array)
        return arrays, opt_state, pool, losses.at[step].set(value)

    carry = (arrays, opt_state, pool, jnp.asarray(losses))
    arrays, opt_state, pool, filled = jax.lax.fori_loop(start, stop, body, carry)
    return eqx.combine(arrays, static), opt_state, pool, filled


@eqx.filter_jit
def _set(losses: Float[ArrayLike, " steps"], step: ArrayLike, value: Array) -> Array:
    return jnp.asarray(losses).at[step].set(value)


def _finite(model: Any) -> bool:
    leaves = jax.tree.leaves(parallel.to_host(eqx.filter(model, eqx.is_inexact_array)))
    return all(bool(np.all(np.isfinite(leaf))) for leaf in leaves)


def train(
    config: Config,
    out: str | pathlib.Path,
    *,
    resume: bool = False,
    allow_changes: Collection[str] = (),
    source: str = "<config>",
    progress: bool = True,
    log: Callable[[str], None] = print,
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
    plots: bool = True,
) -> dict[str, Any]:
    """Train as `config` says, writing the run folder `out`; return the summary.

    **Arguments:**

    - `config`: a validated config (`load_config`).
    - `out`: the run folder: absent, empty, or (with `resume=True`) a run of ours.
    - `resume`: continue `out`'s run from its last checkpoint (from the start if it
      stopped before its first one), with the config it was started with.
    - `allow_changes`: config keys that may differ from the run's when resuming
      (only `SAFE_CHANGES`, such as `training.epochs`); recorded in `run.json`.
    - `source`: the config's file name, for error messages.
    - `progress`: show a tqdm progress bar per epoch (only on a terminal: in a log
      file, the one line per epoch is enough).
    - `log`: where the one-line-per-epoch report goes.
    - `on_epoch_end`: called as `f(epoch, record)` after each epoch's checkpoint.
    - `plots`: draw `curves.png` and `examples.png` at the end (a comparison's
      runs skip them).

    **Raises:** `ConfigError` (before training), `RunFolderError` (a folder that
    holds something else, is in use, holds a run without `resume` or none with it,
    a config that differs from the resumed run's), `RunFileError` (a run file that
    cannot be read), `TrainingDiverged`.
    """
    try:
        parallel.initialize_distributed(config.distributed, source, log)
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    main = parallel.is_main_process()
    if not main:
        log, progress = _silent, False
    progress = progress and _is_terminal(sys.stderr)
    out = pathlib.Path(out)
    run = guard.open_run(out, resume=resume, log=log) if main else None
    try:
        changes: dict[str, tuple[Any, Any]] = {}
        if resume and (out / files.CONFIG).exists():
            saved_config = read_yaml(out / files.CONFIG)
            changes = guard.config_changes(saved_config, config.model_dump(mode="json"))
            guard.check_changes(changes, allow_changes, str(out))
        return _train(config, out, run, resume, changes, source, progress, log,
                      on_epoch_end, plots)  # fmt: skip
    finally:
        if run is not None:
            run.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _train(
    config: Config,
    out: pathlib.Path,
    run: guard.RunFolder | None,
    resume: bool,
    changes: dict[str, tuple[Any, Any]],
    source: str,
    progress: bool,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
    plots: bool,
) -> dict[str, Any]:
    main = run is not None
    checkpoint = out / files.CHECKPOINT
    parallel.sync("perturbed_layers: run folder checked")  # before process 0 writes
    start = time.perf_counter()
    exp = build(config, source)
    data, task = exp.dataset, exp.dataset.task
    training = config.training
    try:
        mesh = parallel.make_mesh(
            config.mesh,
            batch_size=training.batch_size,
            num_samples=exp.layer.num_samples,
            chunk_size=exp.layer.chunk_size,
        )
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None
    log(f"run folder: {out}")
    log(f"data: {data.description} ({time.perf_counter() - start:.1f} s)")
    log(f"devices: {_describe(mesh)}")
    model, opt_state, key, pool = exp.model, exp.opt_state, exp.key, exp.pool
    history: list[dict[str, Any]] = []
    first_epoch = 1
    if resume and checkpoint.exists():
        model, opt_state, epoch, key, pool = files.load_checkpoint(
            checkpoint, model, opt_state, key, pool
        )
        if epoch > training.epochs:
            raise guard.RunFolderError(
                f"training.epochs: {training.epochs}, but {checkpoint} is at epoch "
                f"{epoch} already"
            )
        records, torn = files.read_metrics(out / files.METRICS)
        if torn:
            log(f"repairing {torn}")
        history = [r for r in records if r["epoch"] <= epoch]
        first_epoch = epoch + 1
        log(f"resuming after epoch {epoch}")
    elif resume:
        log(
            f"{out} has no checkpoint (the run stopped before its first one): "
            "starting it again from the beginning"
        )
    for key_path, (was, now) in changes.items():
        log(f"allowed change: {key_path}: {short(was)} in the run, {short(now)} now")
    parallel.sync("perturbed_layers: checkpoint read")  # before process 0 rewrites
    if run is not None:  # the config has proved to build (and fit the checkpoint)
        run.start(config.name)
        if resume:
            run.record_resume(first_epoch - 1, changes)
            files.write_metrics(out / files.METRICS, history)
        files.write_text(out / files.CONFIG, dump_config(config))
    saved = first_epoch - 1  # the epoch of the checkpoint on disk

    def save(model: Any, opt_state: Any, pool: Any, epoch: int) -> None:
        if main:
            host_model, host_opt_state, host_pool = parallel.to_host(
                (model, opt_state, pool)
            )
            files.save_checkpoint(
                checkpoint, host_model, host_opt_state, epoch, exp.key, host_pool
            )

    def evaluate(model: Any) -> dict[str, float]:
        return test_metrics(exp, parallel.local_copy(model), chunk)

    chunk = training.eval_batch_size
    trivial = trivial_metrics(exp, chunk)
    log(
        f"trivial predictor ({trivial['predictor']}): "
        f"{format_metrics(trivial, task.headline)}"
    )

    if not history:
        record = {"epoch": 0, **evaluate(model)}
        if main:
            files.append_metrics(out / files.METRICS, record)
        save(model, opt_state, pool, 0)
        history.append(record)
        log(f"epoch 0/{training.epochs}  {format_metrics(record, task.headline)}")

    # Parameters, optimiser state, key and pool on every device of the mesh; the
    # training set on the host, from which each epoch's batches are placed (each
    # process its own rows).
    model, opt_state, key, pool = parallel.replicate(
        (model, opt_state, key, pool), mesh
    )
    train_rows = parallel.to_host(data.train)
    n_train = int(data.train.x.shape[0])
    num_batches = n_train // training.batch_size
    for epoch in range(first_epoch, training.epochs + 1):
        order = np.random.default_rng((training.seed, epoch)).permutation(n_train)
        order = order[: num_batches * training.batch_size].astype(np.int32)
        order = order.reshape(num_batches, training.batch_size)
        metric = f"test {task.headline}"
        last = f"{history[-1][f'test_{task.headline}']:.4f}"
        bar = tqdm(
            total=num_batches,
            desc=f"epoch {epoch}/{training.epochs}",
            disable=not progress,
            leave=False,
            dynamic_ncols=True,
        )
        tic, shown = time.perf_counter(), time.perf_counter()
        calls = range(0, num_batches, training.steps_per_call)
        try:
            with jax.set_mesh(mesh):
                batches = parallel.epoch_batches(train_rows, order, mesh)
                epoch_key = jax.random.fold_in(key, epoch)
                # Replicated from the start, as the compiled calls return it: a
                # host array in the first call would compile the step twice.
                losses = parallel.replicate(
                    np.full(num_batches, np.nan, np.float32), mesh
                )
                for begin in calls:
                    end = min(begin + training.steps_per_call, num_batches)
                    if training.steps_per_call == 1:  # no loop around the step
                        model, opt_state, pool, value = train_step(
                            model, opt_state, pool, exp.loss, exp.optimizer,
                            batches, np.int32(begin), epoch_key,
                        )  # fmt: skip
                        losses = _set(losses, np.int32(begin), value)
                    else:
                        model, opt_state, pool, losses = train_steps(
                            model, opt_state, pool, exp.loss, exp.optimizer,
                            batches, np.int32(begin), np.int32(end), epoch_key,
                            losses,
                        )  # fmt: skip
                    bar.update(end - begin)
                    if progress and time.perf_counter() - shown > 0.5:
                        # Waits for these steps; the metric is the last epoch's.
                        value = float(parallel.to_host(losses)[end - 1])
                        bar.set_postfix({"loss": f"{value:.4f}", metric: last})
                        shown = time.perf_counter()
                losses = parallel.to_host(losses)  # waits for the epoch
        except eqx.EquinoxRuntimeError as error:
            what = f"the solver refused its input ({first_line(error)})"
            raise diverged(out, epoch, saved, what, main) from None
        finally:
            bar.close()
        train_seconds = time.perf_counter() - tic
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            step = int(bad[0])
            what = (
                f"the training loss is {losses[step]} at step {step + 1}/{num_batches}"
            )
            raise diverged(out, epoch, saved, what, main)
        if not _finite(model):
            raise diverged(
                out, epoch, saved, "the parameters are no longer finite", main
            )
        tic = time.perf_counter()
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **evaluate(model),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - tic,
        }
        if main:
            files.append_metrics(out / files.METRICS, record)
        if epoch % training.checkpoint_every == 0 or epoch == training.epochs:
            save(model, opt_state, pool, epoch)
            saved = epoch
        history.append(record)
        log(
            f"epoch {epoch}/{training.epochs}  {format_metrics(record, task.headline)}  "
            f"({train_seconds:.2f} s train, {record['eval_seconds']:.2f} s eval)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    model = parallel.local_copy(model)
    return finish(
        config, out, model, exp, history, trivial, log, write=main, plots=plots
    )


def _silent(message: str) -> None:
    del message


def _describe(mesh: Mesh) -> str:
    data, samples = mesh.shape[parallel.DATA], mesh.shape[parallel.SAMPLES]
    kind = mesh.devices.flat[0].platform
    where = f"{jax.process_count()} processes" if jax.process_count() > 1 else ""
    split = f"batch over {data}" + (f", samples over {samples}" if samples > 1 else "")
    return f"{data * samples} {kind} device(s){', ' + where if where else ''} ({split})"
