"""Warcraft shortest paths: the dataset options and the task (metrics, baseline, plot).

Metrics over the test maps, with the true cost of a path the sum of the true vertex
weights on it: `cost_optimal_share`, the share of maps whose predicted path costs the
optimum (up to a relative 1e-5, for float sums); `exact_path_share`, the share whose
predicted path is the labelled one cell for cell (ties make this lower); and
`cost_ratio`, the mean of predicted path cost / optimal cost (≥ 1).
"""

import pathlib
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from pydantic import Field

import perturbed_layers as pl

from ._options import DataOptions, PerturbedLayerOptions, PositiveInt
from ._tasks import AbstractTask, Batch, Dataset
from ._warcraft_maps import generate_warcraft_maps, load_warcraft_split


class WarcraftTask(AbstractTask):
    """Vertex-weighted shortest path on a k × k map; θ are predicted vertex costs."""

    size: int = eqx.field(static=True)

    headline: ClassVar[str] = "cost_optimal_share"
    higher_is_better: ClassVar[bool] = True
    layers: ClassVar[tuple[str, ...]] = ("grid_shortest_path",)

    def metrics(self, theta: Array, y_pred: Array, batch: Batch) -> dict[str, Array]:
        del theta
        axes = (-2, -1)
        optimum = jnp.sum(batch.costs * batch.y, axis=axes)
        cost = jnp.sum(batch.costs * y_pred, axis=axes)
        return {
            "cost_optimal": cost <= optimum * (1 + 1e-5),
            "exact_path": jnp.all(y_pred == batch.y, axis=axes),
            "cost_ratio": cost / optimum,
        }

    def summarise(self, per_instance: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            "cost_optimal_share": float(np.mean(per_instance["cost_optimal"])),
            "exact_path_share": float(np.mean(per_instance["exact_path"])),
            "cost_ratio": float(np.mean(per_instance["cost_ratio"])),
        }

    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        del train
        return np.ones((self.size, self.size), np.float32), "constant costs"

    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        maps, y_true, costs = (np.asarray(a) for a in test)
        count = min(6, len(maps))
        axes = fig.subplots(3, count, squeeze=False)
        # Only cost ratios matter to a path: show θ rescaled to the true mean cost.
        shown = (
            theta
            * costs.mean(axis=(1, 2), keepdims=True)
            / theta.mean(axis=(1, 2), keepdims=True)
        )
        vmax = float(costs[:count].max())
        cell = maps.shape[1] / self.size
        for i in range(count):
            top, middle, bottom = axes[:, i]
            top.imshow(maps[i])
            for mask, colour, size in (
                (y_true[i], "white", 40),
                (y_pred[i], "red", 12),
            ):
                rows, cols = np.nonzero(mask > 0.5)
                x, y = (cols + 0.5) * cell - 0.5, (rows + 0.5) * cell - 0.5
                top.scatter(x, y, s=size, c=colour)
            optimum = float(np.sum(costs[i] * y_true[i]))
            ratio = float(np.sum(costs[i] * y_pred[i])) / optimum
            top.set_title(f"test {i}: cost ratio {ratio:.3f}", fontsize=9)
            middle.imshow(costs[i], vmin=0, vmax=vmax, cmap="viridis")
            bottom.imshow(shown[i], vmin=0, vmax=vmax, cmap="viridis")
            for ax in axes[:, i]:
                ax.set_xticks([])
                ax.set_yticks([])
        axes[0, 0].set_ylabel("map, paths")
        axes[1, 0].set_ylabel("true costs")
        axes[2, 0].set_ylabel("predicted (rescaled)")
        fig.suptitle(
            "Test maps: true shortest path (white), predicted path (red); predicted "
            "costs rescaled to the true mean, one colour scale"
        )


class WarcraftMaps(DataOptions):
    """`data: {name: warcraft, ...}`: k × k Warcraft-style maps, generated or loaded.

    With `path`, the first `num_train` / `num_test` maps of the real dataset's
    `train_*.npy` / `test_*.npy` files in that folder are used instead (same layout).
    """

    layers: ClassVar[tuple[str, ...]] = WarcraftTask.layers

    name: Literal["warcraft"]
    size: Literal[12, 18, 24, 30] = Field(12, description="k, cells per side")
    num_train: PositiveInt = Field(10000, description="training maps")
    num_test: PositiveInt = Field(1000, description="test maps")
    seed: int = Field(0, description="the generator's seed")
    path: str | None = Field(
        None, description="folder of the real dataset's .npy files (None: generate)"
    )

    def build(self) -> Dataset:
        if self.path is None:
            # Independent streams, so the test maps do not change with num_train.
            train = generate_warcraft_maps(self.num_train, self.size, self.seed, 0)
            test = generate_warcraft_maps(self.num_test, self.size, self.seed, 1)
            source = f"generated (seed {self.seed})"
        else:
            folder = pathlib.Path(self.path).expanduser()
            train = load_warcraft_split(folder, "train", self.size, self.num_train)
            test = load_warcraft_split(folder, "test", self.size, self.num_test)
            source = f"loaded from {folder}"

        def batch(split: tuple[np.ndarray, np.ndarray, np.ndarray]) -> Batch:
            maps, weights, paths = split
            return Batch(jnp.asarray(maps), jnp.asarray(paths), jnp.asarray(weights))

        description = (
            f"Warcraft {self.size}x{self.size} maps, {source}: {self.num_train} train / "
            f"{self.num_test} test"
        )
        return Dataset(batch(train), batch(test), WarcraftTask(self.size), description)


class GridShortestPathLayer(PerturbedLayerOptions):
    """`layer: {name: grid_shortest_path, ...}`: `pl.PerturbedShortestPath` on vertex
    costs (they must stay positive: use `perturbation: multiplicative`, or a small
    sigma against costs kept away from 0)."""

    name: Literal["grid_shortest_path"]
    connectivity: Literal[4, 8] = Field(8, description="8: king moves, 4: rook moves")

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, WarcraftTask)
        return pl.PerturbedShortestPath(
            connectivity=self.connectivity, **self.common(sample_axis)
        )
