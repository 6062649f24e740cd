"""Draw the figures of the layer pages into docs/figures/ (PNG).

Run `python docs/make_figures.py` after a change that moves what they show; the PNGs
are committed, so building the site does not need JAX to run the layers. Keys and
sizes are pinned: a rerun redraws the same figures. About half a minute on a CPU.
"""

import pathlib

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

import perturbed_layers as pl

OUT = pathlib.Path(__file__).resolve().parent / "figures"
SIGMAS = (0.2, 0.5, 1.0)
COLOURS = ("tab:blue", "tab:orange", "tab:green")


def _save(fig, name: str) -> None:
    OUT.mkdir(exist_ok=True)
    fig.savefig(OUT / name, dpi=110, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name}")


def argmax_figure() -> None:
    """y_ε(θ)₀ and its derivative in θ₀ along θ = (t, 0.5, −0.5), against softmax."""
    t = jnp.linspace(-3.0, 3.0, 61)
    thetas = jnp.stack([t, jnp.full_like(t, 0.5), jnp.full_like(t, -0.5)], axis=-1)
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.3))
    hard = pl.solvers.argmax_one_hot(thetas)[:, 0]
    left.plot(t, hard, color="k", lw=1, label="argmax (σ = 0)")
    for sigma, colour in zip(SIGMAS, COLOURS, strict=True):
        layer = pl.PerturbedArgmax(num_samples=500, sigma=sigma, noise=pl.Gumbel())

        def first(theta, layer=layer):
            y0 = layer(theta, key=jax.random.key(0))[:, 0]
            return y0.sum(), y0  # rows are independent: the gradient is per row

        (_, y0), dy0 = jax.jit(jax.value_and_grad(first, has_aux=True))(thetas)
        soft = jax.nn.softmax(thetas / sigma, axis=-1)[:, 0]
        left.plot(t, soft, color=colour, lw=1.5, alpha=0.6)
        left.plot(t, y0, ".", color=colour, ms=3, label=f"σ = {sigma}")
        right.plot(t, soft * (1 - soft) / sigma, color=colour, lw=1.5, alpha=0.6)
        right.plot(t, dy0[:, 0], ".", color=colour, ms=3)
    left.set(xlabel="θ₀ (θ₁ = 0.5, θ₂ = −0.5)", ylabel="y_ε(θ)₀")
    left.set_title("forward: M = 500 samples (dots), softmax(θ/σ) (lines)", fontsize=9)
    right.set(xlabel="θ₀", ylabel="∂y_ε(θ)₀ / ∂θ₀")
    right.set_title("backward: our estimator (dots), exact (lines)", fontsize=9)
    left.legend(fontsize=8)
    _save(fig, "argmax.png")


def ranking_figure() -> None:
    """Expected rank of item 0 along θ = (t, 0, 0.8, −0.8), Normal noise."""
    t = jnp.linspace(-2.0, 2.0, 81)
    rest = jnp.broadcast_to(jnp.array([0.0, 0.8, -0.8]), (t.shape[0], 3))
    thetas = jnp.concatenate([t[:, None], rest], axis=-1)
    fig, ax = plt.subplots(figsize=(6, 3.3))
    ax.plot(t, pl.solvers.ranks(thetas)[:, 0], color="k", lw=1, label="ranks (σ = 0)")
    for sigma, colour in zip(SIGMAS, COLOURS, strict=True):
        layer = pl.PerturbedRanking(num_samples=500, sigma=sigma, noise=pl.Normal())
        r0 = jax.jit(lambda th, layer=layer: layer(th, key=jax.random.key(1)))(thetas)
        ax.plot(t, r0[:, 0], color=colour, label=f"σ = {sigma}")
    ax.set(xlabel="θ₀ (other scores −0.8, 0, 0.8)", ylabel="E[rank of item 0]")
    ax.set_title("perturbed ranks: 0 = smallest, M = 500", fontsize=9)
    ax.legend(fontsize=8)
    _save(fig, "ranking.png")


def topk_figure() -> None:
    """Hard top-3 against the perturbed inclusion probabilities, Gumbel noise."""
    theta = jnp.array([1.2, -0.3, 0.9, 0.1, 1.0, -1.1, 0.4, 0.0])
    k = 3
    fig, ax = plt.subplots(figsize=(7, 3.3))
    width = 0.2
    idx = jnp.arange(theta.shape[0])
    hard = pl.solvers.top_k_mask(theta, k)
    ax.bar(idx - 1.5 * width, hard, width, color="k", label="top-3 (σ = 0)")
    for j, (sigma, colour) in enumerate(zip(SIGMAS, COLOURS, strict=True)):
        layer = pl.PerturbedTopK(k, num_samples=2000, sigma=sigma, noise=pl.Gumbel())
        y = layer(theta, key=jax.random.key(2))
        ax.bar(idx + (j - 0.5) * width, y, width, color=colour, label=f"σ = {sigma}")
    ax.set_xticks(list(range(theta.shape[0])))
    ax.set_xticklabels([f"{float(v):+.1f}" for v in theta])
    ax.set(xlabel="score θᵢ", ylabel="P(i in the top 3)")
    ax.set_title("perturbed top-k: each bar group sums to k = 3, M = 2000", fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.2))
    _save(fig, "topk.png")


def _terrain(key, side: int = 12) -> jax.Array:
    """Warcraft-like costs: smoothed noise cut at quantiles into five terrain costs."""
    noise = jax.random.normal(key, (side, side))
    kernel = jnp.ones((5, 5)) / 25
    smooth = jax.scipy.signal.convolve2d(noise, kernel, mode="same")
    levels = jnp.quantile(smooth, jnp.array([0.35, 0.6, 0.75, 0.9]))
    costs = jnp.array([0.8, 1.2, 5.3, 7.7, 9.2])
    return costs[jnp.searchsorted(levels, smooth)]


def shortest_path_figure() -> None:
    """Costs, the shortest path, and the perturbed path (multiplicative noise)."""
    costs = _terrain(jax.random.key(3))
    hard = pl.solvers.grid_shortest_path(costs)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.4))
    image = axes[0].imshow(costs, cmap="YlOrBr")
    fig.colorbar(image, ax=axes[0], fraction=0.046)
    axes[0].set_title("vertex costs", fontsize=9)
    axes[1].imshow(hard, cmap="Greys", vmin=0, vmax=1)
    axes[1].set_title(
        f"y*: shortest path, cost {float(jnp.sum(hard * costs)):.1f}", fontsize=9
    )
    layer = pl.PerturbedShortestPath(
        num_samples=200, sigma=0.5, noise=pl.Normal(), perturbation="multiplicative"
    )
    soft = jax.jit(lambda c: layer(c, key=jax.random.key(4)))(costs)
    image = axes[2].imshow(soft, cmap="Greys", vmin=0, vmax=1)
    fig.colorbar(image, ax=axes[2], fraction=0.046)
    axes[2].set_title("y_ε: multiplicative σ = 0.5, M = 200", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, "shortest_path.png")


def main() -> None:
    argmax_figure()
    ranking_figure()
    topk_figure()
    shortest_path_figure()


if __name__ == "__main__":
    main()
