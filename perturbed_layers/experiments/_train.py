"""Training from a config: the recipe, with checkpoints, resume and divergence.

`train()` reads as the recipe: check the run folder, build the mesh and the experiment,
resume from the checkpoint if asked, evaluate, then each epoch: shuffle, run the
compiled steps (`_loop.py`), check the losses and parameters, evaluate, record,
checkpoint. The run folder's files are one object (`_run.py`).

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
(`distributed:`); see `_parallel.py`. The loss's state is replicated, as the parameters
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
import numpy as np
from jax.sharding import Mesh
from jaxtyping import Array
from tqdm.auto import tqdm

from . import _parallel as parallel, _run_folder as files, _run_guard as guard
from ._build import build
from ._config import Config, ConfigError, dump_config, read_yaml
from ._evaluation import (
    format_metrics,
    test_metrics,
    trivial_metrics,
)
from ._finish import TrainingDiverged as TrainingDiverged, finish, first_line
from ._loop import State, run_epoch
from ._run import Run
from ._yaml import short


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
    folder = guard.open_run(out, resume=resume, log=log) if main else None
    try:
        changes: dict[str, tuple[Any, Any]] = {}
        if resume and (out / files.CONFIG).exists():
            saved_config = read_yaml(out / files.CONFIG)
            changes = guard.config_changes(saved_config, config.model_dump(mode="json"))
            guard.check_changes(changes, allow_changes, str(out))
        return _train(config, out, folder, resume, changes, source, progress, log,
                      on_epoch_end, plots)  # fmt: skip
    finally:
        if folder is not None:
            folder.close()


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def _train(
    config: Config,
    out: pathlib.Path,
    folder: guard.RunFolder | None,
    resume: bool,
    changes: dict[str, tuple[Any, Any]],
    source: str,
    progress: bool,
    log: Callable[[str], None],
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None,
    plots: bool,
) -> dict[str, Any]:
    main = folder is not None
    training = config.training
    parallel.sync("perturbed_layers: run folder checked")  # before process 0 writes
    start = time.perf_counter()
    mesh = _mesh(config, source)
    exp = build(config, source)
    data, task = exp.dataset, exp.dataset.task
    log(f"run folder: {out}")
    log(f"data: {data.description} ({time.perf_counter() - start:.1f} s)")
    log(f"devices: {_describe(mesh)}")
    run = Run(out, exp.key, write=main)
    state, key = State(exp.model, exp.opt_state, exp.loss_state), exp.key
    history: list[dict[str, Any]] = []
    first_epoch = 1
    if resume and run.checkpoint.exists():
        model, opt_state, epoch, key, loss_state = run.load(*state)
        state = State(model, opt_state, loss_state)
        if epoch > training.epochs:
            raise guard.RunFolderError(
                f"training.epochs: {training.epochs}, but {run.checkpoint} is at "
                f"epoch {epoch} already"
            )
        history, torn = run.history(up_to=epoch)
        if torn:
            log(f"repairing {torn}")
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
    if folder is not None:  # the config has proved to build (and fit the checkpoint)
        folder.start(config.name)
        if resume:
            folder.record_resume(first_epoch - 1, changes)
            run.rewrite(history)
    run.write_config(dump_config(config))

    chunk = training.eval_batch_size
    trivial = trivial_metrics(exp, chunk)
    log(
        f"trivial predictor ({trivial['predictor']}): "
        f"{format_metrics(trivial, task.headline)}"
    )
    if not history:
        record = {
            "epoch": 0,
            **test_metrics(exp, parallel.local_copy(state.model), chunk),
        }
        run.append(record)
        run.save(*state, 0)
        history.append(record)
        log(f"epoch 0/{training.epochs}  {format_metrics(record, task.headline)}")

    # Parameters, optimiser state, key and loss state on every device of the mesh; the
    # training set on the host, from which each epoch's batches are placed (each
    # process its own rows).
    state, key = parallel.replicate((state, key), mesh)
    train_rows = parallel.to_host(data.train)
    n_train = int(data.train.x.shape[0])
    num_batches = n_train // training.batch_size
    for epoch in range(first_epoch, training.epochs + 1):
        order = np.random.default_rng((training.seed, epoch)).permutation(n_train)
        order = order[: num_batches * training.batch_size].astype(np.int32)
        order = order.reshape(num_batches, training.batch_size)
        bar = _ProgressBar(epoch, training.epochs, num_batches, task.headline,
                           history[-1], progress)  # fmt: skip
        tic = time.perf_counter()
        try:
            state, losses = run_epoch(
                state, exp.loss, exp.optimizer, train_rows, order, mesh,
                jax.random.fold_in(key, epoch), training.steps_per_call, bar.update,
            )  # fmt: skip
        except eqx.EquinoxRuntimeError as error:
            what = f"the solver refused its input ({first_line(error)})"
            raise run.diverged(epoch, what) from None
        finally:
            bar.close()
        train_seconds = time.perf_counter() - tic
        bad = np.flatnonzero(~np.isfinite(losses))
        if bad.size:
            step = int(bad[0])
            what = (
                f"the training loss is {losses[step]} at step {step + 1}/{num_batches}"
            )
            raise run.diverged(epoch, what)
        if not _finite(state.model):
            raise run.diverged(epoch, "the parameters are no longer finite")
        tic = time.perf_counter()
        model = parallel.local_copy(state.model)
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            **test_metrics(exp, model, chunk),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - tic,
        }
        run.append(record)
        if epoch % training.checkpoint_every == 0 or epoch == training.epochs:
            run.save(*state, epoch)
        history.append(record)
        log(
            f"epoch {epoch}/{training.epochs}  {format_metrics(record, task.headline)}  "
            f"({train_seconds:.2f} s train, {record['eval_seconds']:.2f} s eval)"
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    model = parallel.local_copy(state.model)
    return finish(
        config, out, model, exp, history, trivial, log, write=main, plots=plots
    )


def _mesh(config: Config, source: str) -> Mesh:
    """The training mesh, from the config alone (before anything is built)."""
    try:
        return parallel.make_mesh(
            config.mesh,
            batch_size=config.training.batch_size,
            num_samples=getattr(config.layer, "num_samples", 1),
            chunk_size=getattr(config.layer, "chunk_size", None),
        )
    except ValueError as error:
        raise ConfigError(f"{source}: {error}") from None


class _ProgressBar:
    """A tqdm bar over an epoch's steps, showing the loss (at most twice a second:
    reading it waits for the steps) and the last epoch's test metric."""

    def __init__(self, epoch, epochs, steps, headline, last, enabled):
        self.metric = f"test {headline}"
        self.last = f"{last[f'test_{headline}']:.4f}"
        self.enabled, self.shown, self.done = enabled, time.perf_counter(), 0
        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}",
                        disable=not enabled, leave=False, dynamic_ncols=True)  # fmt: skip

    def update(self, end: int, losses: Array) -> None:
        self.bar.update(end - self.done)
        self.done = end
        if self.enabled and time.perf_counter() - self.shown > 0.5:
            value = float(parallel.to_host(losses)[end - 1])
            self.bar.set_postfix({"loss": f"{value:.4f}", self.metric: self.last})
            self.shown = time.perf_counter()

    def close(self) -> None:
        self.bar.close()


def _silent(message: str) -> None:
    del message


def _describe(mesh: Mesh) -> str:
    data, samples = mesh.shape[parallel.DATA], mesh.shape[parallel.SAMPLES]
    kind = mesh.devices.flat[0].platform
    where = f"{jax.process_count()} processes" if jax.process_count() > 1 else ""
    split = f"batch over {data}" + (f", samples over {samples}" if samples > 1 else "")
    return f"{data * samples} {kind} device(s){', ' + where if where else ''} ({split})"
