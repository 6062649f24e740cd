"""A run folder and its files: checkpoints, metrics, config, summary.

```
runs/<name>-<timestamp>/
  config.yaml      the resolved config (every option)
  metrics.jsonl    one JSON object per epoch (epoch 0: the untrained model)
  checkpoint.eqx   the last checkpoint: model, optimiser state, epoch, PRNG key
  curves.png       training loss and test metrics per epoch
  examples.png     a few test instances, true and predicted solutions
  summary.json     the final test metrics (and the trivial predictor's)
```

Checkpoints are written with `eqx.tree_serialise_leaves` (NumPy's format, no pickle)
to a temporary file in the same folder, flushed to disk, then moved over the previous
one with `os.replace`, which is atomic: a run killed at any moment leaves the old
checkpoint or the new one, never a torn file. Reading needs a pytree of the same
structure, which the training loop rebuilds from the config.
"""

import datetime
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


def default_run_folder(
    name: str, root: pathlib.Path = pathlib.Path("runs")
) -> pathlib.Path:
    """`runs/<name>-<YYYYmmdd-HHMMSS>`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return root / f"{name}-{stamp}"


def latest_run_folder(
    name: str, root: pathlib.Path = pathlib.Path("runs")
) -> pathlib.Path | None:
    """The newest `runs/<name>-*` folder that holds a checkpoint, if any."""
    runs = sorted(p.parent for p in root.glob(f"{name}-*/{CHECKPOINT}"))
    return runs[-1] if runs else None


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


def save_checkpoint(
    path: pathlib.Path, model: Any, opt_state: Any, epoch: int, key: PRNGKeyArray
) -> None:
    """Write `(model, opt_state, epoch, key)` to `path`, atomically."""
    tree = (model, opt_state, np.asarray(epoch, np.int64), jax.random.key_data(key))
    _replace_atomically(path, lambda file: eqx.tree_serialise_leaves(file, tree))


def load_checkpoint(
    path: pathlib.Path, model: Any, opt_state: Any, key: PRNGKeyArray
) -> tuple[Any, Any, int, PRNGKeyArray]:
    """Read a checkpoint into the structure of `(model, opt_state, key)`.

    **Returns:** the saved model, optimiser state, epoch and key.
    """
    like = (model, opt_state, np.asarray(0, np.int64), jax.random.key_data(key))
    model, opt_state, epoch, key_data = eqx.tree_deserialise_leaves(path, like)
    return model, opt_state, int(epoch), jax.random.wrap_key_data(key_data)


def read_metrics(path: pathlib.Path) -> list[dict[str, Any]]:
    """The per-epoch records of a `metrics.jsonl` (none if it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_metrics(path: pathlib.Path, records: list[dict[str, Any]]) -> None:
    """Replace `metrics.jsonl` with these records (atomically)."""
    write_text(path, "".join(json.dumps(record) + "\n" for record in records))


def append_metrics(path: pathlib.Path, record: dict[str, Any]) -> None:
    """Append one record to `metrics.jsonl`, flushed to disk."""
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")
        file.flush()
        os.fsync(file.fileno())
