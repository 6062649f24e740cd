"""The end of a run: the summary and plots of a finished run, and what a diverged
run leaves (its summary says so; the last good checkpoint stays)."""

import json
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import numpy as np

from . import _run_folder as files
from ._build import Experiment
from ._config import Config
from ._evaluation import plot_test_examples
from ._plots import plot_curves


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN or infinite; the run was stopped."""


def finish(
    config: Config,
    out: pathlib.Path,
    model: Any,
    exp: Experiment,
    history: list[dict[str, Any]],
    trivial: dict[str, Any],
    log: Callable[[str], None] = print,
    *,
    write: bool = True,
    plots: bool = True,
) -> dict[str, Any]:
    """Write the plots (if `plots`) and `summary.json` of a finished run (if
    `write`); return the summary."""
    task = exp.dataset.task
    title = (
        f"{config.name}: {config.model.name} + {config.loss.name} ({config.layer.name})"
    )
    if write and plots:
        plot_curves(history, trivial, task, title, out / files.CURVES)
        plot_test_examples(
            exp, model, config.training.eval_batch_size, out / files.EXAMPLES
        )
    trained = [r for r in history if "train_seconds" in r]
    timed = [r["train_seconds"] for r in trained[1:]] or [
        r["train_seconds"] for r in trained
    ]
    final = history[-1]
    summary = {
        "status": "completed",
        "name": config.name,
        "epochs": final["epoch"],
        **{k: v for k, v in final.items() if k.startswith("test_")},
        "final_train_loss": final.get("train_loss"),
        "trivial": trivial,
        # The first epoch includes compiling the step; it is left out when possible.
        "seconds_per_epoch": float(np.median(timed)) if timed else None,
        "eval_seconds_per_epoch": float(np.median([r["eval_seconds"] for r in trained]))
        if trained
        else None,
        "num_parameters": int(
            sum(
                x.size for x in jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
            )
        ),
    }
    if write:
        files.write_text(out / files.SUMMARY, json.dumps(summary, indent=2) + "\n")
    drawn = f"; plots: {out / files.CURVES}, {out / files.EXAMPLES}" if plots else ""
    log(f"summary: {out / files.SUMMARY}{drawn}")
    return summary


def first_line(error: Exception) -> str:
    lines = [line for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if "EquinoxRuntimeError:" in line]
    return (
        (useful or lines or [type(error).__name__])[0]
        .split("EquinoxRuntimeError:")[-1]
        .strip()
    )


def diverged(
    out: pathlib.Path, epoch: int, saved: int, what: str, write: bool
) -> TrainingDiverged:
    message = (
        f"training diverged in epoch {epoch}: {what}. Stopped; the last good "
        f"checkpoint ({out / files.CHECKPOINT}, epoch {saved}) is kept. Try a lower "
        "learning rate or another sigma."
    )
    summary = {
        "status": "diverged",
        "epoch": epoch,
        "checkpoint_epoch": saved,
        "message": message,
    }
    if write:
        files.write_text(out / files.SUMMARY, json.dumps(summary, indent=2) + "\n")
    return TrainingDiverged(message)
