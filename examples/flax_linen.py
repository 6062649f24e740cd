"""Flax Linen: an MLP whose head is a perturbed ranking, trained with the Fenchel–Young loss.

The perturbed layers and losses of `perturbed_layers` are Equinox modules whose whole
configuration is static (no arrays), so a `linen.Module` takes one as a dataclass field
(hashable, like any Linen hyperparameter) or builds it in `setup`; no adapter needed.
The PRNG key comes from the Linen RNG stream `"perturb"` with
`self.make_rng("perturb")`, fed by `apply(..., rngs={"perturb": key})`, under `jax.jit`.

Data: features x ∈ ℝ⁸ standard normal; the target is the ranking (0 for the smallest)
of five items whose true scores are x·W for a fixed random W. The model maps x to
five scores θ; the loss is the Fenchel–Young loss of the perturbed ranking
(Normal noise), whose gradient is y_σ(θ) − y with y_σ(θ) = E[ranks(θ + σZ)]:

    L(θ; y) = E[max_{π} ⟨π, θ + σZ⟩] − ⟨θ, y⟩.

Reported: the training loss and, on held-out data, the fraction of item pairs that the
model orders as the target does, and the fraction of exactly right rankings.

Run `python examples/flax_linen.py [--epochs N] [--seed S]` (after
`pip install -e ".[flax]"`). `main` returns the per-epoch numbers as a dict.
"""

import argparse
import time
from typing import Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

import perturbed_layers as pl


def make_data(
    key: PRNGKeyArray,
    *,
    num_train: int = 2000,
    num_test: int = 500,
    num_features: int = 8,
    num_items: int = 5,
) -> tuple[Array, Array, Array, Array]:
    """(x_train, y_train, x_test, y_test); y the ranks of x·W, W fixed."""
    k_w, k_x = jax.random.split(key)
    w = jax.random.normal(k_w, (num_features, num_items))
    x = jax.random.normal(k_x, (num_train + num_test, num_features))
    y = pl.solvers.ranks(x @ w)
    return x[:num_train], y[:num_train], x[num_train:], y[num_train:]


class PerturbedRanker(nn.Module):
    """Two dense layers to scores θ, then a perturbed ranking head."""

    num_items: int
    head: pl.PerturbedRanking  # static configuration, hashable
    hidden: int = 32

    def setup(self):
        self.dense_hidden = nn.Dense(self.hidden)
        self.dense_out = nn.Dense(self.num_items)
        self.fy_loss = pl.FenchelYoungLoss(self.head)

    def scores(self, x: Float[Array, "batch features"]) -> Float[Array, "batch items"]:
        return self.dense_out(nn.relu(self.dense_hidden(x)))

    def __call__(
        self, x: Float[Array, "batch features"]
    ) -> Float[Array, "batch items"]:
        """y_σ(θ(x)), the expected ranks under the noise."""
        return self.head(self.scores(x), key=self.make_rng("perturb"))

    def loss(
        self, x: Float[Array, "batch features"], y: Float[Array, "batch items"]
    ) -> Float[Array, ""]:
        """The Fenchel–Young loss averaged over the batch."""
        return self.fy_loss(self.scores(x), y, key=self.make_rng("perturb")).mean()


def make_train_step(model: PerturbedRanker, optimizer: optax.GradientTransformation):
    @jax.jit
    def train_step(params, opt_state, x, y, key):
        def loss_fn(p):
            return model.apply(p, x, y, method=model.loss, rngs={"perturb": key})

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return train_step


def make_evaluate(model: PerturbedRanker):
    @jax.jit
    def evaluate(params, x, y):
        """(pairwise order agreement, exact-ranking accuracy) of the hard ranks."""
        theta = cast(Array, model.apply(params, x, method=model.scores))
        predicted = pl.solvers.ranks(theta)
        same_order = jnp.sign(predicted[:, :, None] - predicted[:, None, :]) == (
            jnp.sign(y[:, :, None] - y[:, None, :])
        )
        n = y.shape[-1]
        pairs = (jnp.sum(same_order, axis=(1, 2)) - n) / (n * (n - 1))
        exact = jnp.all(predicted == y, axis=-1)
        return jnp.mean(pairs), jnp.mean(exact)

    return evaluate


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
    head = pl.PerturbedRanking(
        num_samples=args.num_samples, sigma=args.sigma, noise=pl.Normal()
    )
    model = PerturbedRanker(num_items=y_train.shape[1], head=head)
    k_params, k_perturb = jax.random.split(jax.random.key(args.seed + 1))
    params = model.init(
        {"params": k_params, "perturb": k_perturb}, x_train[:1], method=model.scores
    )
    optimizer = optax.adam(args.learning_rate)
    opt_state = optimizer.init(params)
    train_step, evaluate = make_train_step(model, optimizer), make_evaluate(model)
    order = np.random.default_rng(args.seed)

    history: dict[str, list[float]] = {
        "train_loss": [],
        "test_pair_accuracy": [],
        "test_exact_accuracy": [],
    }
    num_batches = x_train.shape[0] // args.batch_size
    step = 0
    for epoch in range(args.epochs):
        perm = order.permutation(x_train.shape[0])
        losses = []
        for b in range(num_batches):
            idx = perm[b * args.batch_size : (b + 1) * args.batch_size]
            key = jax.random.fold_in(k_perturb, step)
            params, opt_state, loss = train_step(
                params, opt_state, x_train[idx], y_train[idx], key
            )
            losses.append(loss)
            step += 1
        pairs, exact = evaluate(params, x_test, y_test)
        history["train_loss"].append(float(jnp.mean(jnp.stack(losses))))
        history["test_pair_accuracy"].append(float(pairs))
        history["test_exact_accuracy"].append(float(exact))
        print(
            f"epoch {epoch + 1:2d}  train FY loss (M={args.num_samples}) "
            f"{history['train_loss'][-1]:.4f}  test pairs ordered right {pairs:.3f}  "
            f"exact rankings {exact:.3f}"
        )
    seconds = time.perf_counter() - start
    print(f"done in {seconds:.1f} s")
    return {**history, "seconds": seconds}


if __name__ == "__main__":
    main()
