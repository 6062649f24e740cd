"""The optax "Perturbed optimizers" notebook, written with perturbed_layers.

The notebook (`examples/perturbations.ipynb` in the optax repository) walks through
four things; each is one function here, and `main` runs them in turn.

1. **Perturbed argmax next to softmax.** With Gumbel noise, the perturbed one-hot
    argmax y_ε(θ) = E[onehot(argmax(θ + σZ))] is exactly softmax(θ/σ). We print both,
    side by side, for the two rows of the TensorFlow README (σ = 0.5), with
    M = 10,000 samples and one independent estimate per row.
2. **Gradient descent through the perturbed argmax.** 200 steps of `optax.sgd`
    (learning rate 0.5, M = 100) on ℓ(θ) = ‖y_ε(θ) − y_true‖², with
    y_true = (2, 3, 4, 5, 6)/20. Because y_ε = softmax(θ/σ) here, we can also print
    the loss exactly, with no Monte-Carlo noise.
3. **Gradient descent through perturbed ranks.** 20 steps (learning rate 0.1,
    σ = 0.2, M = 100) on ℓ(θ) = ‖r_ε(θ) − (0, 1, …, 5)‖², from θ drawn with
    `jax.random.normal(jax.random.key(0), (6,))`. As in the notebook, most items
    reach their target rank and the loss then stalls (near 12): an item whose gaps to
    its neighbours are many σ wide has a perturbed rank that hardly moves with θ, so
    its gradient all but vanishes.
4. **Pytrees.** An argmax applied to every leaf of a pytree, smoothed as a whole
    with `pl.make_perturbed_fun` (optax's function, same signature), and then as a
    `pl.Perturbed` layer over the flattened tree whose solver returns the tree. One
    gradient step on ℓ(x) = Σ_leaves ‖argmax(x) − y_ε(x)‖²/4 lowers the loss. As in
    the notebook's cell, σ = 0.2.

Run it with `python examples/optax_notebook.py [--out DIR] [--seed S]` (after
`pip install -e .`); it writes `optax_notebook.png` (both descents' loss curves) into
`DIR` (default `runs/examples`). `main` returns the key numbers as a dict.
"""

import argparse
import functools as ft
import pathlib
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, Float, PRNGKeyArray, PyTree
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

import perturbed_layers as pl
from perturbed_layers.solvers import argmax_one_hot, ranks

# The two rows of the TensorFlow README; row 1 is the optax notebook's `values`.
THETA_README = jnp.array([[-0.6, 1.9, -0.2, 1.1, -1.0], [-0.6, 1.0, -0.2, 1.8, -1.0]])


def _fmt(x: Any) -> str:
    return np.array2string(np.asarray(x), precision=4, suppress_small=True)


# ------------------------------------------------------ 1. argmax next to softmax


def argmax_vs_softmax(
    key: PRNGKeyArray, *, num_samples: int = 10_000, sigma: float = 0.5
) -> dict[str, Any]:
    """Print the Gumbel-perturbed argmax and softmax(θ/σ) side by side.

    **Returns:** a dict with `perturbed`, `softmax` and `max_abs_diff`.
    """
    layer = pl.PerturbedArgmax(num_samples=num_samples, sigma=sigma, noise=pl.Gumbel())
    perturbed = eqx.filter_jit(layer)(THETA_README, key=key)
    softmax = jax.nn.softmax(THETA_README / sigma, axis=-1)
    print(f"Perturbed argmax (Gumbel, σ = {sigma}, M = {num_samples}) vs softmax(θ/σ)")
    print(
        f"{'row':>3} {'i':>2} {'θ_i':>6} {'perturbed':>10} {'softmax':>9} {'diff':>8}"
    )
    for b in range(THETA_README.shape[0]):
        for i in range(THETA_README.shape[1]):
            p, s = float(perturbed[b, i]), float(softmax[b, i])
            print(
                f"{b:>3} {i:>2} {float(THETA_README[b, i]):>6.2f} "
                f"{p:>10.4f} {s:>9.4f} {p - s:>+8.4f}"
            )
    max_abs_diff = float(jnp.max(jnp.abs(perturbed - softmax)))
    print(f"largest |perturbed − softmax| = {max_abs_diff:.4f}\n")
    return dict(
        perturbed=np.asarray(perturbed),
        softmax=np.asarray(softmax),
        max_abs_diff=max_abs_diff,
    )


