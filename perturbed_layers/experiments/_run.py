"""A run folder as one object: its checkpoint, metrics, config and the record of a
divergence, written by process 0 alone (the others hold the same object and write
nothing)."""

import pathlib
from typing import Any

from jaxtyping import PRNGKeyArray

from . import _parallel as parallel, _run_folder as files
from ._finish import TrainingDiverged, diverged


class Run:
    """The files of the run in `out`; `write` is False on every process but 0.

    `saved` is the epoch of the checkpoint on disk (what a divergence keeps).
    """

    def __init__(self, out: pathlib.Path, key: PRNGKeyArray, *, write: bool):
        self.out, self.key, self.write = out, key, write
        self.saved = 0

    @property
    def checkpoint(self) -> pathlib.Path:
        return self.out / files.CHECKPOINT

    def load(self, model: Any, opt_state: Any, loss_state: Any):
        """`(model, opt_state, epoch, key, loss_state)` from the checkpoint."""
        model, opt_state, epoch, key, loss_state = files.load_checkpoint(
            self.checkpoint, model, opt_state, self.key, loss_state
        )
        self.saved = epoch
        return model, opt_state, epoch, key, loss_state

    def history(self, up_to: int) -> tuple[list[dict[str, Any]], str | None]:
        """The metrics records of epochs `0..up_to`, and a note if a torn last line
        was left out."""
        records, torn = files.read_metrics(self.out / files.METRICS)
        return [r for r in records if r["epoch"] <= up_to], torn

    def rewrite(self, history: list[dict[str, Any]]) -> None:
        if self.write:
            files.write_metrics(self.out / files.METRICS, history)

    def append(self, record: dict[str, Any]) -> None:
        if self.write:
            files.append_metrics(self.out / files.METRICS, record)

    def write_config(self, text: str) -> None:
        if self.write:
            files.write_text(self.out / files.CONFIG, text)

    def save(self, model: Any, opt_state: Any, loss_state: Any, epoch: int) -> None:
        """Checkpoint the state after `epoch` (gathered to the host first)."""
        if self.write:
            host = parallel.to_host((model, opt_state, loss_state))
            files.save_checkpoint(self.checkpoint, host[0], host[1], epoch, self.key,
                                  host[2])  # fmt: skip
        self.saved = epoch

    def diverged(self, epoch: int, what: str) -> TrainingDiverged:
        """The error to raise, after recording the divergence in the summary."""
        return diverged(self.out, epoch, self.saved, what, self.write)
