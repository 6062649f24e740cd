"""Quick start: train an Equinox MLP through a perturbed argmax, on CPU, in seconds.

The data are generated here: features x ∈ ℝ⁸ are standard normal, and the label of x
is the argmax of the (per-class standardised) scores of a fixed, randomly initialised
"teacher" MLP. A model that recovers the teacher's decision regions is always right;
guessing the commonest class is right about a quarter of the time.

The student is an `eqx.nn.MLP` that maps x to five scores θ. Instead of
cross-entropy, it is trained with the perturbed Fenchel–Young loss of the perturbed
argmax,

    L(θ; y) = E[max_i (θ + σZ)_i] − ⟨θ, y⟩,   ∇_θ L = y_σ(θ) − y,

where y is the one-hot label and y_σ(θ) = E[onehot(argmax(θ + σZ))], estimated with
M Gumbel samples per example. (The Ω term of the full loss does not depend on θ and
is left out.)

With Gumbel noise the expectation has a closed form, E[max_i (θ + σZ)_i] =
σ logsumexp(θ/σ) + σγ (γ is Euler's constant): the loss is then σ times the
cross-entropy of softmax(θ/σ), plus σγ, so it is never below σγ ≈ 0.577σ. The script
prints this exact test loss beside the Monte-Carlo training loss, as a check of the
estimator.

Each training step (loss, gradient, Adam update) is one `eqx.filter_jit`-compiled
function. Per epoch the script prints the training loss, the exact test loss and the
test accuracy, and at the end it saves `quickstart.png` (loss and accuracy per epoch).

Run it with `python examples/quickstart.py [--out DIR] [--epochs N] [--seed S]` (after
`pip install -e .`); figures go to `DIR` (default `runs/examples`). `main` returns
the per-epoch numbers as a dict.
"""

import argparse
import pathlib
import time
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import perturbed_layers as pl

EULER_GAMMA = 0.5772156649015329


# ------------------------------------------------------------------------- data


