"""PNG plots of a run: curves per epoch, and a few test instances.

Drawn on `matplotlib.figure.Figure` objects directly (no pyplot state, no GUI backend).
"""

import pathlib
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ._tasks import AbstractTask, Batch


def plot_curves(
    history: list[dict[str, Any]],
    trivial: dict[str, Any],
    task: AbstractTask,
    title: str,
    path: pathlib.Path,
) -> None:
    """Training loss and every test metric per epoch; the trivial predictor dashed."""
    metrics = [key for key in history[-1] if key.startswith("test_")]
    metrics.sort(key=lambda key: key != f"test_{task.headline}")  # headline first
    fig = Figure(figsize=(4.2 * (1 + len(metrics)), 3.6), layout="constrained")
    axes = fig.subplots(1, 1 + len(metrics), squeeze=False)[0]
    trained = [r for r in history if "train_loss" in r]
    axes[0].plot(
        [r["epoch"] for r in trained], [r["train_loss"] for r in trained], marker="o"
    )
    axes[0].set_title("training loss (mean per epoch)")
    for ax, key in zip(axes[1:], metrics, strict=True):
        epochs = [r["epoch"] for r in history if key in r]
        ax.plot(
            epochs, [r[key] for r in history if key in r], marker="o", label="model"
        )
        if key in trivial:
            ax.axhline(
                trivial[key],
                color="grey",
                ls="--",
                label=f"trivial: {trivial['predictor']}",
            )
        ax.set_title(key.removeprefix("test_").replace("_", " ") + " (test)")
        ax.legend(fontsize=8)
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)


def plot_examples(
    task: AbstractTask,
    test: Batch,
    theta: np.ndarray,
    y_pred: np.ndarray,
    path: pathlib.Path,
) -> None:
    """The task's drawing of the first test instances and their predictions."""
    fig = Figure(figsize=(15, 7.5), layout="constrained")
    task.draw(fig, test, theta, y_pred)
    fig.savefig(path, dpi=90)