# ----------------------------------------------------- 2. and 3. gradient descent


def _descend(
    loss_fn: Callable[[Array, PRNGKeyArray], Array],
    theta: Array,
    key: PRNGKeyArray,
    *,
    steps: int,
    learning_rate: float,
) -> tuple[Array, Array]:
    """`steps` of `optax.sgd` on `loss_fn(theta, key)`, a fresh key per step.

    The whole descent is one `lax.scan`, compiled once. Returns θ at every step
    (the initial one first, shape `(steps + 1, n)`) and the Monte-Carlo loss seen at
    each step (shape `(steps,)`).
    """
    optimiser = optax.sgd(learning_rate)

    def step(carry, key):
        theta, opt_state = carry
        loss, grad = jax.value_and_grad(loss_fn)(theta, key)
        updates, opt_state = optimiser.update(grad, opt_state)
        return (optax.apply_updates(theta, updates), opt_state), (theta, loss)

    @jax.jit
    def run(theta, key):
        init = (theta, optimiser.init(theta))
        (last, _), (thetas, losses) = jax.lax.scan(
            step, init, jax.random.split(key, steps)
        )
        return jnp.concatenate([thetas, last[None]]), losses

    return run(theta, key)


def argmax_descent(
    key: PRNGKeyArray,
    *,
    steps: int = 200,
    learning_rate: float = 0.5,
    num_samples: int = 100,
    sigma: float = 0.5,
) -> dict[str, Any]:
    """Gradient descent on ‖y_ε(θ) − y_true‖², through the perturbed argmax.

    **Returns:** a dict with `losses` (the Monte-Carlo loss at each step),
    `exact_losses` (the loss at each step's θ with y_ε = softmax(θ/σ), no noise),
    `initial_loss` and `final_loss` (exact), and the final `theta`.
    """
    theta0 = THETA_README[0]
    n = theta0.shape[0]
    y_true = (jnp.arange(n) + 2) / jnp.sum(jnp.arange(n) + 2)
    layer = pl.PerturbedArgmax(num_samples=num_samples, sigma=sigma, noise=pl.Gumbel())

    def loss_fn(theta, key):
        return jnp.sum((layer(theta, key=key) - y_true) ** 2)

    def exact_loss(theta):
        return jnp.sum((jax.nn.softmax(theta / sigma, axis=-1) - y_true) ** 2, axis=-1)

    key_run, key_show = jax.random.split(key)
    thetas, losses = _descend(
        loss_fn, theta0, key_run, steps=steps, learning_rate=learning_rate
    )
    exact = np.asarray(exact_loss(thetas))
    theta = thetas[-1]
    # Before and after as one batch of two instances, each with its own noise.
    shown = eqx.filter_jit(layer)(jnp.stack([theta0, theta]), key=key_show)
    print(
        f"Gradient descent through the perturbed argmax ({steps} steps of sgd, "
        f"lr {learning_rate}, M = {num_samples}, σ = {sigma})"
    )
    print(f"  initial θ        = {_fmt(theta0)}")
    print(f"  initial one-hot  = {_fmt(argmax_one_hot(theta0))}")
    print(f"  initial y_ε(θ)   = {_fmt(shown[0])}")
    print(f"  θ after descent  = {_fmt(theta)}")
    print(f"  one-hot after    = {_fmt(argmax_one_hot(theta))}")
    print(f"  y_ε(θ) after     = {_fmt(shown[1])}")
    print(f"  target y_true    = {_fmt(y_true)}")
    print(f"  loss (exact)     = {exact[0]:.4f} -> {exact[-1]:.6f}\n")
    return dict(
        initial_loss=float(exact[0]),
        final_loss=float(exact[-1]),
        losses=np.asarray(losses),
        exact_losses=exact,
        theta=np.asarray(theta),
    )


