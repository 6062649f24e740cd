"""Draw the figures of the layer pages into docs/figures/ (PNG).

Run `python docs/make_figures.py` after a change that moves what they show; the PNGs
are committed, so building the site does not need JAX to run the layers. Keys and
sizes are pinned: a rerun redraws the same figures. About half a minute on a CPU.
"""

import pathlib

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np

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


def assignment_figure() -> None:
    """Hard assignment of a 6 × 6 score matrix against y_ε at two noise scales."""
    scores = jax.random.normal(jax.random.key(5), (6, 6))
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.3))
    panels = [("y*: maximum-score assignment", pl.solvers.linear_assignment(scores))]
    for sigma in (0.5, 1.0):
        layer = pl.PerturbedAssignment(num_samples=1000, sigma=sigma, noise=pl.Normal())
        y = jax.jit(lambda s, layer=layer: layer(s, key=jax.random.key(6)))(scores)
        panels.append((f"y_ε: Normal σ = {sigma}, M = 1000", y))
    for ax, (title, y) in zip(axes, panels, strict=True):
        image = ax.imshow(y, cmap="Greys", vmin=0, vmax=1)
        for (i, j), s in np.ndenumerate(np.asarray(scores)):
            ax.text(
                j,
                i,
                f"{s:+.1f}",
                ha="center",
                va="center",
                fontsize=6,
                color="tab:red" if y[i, j] > 0.5 else "tab:blue",
            )
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(image, ax=axes[-1], fraction=0.046)
    _save(fig, "assignment.png")


def knapsack_figure() -> None:
    """P(item packed) for 10 items, 2 resources, against the exact selection."""
    key_w, key_v = jax.random.split(jax.random.key(7))
    weights = jnp.round(jax.random.uniform(key_w, (2, 10), minval=3, maxval=8), 2)
    values = jnp.ceil(5 * jax.random.uniform(key_v, (10,)))
    capacity = jnp.array([20.0, 20.0])
    fig, ax = plt.subplots(figsize=(7, 3.3))
    width = 0.2
    idx = jnp.arange(10)
    hard = pl.solvers.knapsack(values, weights, capacity)
    ax.bar(idx - 1.5 * width, hard, width, color="k", label="y* (σ = 0)")
    for j, (sigma, colour) in enumerate(zip(SIGMAS, COLOURS, strict=True)):
        layer = pl.PerturbedKnapsack(
            weights=weights,
            capacity=capacity,
            num_samples=1000,
            sigma=sigma,
            noise=pl.Normal(),
        )
        y = layer(values, key=jax.random.key(8))
        ax.bar(idx + (j - 0.5) * width, y, width, color=colour, label=f"σ = {sigma}")
    ax.set_xticks(list(range(10)))
    ax.set_xticklabels(
        [
            f"{float(v):.0f}\n{float(a):.1f}/{float(b):.1f}"
            for v, a, b in zip(values, weights[0], weights[1], strict=True)
        ],
        fontsize=7,
    )
    ax.set(
        xlabel="value θᵢ and weights (resource 1 / 2), capacities 20 / 20",
        ylabel="P(item packed)",
    )
    ax.set_title("perturbed knapsack, Normal noise, M = 1000", fontsize=9)
    ax.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    _save(fig, "knapsack.png")


def spanning_tree_figure() -> None:
    """Points in the plane, their minimum spanning tree and y_ε on every edge."""
    n = 12
    xy = np.asarray(jax.random.uniform(jax.random.key(9), (n, 2)))
    rows, cols = np.triu_indices(n, 1)
    lengths = jnp.linalg.norm(xy[rows] - xy[cols], axis=-1)
    exact = pl.PerturbedSpanningTree(
        num_samples=1, sigma=1.0, noise=pl.Normal(), inference=True
    )(lengths)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4))
    layer = pl.PerturbedSpanningTree(
        num_samples=500, sigma=0.5, noise=pl.Normal(), perturbation="multiplicative"
    )
    soft = jax.jit(lambda t: layer(t, key=jax.random.key(10)))(lengths)
    for ax, y, title in (
        (axes[0], exact, "y*: minimum spanning tree (Euclidean lengths)"),
        (axes[1], soft, "y_ε: multiplicative σ = 0.5, M = 500"),
    ):
        for e in range(len(rows)):
            if y[e] > 0.01:
                ax.plot(
                    *xy[[rows[e], cols[e]]].T,
                    color="k",
                    alpha=float(y[e]),
                    lw=0.5 + 2.5 * float(y[e]),
                )
        ax.scatter(*xy.T, color="tab:orange", zorder=3)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    _save(fig, "spanning_tree.png")


def linear_program_figure() -> None:
    """A polygon, its optimal vertex for costs turning round, and y_ε inside it."""
    angles = jnp.linspace(0, 2 * jnp.pi, 121)
    costs = -jnp.stack([jnp.cos(angles), jnp.sin(angles)], axis=-1)  # maximise u·x
    a_ub = jnp.array([[1.0, 2.0], [3.0, 1.0], [-1.0, 1.0], [0.5, -1.0]])
    b_ub = jnp.array([4.0, 6.0, 1.5, 1.0])
    fig, ax = plt.subplots(figsize=(5, 4))
    hard = pl.solvers.linear_program(costs, a_ub, b_ub)
    ax.fill(*np.asarray(hard).T, color="0.9", label="feasible polygon (x ≥ 0)")
    ax.plot(*np.asarray(hard).T, "ko", ms=4, label="x*(c): its vertices")
    for sigma, colour in zip(SIGMAS, COLOURS, strict=True):
        layer = pl.PerturbedLinearProgram(
            A_ub=a_ub, b_ub=b_ub, num_samples=500, sigma=sigma, noise=pl.Normal()
        )
        y = jax.jit(lambda c, layer=layer: layer(c, key=jax.random.key(11)))(costs)
        ax.plot(*np.asarray(y).T, color=colour, label=f"y_ε(c), σ = {sigma}")
    ax.set(xlabel="x₀", ylabel="x₁")
    ax.set_title("c = −(cos t, sin t), t from 0 to 2π; M = 500", fontsize=9)
    ax.legend(fontsize=7)
    ax.set_aspect("equal")
    _save(fig, "linear_program.png")


def main() -> None:
    argmax_figure()
    ranking_figure()
    topk_figure()
    shortest_path_figure()
    assignment_figure()
    knapsack_figure()
    spanning_tree_figure()
    linear_program_figure()


if __name__ == "__main__":
    main()
