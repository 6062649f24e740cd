"""A run folder and its files: checkpoints, metrics, config, summary.

```
runs/<name>-<timestamp>/
  run.json         the marker: a run of ours (name, start, resumes); see _run_guard.py
  run.lock         held (flock) while a run writes the folder
  config.yaml      the resolved config (every option)
  metrics.jsonl    one JSON object per epoch (epoch 0: the untrained model)
  checkpoint.eqx   the last checkpoint: model, optimiser state, epoch, PRNG key
                   (and the loss's state: a solution pool, AI-MLE's step)
  curves.png       training loss and test metrics per epoch
  examples.png     a few test instances, true and predicted solutions
  summary.json     the final test metrics (and the trivial predictor's)
```

Checkpoints are written with `eqx.tree_serialise_leaves` (NumPy's format, no pickle)
to a temporary file in the same folder, flushed to disk, then moved over the previous
one with `os.replace`, which is atomic: a run killed at any moment leaves the old
checkpoint or the new one, never a torn file. Reading needs a pytree of the same
structure, which the training loop rebuilds from the config. Before that, the file is
checked on its own (a sequence of `.npy` records: headers, sizes, no Python objects),
so that a truncated or corrupt file is named as such, and a file that is whole but
holds other arrays is named as not fitting the config.

`metrics.jsonl` is appended a line at a time; a run killed mid-write leaves a torn last
line, which reading reports and resuming drops (the file is then rewritten whole).
"""

import json
import os
import pathlib
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PRNGKeyArray

CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.eqx"
SUMMARY = "summary.json"
CURVES = "curves.png"
EXAMPLES = "examples.png"


def _replace_atomically(path: pathlib.Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as file:
        write(file)
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


def write_text(path: pathlib.Path, text: str) -> None:
    """Write a text file atomically."""
    _replace_atomically(path, lambda file: file.write(text.encode()))


def _tree(model: Any, opt_state: Any, epoch: int, key: PRNGKeyArray, pool: Any):
    # The pool comes last, and `None` adds no array: a checkpoint of a run without a
    # pool is the same file as before pools existed.
    epoch_array = np.asarray(epoch, np.int64)
    return (model, opt_state, epoch_array, jax.random.key_data(key), pool)


def save_checkpoint(
    path: pathlib.Path,
    model: Any,
    opt_state: Any,
    epoch: int,
    key: PRNGKeyArray,
    pool: Any = None,
) -> None:
    """Write `(model, opt_state, epoch, key, pool)` to `path`, atomically; `pool` is
    the training state's `pl.SolutionPool`, or `None` for a loss without one."""
    tree = _tree(model, opt_state, epoch, key, pool)
    _replace_atomically(path, lambda file: eqx.tree_serialise_leaves(file, tree))


class RunFileError(RuntimeError):
    """A run file that cannot be read: the message names the file and the cause."""


def _npy_records(path: pathlib.Path) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of each `.npy` record of a checkpoint, read from the
    headers alone (no data is loaded, no object is unpickled)."""
    records = []
    with open(path, "rb") as file:
        size = os.fstat(file.fileno()).st_size
        while file.tell() < size:
            at = file.tell()
            try:
                version = np.lib.format.read_magic(file)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read_header(file)
            except (ValueError, EOFError, SyntaxError, TypeError) as error:
                raise RunFileError(
                    f"{path}: corrupt or truncated checkpoint: record "
                    f"{len(records) + 1} at byte {at} is not an array ({error})"
                ) from None
            if dtype.hasobject:
                raise RunFileError(
                    f"{path}: record {len(records) + 1} holds Python objects; a "
                    "checkpoint holds numbers only (not read)"
                )
            end = file.tell() + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if end > size:
                raise RunFileError(
                    f"{path}: truncated checkpoint: record {len(records) + 1} needs "
                    f"{end - size} bytes more than the file's {size}"
                )
            file.seek(end)
            records.append((tuple(shape), dtype))
    return records


def load_checkpoint(
    path: pathlib.Path,
    model: Any,
    opt_state: Any,
    key: PRNGKeyArray,
    pool: Any = None,
) -> tuple[Any, Any, int, PRNGKeyArray, Any]:
    """Read a checkpoint into the structure of `(model, opt_state, key, pool)`; the
    `pool` given (a `pl.SolutionPool` of the config's capacity, instance shape and
    dtype, or `None`) is only a template, as the model is.

    **Returns:** the saved model, optimiser state, epoch, key and pool.

    **Raises:** `RunFileError` naming the file: missing, unreadable, truncated or
    corrupt, or holding arrays that do not fit this structure (which says which).
    """
    like = _tree(model, opt_state, 0, key, pool)
    what = "model, optimiser" + (" and loss state" if pool is not None else "")
    try:
        found = _npy_records(path)
    except FileNotFoundError:
        raise RunFileError(f"{path}: no checkpoint") from None
    except OSError as error:
        raise RunFileError(f"{path}: cannot read: {error.strerror}") from None
    expected = [
        (tuple(np.shape(x)), np.dtype(x.dtype) if hasattr(x, "dtype") else None)
        for x in jax.tree.leaves(like)
        if eqx.is_array_like(x)
    ]
    if len(found) != len(expected):
        raise RunFileError(
            f"{path} holds {len(found)} arrays; the {what} this config builds have "
            f"{len(expected)} (changed model, optimizer or loss options?)"
        )
    for index, ((shape, dtype), (want, want_dtype)) in enumerate(
        zip(found, expected, strict=True)
    ):
        if shape != want or (want_dtype is not None and dtype != want_dtype):
            raise RunFileError(
                f"{path}: array {index + 1} of {len(found)} is {dtype} {shape}; the "
                f"{what} this config builds need {want_dtype} {want} "
                "(changed model, optimizer or loss options?)"
            )
    try:
        model, opt_state, epoch, key_data, pool = eqx.tree_deserialise_leaves(
            path, like
        )
    except (OSError, ValueError, RuntimeError, TypeError) as error:
        raise RunFileError(f"{path}: cannot read the checkpoint: {error}") from None
    return model, opt_state, int(epoch), jax.random.wrap_key_data(key_data), pool


def read_metrics(path: pathlib.Path) -> tuple[list[dict[str, Any]], str | None]:
    """The per-epoch records of a `metrics.jsonl` (none if it does not exist), and
    a note if its last line was torn (a run killed mid-write), which is left out.

    **Raises:** `RunFileError` naming the file and line of a bad line elsewhere.
    """
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return [], None
    lines = text.split("\n")
    records, note = [], None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if isinstance(record, dict) and isinstance(record.get("epoch"), int):
            records.append(record)
            continue
        if number == len(lines):  # no newline after it: torn mid-write
            note = (
                f"{path}: line {number} was torn (a run killed mid-write): "
                f"{len(line)} characters left out"
            )
            continue
        raise RunFileError(
            f"{path}: line {number} is not a metrics record (JSON with an integer "
            f"'epoch'): {line[:80]!r}"
        )
    return records, note


def write_metrics(path: pathlib.Path, records: list[dict[str, Any]]) -> None:
    """Replace `metrics.jsonl` with these records (atomically)."""
    write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def append_metrics(path: pathlib.Path, record: dict[str, Any]) -> None:
    """Append one record to `metrics.jsonl`, flushed to disk."""
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