def ranking_descent(
    key: PRNGKeyArray,
    *,
    steps: int = 20,
    learning_rate: float = 0.1,
    num_samples: int = 100,
    sigma: float = 0.2,
    num_eval_samples: int = 10_000,
) -> dict[str, Any]:
    """Gradient descent on ‖r_ε(θ) − (0, …, n − 1)‖², through perturbed ranks.

    **Returns:** a dict with `losses` (the Monte-Carlo loss at each step),
    `initial_loss` and `final_loss` (estimated with `num_eval_samples` samples), and
    the final `theta`.
    """
    theta0 = jax.random.normal(jax.random.key(0), (6,))  # the notebook's `values`
    n = theta0.shape[0]
    y_true = jnp.arange(n, dtype=theta0.dtype)
    layer = pl.PerturbedRanking(num_samples=num_samples, sigma=sigma, noise=pl.Gumbel())
    precise = pl.PerturbedRanking(
        num_samples=num_eval_samples, sigma=sigma, noise=pl.Gumbel()
    )

    def loss_fn(theta, key):
        return jnp.sum((layer(theta, key=key) - y_true) ** 2)

    key_run, key_eval = jax.random.split(key)
    thetas, losses = _descend(
        loss_fn, theta0, key_run, steps=steps, learning_rate=learning_rate
    )
    theta = thetas[-1]
    shown = eqx.filter_jit(precise)(jnp.stack([theta0, theta]), key=key_eval)
    initial, final = (float(v) for v in jnp.sum((shown - y_true) ** 2, axis=-1))
    print(
        f"Gradient descent through perturbed ranks ({steps} steps of sgd, "
        f"lr {learning_rate}, M = {num_samples}, σ = {sigma})"
    )
    print(f"  initial θ        = {_fmt(theta0)}")
    print(f"  initial ranks    = {_fmt(ranks(theta0))}")
    print(f"  initial r_ε(θ)   = {_fmt(shown[0])}")
    print(f"  θ after descent  = {_fmt(theta)}")
    print(f"  ranks after      = {_fmt(ranks(theta))}")
    print(f"  r_ε(θ) after     = {_fmt(shown[1])}")
    print(f"  target ranks     = {_fmt(y_true)}")
    print(f"  loss (M = {num_eval_samples}) = {initial:.3f} -> {final:.3f}\n")
    return dict(
        initial_loss=initial,
        final_loss=final,
        losses=np.asarray(losses),
        theta=np.asarray(theta),
    )


# ------------------------------------------------------------------ 4. pytrees


def make_tree() -> PyTree[Float[Array, " _"]]:
    """The notebook's example pytree: a tuple holding an array, a dict, an array."""
    return (
        jnp.array([0.1, 0.4, 0.5]),
        {"k1": jnp.array([0.1, 0.2]), "k2": jnp.array([0.1, 0.1])},
        jnp.array([0.4, 0.3, 0.2, 0.1]),
    )


def argmax_tree(tree: PyTree[Float[Array, " _"]]) -> PyTree[Float[Array, " _"]]:
    """The one-hot argmax of every leaf: piecewise constant in every coordinate."""
    return jax.tree.map(argmax_one_hot, tree)


def _tree_loss(tree: PyTree, smoothed: PyTree) -> Array:
    """Σ over leaves of ‖argmax(leaf) − y_ε(leaf)‖²/4 (the notebook's loss)."""
    diffs = jax.tree.map(
        lambda a, b: jnp.sum((a - b) ** 2) / 4, argmax_tree(tree), smoothed
    )
    return sum(jax.tree.leaves(diffs), start=jnp.zeros(()))


def _softmax_tree(tree: PyTree, sigma: float) -> PyTree:
    # Under Gumbel noise each leaf's perturbed argmax is exactly its softmax(x/σ).
    return jax.tree.map(lambda x: jax.nn.softmax(x / sigma), tree)


