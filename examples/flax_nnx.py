"""Flax NNX: an MLP whose head is a perturbed argmax, trained with the Fenchel–Young loss.

The perturbed layers and losses of `perturbed_layers` are Equinox modules whose whole
configuration is static (no arrays), so an `nnx.Module` holds them as plain attributes:
NNX keeps them in the graph definition as static values, no adapter needed. The PRNG
key comes from the model's own `nnx.Rngs` stream `"perturb"`, kept the way
`nnx.Dropout` keeps its `"dropout"` stream (`rngs["perturb"].fork()`; with
`nnx.Rngs(0)` alone it falls back to the default stream). Each call draws a fresh key
from the stream, inside `nnx.jit` too.

Data: features x ∈ ℝ⁸ standard normal; the label is the argmax of x·W for a fixed
random W (five classes). The model maps x to five scores θ, trained with

    L(θ; y) = E[max_i (θ + σZ)_i] − ⟨θ, y⟩,   ∇_θ L = y_σ(θ) − y,

estimated with M Gumbel samples per example. With Gumbel noise the expectation has a
closed form, σ logsumexp(θ/σ) + σγ, printed beside the Monte-Carlo training loss.

Run `python examples/flax_nnx.py [--epochs N] [--seed S]` (after
`pip install -e ".[flax]"`). `main` returns the per-epoch numbers as a dict.
"""

import argparse
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jaxtyping import Array, Float, PRNGKeyArray

import perturbed_layers as pl

EULER_GAMMA = 0.5772156649015329


def make_data(
    key: PRNGKeyArray,
    *,
    num_train: int = 2000,
    num_test: int = 500,
    num_features: int = 8,
    num_classes: int = 5,
) -> tuple[Array, Array, Array, Array]:
    """(x_train, y_train, x_test, y_test); y one-hot of argmax(x·W), W fixed."""
    k_w, k_x = jax.random.split(key)
    w = jax.random.normal(k_w, (num_features, num_classes))
    x = jax.random.normal(k_x, (num_train + num_test, num_features))
    y = jax.nn.one_hot(jnp.argmax(x @ w, axis=-1), num_classes)
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:]


class PerturbedClassifier(nnx.Module):
    """Two dense layers to scores θ, then a perturbed argmax head."""

    def __init__(
        self,
        num_features: int,
        num_classes: int,
        *,
        hidden: int = 32,
        num_samples: int = 20,
        sigma: float = 0.5,
        rngs: nnx.Rngs,
    ):
        self.hidden = nnx.Linear(num_features, hidden, rngs=rngs)
        self.out = nnx.Linear(hidden, num_classes, rngs=rngs)
        # Equinox modules without arrays: NNX stores them as static attributes.
        self.head = pl.PerturbedArgmax(
            num_samples=num_samples, sigma=sigma, noise=pl.Gumbel()
        )
        self.fy_loss = pl.FenchelYoungLoss(self.head)
        self.rngs = rngs["perturb"].fork()

    def scores(
        self, x: Float[Array, "batch features"]
    ) -> Float[Array, "batch classes"]:
        return self.out(nnx.relu(self.hidden(x)))

    def __call__(
        self, x: Float[Array, "batch features"]
    ) -> Float[Array, "batch classes"]:
        """y_σ(θ(x)), the expected one-hot prediction under the noise."""
        return self.head(self.scores(x), key=self.rngs())

    def loss(
        self, x: Float[Array, "batch features"], y: Float[Array, "batch classes"]
    ) -> Float[Array, ""]:
        """The Fenchel–Young loss averaged over the batch, with a fresh key."""
        return self.fy_loss(self.scores(x), y, key=self.rngs()).mean()


@nnx.jit
def train_step(
    model: PerturbedClassifier, optimizer: nnx.Optimizer, x: Array, y: Array
) -> Array:
    loss, grads = nnx.value_and_grad(lambda m: m.loss(x, y))(model)
    optimizer.update(model, grads)
    return loss


@nnx.jit
def evaluate(model: PerturbedClassifier, x: Array, y: Array) -> tuple[Array, Array]:
    """(exact test loss, accuracy): the Gumbel closed form needs no samples."""
    theta = model.scores(x)
    sigma = model.head.sigma
    exact = (
        sigma * jax.nn.logsumexp(theta / sigma, axis=-1)
        + sigma * EULER_GAMMA
        - jnp.sum(theta * y, axis=-1)
    )
    accuracy = jnp.mean(jnp.argmax(theta, axis=-1) == jnp.argmax(y, axis=-1))
    return exact.mean(), accuracy


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--num-samples", type=int, default=20)
    parser.add_argument("--sigma", type=float, default=0.5)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    start = time.perf_counter()

    x_train, y_train, x_test, y_test = make_data(jax.random.key(args.seed))
    model = PerturbedClassifier(
        x_train.shape[1],
        y_train.shape[1],
        num_samples=args.num_samples,
        sigma=args.sigma,
        rngs=nnx.Rngs(params=args.seed, perturb=args.seed + 1),
    )
    optimizer = nnx.Optimizer(model, optax.adam(args.learning_rate), wrt=nnx.Param)
    order = np.random.default_rng(args.seed)

    history: dict[str, list[float]] = {
        "train_loss": [],
        "test_loss": [],
        "test_accuracy": [],
    }
    num_batches = x_train.shape[0] // args.batch_size
    for epoch in range(args.epochs):
        perm = order.permutation(x_train.shape[0])
        losses = []
        for b in range(num_batches):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            losses.append(train_step(model, optimizer, x_train[idx], y_train[idx]))
        test_loss, accuracy = evaluate(model, x_test, y_test)
        history["train_loss"].append(float(jnp.mean(jnp.stack(losses))))
        history["test_loss"].append(float(test_loss))
        history["test_accuracy"].append(float(accuracy))
        print(
            f"epoch {epoch + 1:2d}  train FY loss (M={args.num_samples}) "
            f"{history['train_loss'][-1]:.4f}  test loss (exact) "
            f"{history['test_loss'][-1]:.4f}  test accuracy {accuracy:.3f}"
        )
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s")
    return {**history, "seconds": seconds}


if __name__ == "__main__":
    main()