def make_data(
    key: PRNGKeyArray,
    *,
    num_train: int = 4000,
    num_test: int = 1000,
    num_features: int = 8,
    num_classes: int = 5,
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    """Features x ~ N(0, I) labelled by the argmax of a random teacher MLP.

    **Returns:** `(x_train, y_train), (x_test, y_test)`, labels as integers.
    """
    key_teacher, key_x = jax.random.split(key)
    teacher = eqx.nn.MLP(
        num_features, num_classes, width_size=32, depth=2, key=key_teacher
    )
    x = jax.random.normal(key_x, (num_train + num_test, num_features))
    scores = jax.vmap(teacher)(x)
    # Standardise each class's score over the sample, so that no class dominates.
    scores = (scores - jnp.mean(scores, axis=0)) / jnp.std(scores, axis=0)
    y = jnp.argmax(scores, axis=-1)
    return (x[:num_train], y[:num_train]), (x[num_train:], y[num_train:])


# ------------------------------------------------------------------- training


@eqx.filter_jit
def train_step(
    model: eqx.nn.MLP,
    opt_state: optax.OptState,
    loss: pl.FenchelYoungLoss,
    optimiser: optax.GradientTransformation,
    x: Float[Array, "B d"],
    y: Int[Array, " B"],
    *,
    key: PRNGKeyArray,
) -> tuple[eqx.nn.MLP, optax.OptState, Float[Array, ""]]:
    """One step: the mean Fenchel–Young loss of a batch, its gradient, an update."""

    def mean_loss(model):
        theta = jax.vmap(model)(x)
        y_true = jax.nn.one_hot(y, theta.shape[-1], dtype=theta.dtype)
        return jnp.mean(loss(theta, y_true, key=key))

    value, grads = eqx.filter_value_and_grad(mean_loss)(model)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimiser.update(grads, opt_state, params)
    return eqx.apply_updates(model, updates), opt_state, value


@eqx.filter_jit
def evaluate(
    model: eqx.nn.MLP, sigma: float, x: Float[Array, "N d"], y: Int[Array, " N"]
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """The exact expected Fenchel–Young loss under Gumbel noise, and the accuracy.

    The prediction is the unperturbed argmax of the scores.
    """
    theta = jax.vmap(model)(x)
    top = sigma * jax.nn.logsumexp(theta / sigma, axis=-1) + sigma * EULER_GAMMA
    loss = jnp.mean(top - jnp.take_along_axis(theta, y[:, None], axis=-1)[:, 0])
    accuracy = jnp.mean(jnp.argmax(theta, axis=-1) == y)
    return loss, accuracy


def train(
    key: PRNGKeyArray,
    *,
    epochs: int = 10,
    batch_size: int = 50,
    learning_rate: float = 3e-3,
    num_samples: int = 10,
    sigma: float = 1.0,
    num_classes: int = 5,
) -> dict[str, Any]:
    """Generate the data, train the MLP, print one line per epoch.

    **Returns:** a dict with the lists `train_loss` (mean Monte-Carlo loss of each
    epoch), `test_loss` (exact) and `test_accuracy` (both from epoch 0, before
    training, on), `chance` (the share of the commonest training class) and
    `seconds` (training time, compilation included).
    """
    key_data, key_model, key_loop = jax.random.split(key, 3)
    (x_train, y_train), (x_test, y_test) = make_data(key_data, num_classes=num_classes)
    model = eqx.nn.MLP(x_train.shape[-1], num_classes, 64, 2, key=key_model)
    loss = pl.FenchelYoungLoss(
        pl.PerturbedArgmax(num_samples=num_samples, sigma=sigma, noise=pl.Gumbel())
    )
    optimiser = optax.adam(learning_rate)
    opt_state = optimiser.init(eqx.filter(model, eqx.is_inexact_array))

    counts = np.bincount(np.asarray(y_train), minlength=num_classes)
    chance = float(counts.max() / counts.sum())  # always guessing the commonest class
    print(
        f"data: {len(x_train)} train / {len(x_test)} test examples, "
        f"{x_train.shape[-1]} features, {num_classes} classes "
        f"(train counts {counts.tolist()}); chance accuracy {chance:.3f}"
    )
    print(
        f"model: MLP 64x2; loss: FenchelYoungLoss(PerturbedArgmax(M = {num_samples}, "
        f"σ = {sigma}, Gumbel)); Adam {learning_rate}, batch {batch_size}"
    )
    test_loss, test_accuracy = evaluate(model, sigma, x_test, y_test)
    history: dict[str, Any] = dict(
        train_loss=[],
        test_loss=[float(test_loss)],
        test_accuracy=[float(test_accuracy)],
    )
    print(
        f"epoch  0  train loss      -  test loss {float(test_loss):.4f}  "
        f"test accuracy {float(test_accuracy):.3f}"
    )
    # Batches are sliced on the host (NumPy), which is cheaper than a device gather
    # per step; `eqx.filter_jit` traces NumPy arrays like JAX arrays.
    x_host, y_host = np.asarray(x_train), np.asarray(y_train)
    num_batches = len(x_host) // batch_size
    start = time.perf_counter()
    for epoch, key_epoch in enumerate(jax.random.split(key_loop, epochs), start=1):
        key_perm, key_steps = jax.random.split(key_epoch)
        order = np.asarray(jax.random.permutation(key_perm, len(x_host)))
        values = []
        for i, key_step in enumerate(jax.random.split(key_steps, num_batches)):
            idx = order[i * batch_size : (i + 1) * batch_size]
            model, opt_state, value = train_step(
                model,
                opt_state,
                loss,
                optimiser,
                x_host[idx],
                y_host[idx],
                key=key_step,
            )
            values.append(value)  # no float() here: it would wait for every step
        train_loss = float(jnp.mean(jnp.stack(values)))
        test_loss, test_accuracy = evaluate(model, sigma, x_test, y_test)
        history["train_loss"].append(train_loss)
        history["test_loss"].append(float(test_loss))
        history["test_accuracy"].append(float(test_accuracy))
        print(
            f"epoch {epoch:>2}  train loss {train_loss:.4f}  "
            f"test loss {history['test_loss'][-1]:.4f}  "
            f"test accuracy {history['test_accuracy'][-1]:.3f}"
        )
    history["seconds"] = time.perf_counter() - start
    history["chance"] = chance
    print(f"trained in {history['seconds']:.1f} s")
    return history


# ------------------------------------------------------------------------- main


def _plot(history: dict[str, Any], path: pathlib.Path) -> None:
    epochs = np.arange(len(history["test_loss"]))
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(epochs[1:], history["train_loss"], marker="o", label="train (Monte Carlo)")
    ax1.plot(epochs, history["test_loss"], marker="s", label="test (exact, Gumbel)")
    ax1.set_title("Perturbed Fenchel–Young loss (Ω omitted)")
    ax1.set_xlabel("epoch")
    ax1.legend()
    ax2.plot(epochs, history["test_accuracy"], marker="o", label="test accuracy")
    ax2.axhline(
        history["chance"], color="grey", ls="--", label="chance (commonest class)"
    )
    ax2.set_ylim(0, 1)
    ax2.set_title("Test accuracy")
    ax2.set_xlabel("epoch")
    ax2.legend(loc="lower right")
    for ax in (ax1, ax2):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, print per epoch, save the figure; return the history."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("runs/examples"),
        help="folder for the figure (created if missing)",
    )
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    history = train(jax.random.key(args.seed), epochs=args.epochs)
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "quickstart.png"
    _plot(history, figure)
    print(f"figure: {figure}")
    history["figure"] = str(figure)
    return history


if __name__ == "__main__":
    main()