def pytree_argmax(
    key: PRNGKeyArray,
    *,
    num_samples: int = 1000,
    sigma: float = 0.2,
    learning_rate: float = 0.1,
) -> dict[str, Any]:
    """One gradient step on a loss of the perturbed tree argmax, with two APIs.

    `pl.make_perturbed_fun` takes the tree as it is and treats it as one input
    (optax's semantics). `pl.Perturbed` takes one array, so the tree is flattened with
    `ravel_pytree` and the solver unflattens it and returns the tree of one-hots: a
    pytree output. Each loss is evaluated before and after the step with the same key
    (common random numbers, as in the notebook), and exactly through the per-leaf
    softmax.

    **Returns:** a dict with keys `make_perturbed_fun` and `Perturbed`, each a dict of
    `loss_before`, `loss_after`, `exact_before`, `exact_after`.
    """
    tree = make_tree()
    _, unravel = ravel_pytree(tree)

    # (a) optax's drop-in, called as f(key, tree).
    smooth_fun = pl.make_perturbed_fun(
        argmax_tree, num_samples=num_samples, sigma=sigma, noise=pl.Gumbel()
    )
    # (b) a layer over the flat vector whose solver returns the tree.
    layer = pl.Perturbed(
        lambda v: argmax_tree(unravel(v)),
        num_samples=num_samples,
        sigma=sigma,
        noise=pl.Gumbel(),
        # Adding c to every coordinate leaves every leaf's argmax unchanged.
        shift_invariant=True,
    )
    smoothers = {
        "make_perturbed_fun": lambda tree, key: smooth_fun(key, tree),
        "Perturbed": lambda tree, key: layer(ravel_pytree(tree)[0], key=key),
    }

    @ft.partial(jax.jit, static_argnums=0)
    def one_step(name, tree, key):
        def loss_fn(tree):
            smoothed = smoothers[name](tree, key)
            return _tree_loss(tree, smoothed), smoothed

        (before, smoothed), grad = jax.value_and_grad(loss_fn, has_aux=True)(tree)
        stepped = jax.tree.map(lambda x, g: x - learning_rate * g, tree, grad)
        after, _ = loss_fn(stepped)
        exact = [_tree_loss(t, _softmax_tree(t, sigma)) for t in (tree, stepped)]
        return before, after, exact, smoothed

    print(
        f"Pytree argmax (Gumbel, σ = {sigma}, M = {num_samples}; one gradient step "
        f"of size {learning_rate} on Σ_leaves ‖argmax − y_ε‖²/4)"
    )
    results: dict[str, Any] = {}
    smoothed = {}
    for name, k in zip(smoothers, jax.random.split(key), strict=True):
        before, after, exact, smoothed[name] = one_step(name, tree, k)
        results[name] = dict(
            loss_before=float(before),
            loss_after=float(after),
            exact_before=float(exact[0]),
            exact_after=float(exact[1]),
        )
    print(f"  {'leaf':<10} {'argmax':<15} {'make_perturbed_fun':<27} Perturbed")
    columns = [argmax_tree(tree), smoothed["make_perturbed_fun"], smoothed["Perturbed"]]
    paths = jax.tree_util.tree_flatten_with_path(tree)[0]
    for i, (path, _) in enumerate(paths):
        cells = [_fmt(jax.tree.leaves(c)[i]) for c in columns]
        widths = (15, 27, 27)
        row = " ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))
        print(f"  {jax.tree_util.keystr(path):<10} {row}".rstrip())
    for name, row in results.items():
        print(
            f"  {name}: loss {row['loss_before']:.3f} -> {row['loss_after']:.3f} "
            f"(exact {row['exact_before']:.3f} -> {row['exact_after']:.3f})"
        )
    print()
    return results


# ------------------------------------------------------------------------ main


def _plot(argmax: dict[str, Any], ranking: dict[str, Any], path: pathlib.Path) -> None:
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.plot(argmax["losses"], lw=0.8, alpha=0.6, label="Monte-Carlo loss, M = 100")
    ax1.plot(argmax["exact_losses"], lw=2, label="exact loss, y_ε = softmax(θ/σ)")
    ax1.set_yscale("log")
    ax1.set_title("Perturbed argmax: ‖y_ε(θ) − y_true‖²")
    ax1.set_xlabel("sgd step")
    ax1.legend()
    ax2.plot(ranking["losses"], marker="o", label="Monte-Carlo loss, M = 100")
    ax2.set_title("Perturbed ranks: ‖r_ε(θ) − (0, 1, …, 5)‖²")
    ax2.set_xlabel("sgd step")
    ax2.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.legend()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the four parts, print them, save the figure; return the key numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("runs/examples"),
        help="folder for the figure (created if missing)",
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    keys = jax.random.split(jax.random.key(args.seed), 4)
    results = dict(
        softmax=argmax_vs_softmax(keys[0]),
        argmax_descent=argmax_descent(keys[1]),
        ranking_descent=ranking_descent(keys[2]),
        pytree=pytree_argmax(keys[3]),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "optax_notebook.png"
    _plot(results["argmax_descent"], results["ranking_descent"], figure)
    print(f"figure: {figure}")
    results["figure"] = str(figure)
    return results


if __name__ == "__main__":
    main()
