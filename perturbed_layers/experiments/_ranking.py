"""Label ranking on synthetic data: features → scores → rankings of the labels.

Generation (NumPy, `np.random.default_rng(seed)`): a teacher matrix W (L × p) and
features x (n × p), both standard normal; latent scores s = x Wᵀ / √p (unit variance);
observed labels are the ranks of noisy scores, y = ranks(s + τ g) with g standard normal
(0 for the lowest score, L − 1 for the highest). A model predicts scores θ; its ranking
is ranks(θ) (`pl.solvers.ranks`, which maximises ⟨y, θ⟩ over permutations).

Metric: Spearman's rank correlation between predicted and observed ranks, per test
instance, 1 − 6 Σ (ŷ − y)² / (L (L² − 1)), averaged over the test set.
"""

from typing import Any, ClassVar, Literal

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array
from pydantic import Field

import perturbed_layers as pl

from ._options import (
    DataOptions,
    NonNegativeFloat,
    PerturbedLayerOptions,
    PositiveInt,
)
from ._tasks import AbstractTask, Batch, Dataset


def label_ranking_data(
    num_data: int,
    num_features: int = 16,
    num_labels: int = 10,
    noise: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features `(n, p)`, observed ranks `(n, L)` and latent scores `(n, L)`, float32.

    ```python
    from perturbed_layers.experiments import label_ranking_data

    x, y, scores = label_ranking_data(100, num_features=4, num_labels=5, seed=0)
    sorted(y[0])  # [0.0, 1.0, 2.0, 3.0, 4.0]
    ```
    """
    rng = np.random.default_rng(seed)
    teacher = rng.standard_normal((num_labels, num_features))
    x = rng.standard_normal((num_data, num_features))
    scores = x @ teacher.T / np.sqrt(num_features)
    noisy = scores + noise * rng.standard_normal(scores.shape)
    y = np.argsort(np.argsort(noisy, axis=-1, kind="stable"), axis=-1, kind="stable")
    return x.astype(np.float32), y.astype(np.float32), scores.astype(np.float32)


class RankingTask(AbstractTask):
    """Rank L labels; θ are predicted scores, the prediction is ranks(θ)."""

    headline: ClassVar[str] = "spearman"
    higher_is_better: ClassVar[bool] = True
    layers: ClassVar[tuple[str, ...]] = ("ranking",)

    def metrics(self, theta: Array, y_pred: Array, batch: Batch) -> dict[str, Array]:
        del theta
        n = batch.y.shape[-1]
        squares = jnp.sum((y_pred - batch.y) ** 2, axis=-1)
        return {
            "spearman": 1 - 6 * squares / (n * (n**2 - 1)),
            "top_label": jnp.argmax(y_pred, axis=-1) == jnp.argmax(batch.y, axis=-1),
        }

    def summarise(self, per_instance: dict[str, np.ndarray]) -> dict[str, float]:
        return {
            "spearman": float(np.mean(per_instance["spearman"])),
            "top_label_accuracy": float(np.mean(per_instance["top_label"])),
        }

    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        return np.asarray(jnp.mean(train.y, axis=0)), "mean training ranks"

    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        del theta
        y_true = np.asarray(test.y)[: len(y_pred)].astype(int)
        y_hat = np.asarray(y_pred).astype(int)
        n = y_true.shape[-1]
        counts = np.zeros((n, n))
        np.add.at(counts, (y_true.ravel(), y_hat.ravel()), 1)
        left, right = fig.subplots(1, 2)
        image = left.imshow(counts / counts.sum(axis=1, keepdims=True), cmap="Blues")
        fig.colorbar(image, ax=left, label="share of the labels of this true rank")
        left.set_xlabel("predicted rank")
        left.set_ylabel("true rank")
        left.set_title(f"Test labels: true vs predicted rank ({len(y_true)} instances)")
        squares = np.sum((y_hat - y_true) ** 2, axis=-1)
        right.hist(1 - 6 * squares / (n * (n**2 - 1)), bins=30, range=(-1, 1))
        right.set_xlabel("Spearman correlation")
        right.set_ylabel("test instances")
        right.set_title("Per-instance Spearman correlation")


class LabelRanking(DataOptions):
    """`data: {name: label_ranking, ...}`: synthetic label ranking.

    `noise` is τ, the standard deviation of the noise added to the unit-variance
    latent scores before ranking; the test set is drawn with the training set (the
    last `num_test` of `num_train + num_test` points).
    """

    layers: ClassVar[tuple[str, ...]] = RankingTask.layers

    name: Literal["label_ranking"]
    num_train: PositiveInt = Field(2000, description="training instances")
    num_test: PositiveInt = Field(1000, description="test instances")
    num_features: PositiveInt = Field(16, description="p, features per instance")
    num_labels: int = Field(10, ge=2, description="L, labels to rank")
    noise: NonNegativeFloat = Field(
        0.5, description="τ, noise on the scores before ranking"
    )
    seed: int = Field(0, description="the generator's seed")

    def build(self) -> Dataset:
        x, y, scores = label_ranking_data(
            self.num_train + self.num_test,
            self.num_features,
            self.num_labels,
            self.noise,
            self.seed,
        )
        x, y, scores = jnp.asarray(x), jnp.asarray(y), jnp.asarray(scores)
        cut = self.num_train
        description = (
            f"label ranking: {self.num_train} train / {self.num_test} test, "
            f"{self.num_features} features, {self.num_labels} labels, noise {self.noise}"
        )
        return Dataset(
            Batch(x[:cut], y[:cut], scores[:cut]),
            Batch(x[cut:], y[cut:], scores[cut:]),
            RankingTask(),
            description,
        )


class RankingLayer(PerturbedLayerOptions):
    """`layer: {name: ranking, ...}`: `pl.PerturbedRanking` (ranks, maximised)."""

    name: Literal["ranking"]

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        del task
        return pl.PerturbedRanking(**self.common(sample_axis))
