"""The 9-node perturbed shortest path of the TensorFlow/PyTorch READMEs.

**The READMEs' example.** A shortest path from node 0 to node 8 in a graph of 9 nodes,
perturbed with additive Normal noise (σ = 0.05, M = 100,000 samples). Four edge
costs, the top-right square of the figure, are variables: [0.4, 0.1, 0.1, 0.1] for
6→8, 6→5, 5→4 and 4→8. The READMEs print the perturbed solution, its weight on the
edge 6→8 (0.079), the gradient of that weight with respect to the four costs
([−2.10, 2.08, 2.04, 2.04]), and the weight after 30 steps of gradient ascent on
the four costs (0.989), with before/after pictures whose edge widths are the weights.

**The graph.** The READMEs' figure (an image on q-berthet.github.io) is not
reachable from here, so the rest of the graph is ours. Its edges are the support of
the READMEs' printed solution matrix: 0–2, 0–3, 2–3, 2–5, 2–7, 3–7, 1–4, 4–5, 4–8,
5–6, 6–7, 6–8, and the path with the largest weights is 0→2→7→6→5→4→8. We place
the nodes on a 3×3 layout with that square at the top right, node 1 at the top left
(its only printed edge is 1–4; we give it an in-arc 3→1), and choose the other costs
so that the split between 0→2 and 0→3 (about 0.7/0.3), 3→2 and 3→7 resemble the
README's; those costs are not the README's, which it does not list.

**Why a DAG, and why σ = 0.05/√2.** The README's solver (`shortest_path(weights,
symmetric=False)`) perturbs an undirected graph, where additive Normal noise makes
some positive edge costs negative, i.e. negative 2-cycles i→j→i; the README's
matrix shows the traces (flow 0.023 on 1→4 and on 4→1, 0.025 on 3→0: detours that no
shortest path takes). `pl.PerturbedGraphShortestPath` reports a negative cycle as an
error instead, so we orient every edge along the path's direction (a DAG: 0, 3, 1, 2,
7, 6, 5, 4, 8 is a topological order); negative perturbed costs are then harmless, and
we keep the READMEs' additive Normal noise. On this DAG every path passes through 6
(the detours avoiding it cost at least 0.6 more: probability below 1e-6), so the
weight on 6→8 is the probability that 6→8 beats 6→5→4→8:

    w₆₈ = Φ(−Δ / (2σ)),   Δ = c₆₈ − c₆₅ − c₅₄ − c₄₈,
    ∂w₆₈/∂c₆₈ = −φ(Δ/(2σ)) / (2σ),
    ∂w₆₈/∂c₆₅ = ∂w₆₈/∂c₅₄ = ∂w₆₈/∂c₄₈ = +φ(Δ/(2σ)) / (2σ),

since the difference of the four perturbed costs has standard deviation 2σ. The
README's numbers, 0.079 and ±2.08, are exactly these with 2σ = 0.05·√2 (0.0786 and
2.076), i.e. noise of standard deviation 0.05/√2 per edge, as if the two directions
of each undirected edge, perturbed independently, were averaged. One arc per edge
with σ = 0.05/√2 ≈ 0.0354 therefore reproduces the README's distribution of Δ, and
its numbers in closed form. (The multiplicative perturbation would keep costs
positive on the undirected graph too, but changes those numbers.)

**Gradient ascent.** 30 steps c ← c + η ∇w₆₈(c), η = 10⁻³ (the READMEs do not
state theirs): the closed form predicts w₆₈ = 0.989 after 30 steps, as the READMEs
print. Each step uses M = 100,000 fresh samples.

**Conventions.** Our solution matrix has y[i, j] = weight on the arc i → j (the
READMEs' matrix is indexed [to, from]: their `paths[..., 8, 6]` is our `y[6, 8]`).

Run it with `python examples/shortest_path_9_nodes.py [--out DIR] [--seed S]`
(after `pip install -e .`); it writes `shortest_path_9_nodes.png` into `DIR` (default
`runs/examples`). `main` returns the key numbers as a dict.
"""

import argparse
import math
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from matplotlib.figure import Figure

import perturbed_layers as pl

SOURCE, TARGET = 0, 8
# The four variable costs, in the READMEs' order: 6→8, 6→5, 5→4, 4→8.
VARIABLE_ARCS = ((6, 8), (6, 5), (5, 4), (4, 8))
INITIAL_COSTS = (0.4, 0.1, 0.1, 0.1)
# The other arcs and their (fixed) costs: our choice, see the docstring.
FIXED_ARCS = {
    (0, 2): 0.2,
    (0, 3): 0.16,
    (3, 2): 0.1,
    (3, 7): 0.3,
    (3, 1): 0.6,
    (1, 4): 0.6,
    (2, 7): 0.2,
    (2, 5): 1.0,
    (7, 6): 0.1,
}
# (x, y) of each node on the 3×3 layout: the variable square at the top right.
POSITIONS = {
    1: (0, 2),
    4: (1, 2),
    8: (2, 2),
    3: (0, 1),
    5: (1, 1),
    6: (2, 1),
    0: (0, 0),
    2: (1, 0),
    7: (2, 0),
}
# Where each arc's label goes: its fraction along the arc and its side (+1 left of
# the arc's direction, −1 right), where the default (0.5, +1) would hit a line.
LABEL_PLACES = {
    (0, 2): (0.5, -1),
    (3, 7): (0.25, 1),
    (3, 2): (0.5, -1),
    (2, 7): (0.5, -1),
    (2, 5): (0.7, -1),
    (6, 5): (0.5, -1),
    (6, 8): (0.5, -1),
}
SIGMA = 0.05 / math.sqrt(2)
NUM_SAMPLES = 100_000
LEARNING_RATE = 1e-3
NUM_STEPS = 30
README = dict(weight=0.079, grad=(-2.0994, 2.0764, 2.0424, 2.0412), after=0.989)


def _fmt(x: Any, precision: int = 3) -> str:
    return np.array2string(
        np.asarray(x), precision=precision, suppress_small=True, max_line_width=120
    )


def base_weights() -> Float[Array, "9 9"]:
    """The fixed arcs' costs, +inf for no arc (the variable arcs filled in later)."""
    weights = np.full((9, 9), np.inf, np.float32)
    for (i, j), cost in FIXED_ARCS.items():
        weights[i, j] = cost
    return jnp.asarray(weights)


def edge_costs_to_weights(costs: Float[Array, "4"]) -> Float[Array, "9 9"]:
    """The dense arc costs with the four variable costs in place (differentiable)."""
    rows, cols = (jnp.array(ix) for ix in zip(*VARIABLE_ARCS, strict=True))
    return base_weights().at[rows, cols].set(costs)


def exact_weight(costs: Any, sigma: float = SIGMA) -> float:
    """w₆₈ = Φ(−Δ/(2σ)) in closed form (the detours around node 6 neglected)."""
    c = np.asarray(costs, np.float64)
    delta = c[0] - c[1] - c[2] - c[3]
    return 0.5 * math.erfc(delta / (2 * sigma) / math.sqrt(2))


def exact_grad(costs: Any, sigma: float = SIGMA) -> np.ndarray:
    """∂w₆₈/∂(c₆₈, c₆₅, c₅₄, c₄₈) in closed form."""
    c = np.asarray(costs, np.float64)
    u = (c[0] - c[1] - c[2] - c[3]) / (2 * sigma)
    density = math.exp(-(u**2) / 2) / math.sqrt(2 * math.pi) / (2 * sigma)
    return density * np.array([-1.0, 1.0, 1.0, 1.0])


@eqx.filter_jit
def weight_and_grad(
    layer: pl.PerturbedGraphShortestPath, costs: Float[Array, "4"], key: PRNGKeyArray
) -> tuple[Float[Array, ""], Float[Array, "4"], Float[Array, "9 9"]]:
    """The weight of the perturbed solution on 6→8, its gradient, and the solution."""

    def weight(c):
        y = layer(edge_costs_to_weights(c), key=key)
        return y[6, 8], y

    (value, y), grad = jax.value_and_grad(weight, has_aux=True)(costs)
    return value, grad, y


def _plot(
    panels: list[tuple[str, np.ndarray, np.ndarray]],
    num_samples: int,
    path: pathlib.Path,
) -> None:
    fig = Figure(figsize=(11, 5.2), layout="constrained")
    axes = fig.subplots(1, len(panels))
    for ax, (title, costs, y) in zip(axes, panels, strict=True):
        arcs = {**FIXED_ARCS, **dict(zip(VARIABLE_ARCS, costs.tolist(), strict=True))}
        for (i, j), cost in arcs.items():
            (x0, y0), (x1, y1) = POSITIONS[i], POSITIONS[j]
            w = float(y[i, j])
            variable = (i, j) in VARIABLE_ARCS
            colour = "C3" if variable else "C0"
            ax.annotate(
                "",
                xy=(x1, y1),
                xytext=(x0, y0),
                arrowprops=dict(
                    arrowstyle="-|>",
                    lw=0.6 + 9 * w,
                    color=colour if w > 1e-3 else "0.6",
                    ls="-" if w > 1e-3 else "--",
                    shrinkA=17,
                    shrinkB=17,
                    mutation_scale=12 + 8 * w,
                ),
            )
            # Label each arc with its cost (and weight, if variable) beside it.
            at, side = LABEL_PLACES.get((i, j), (0.5, 1))
            dx, dy = x1 - x0, y1 - y0
            offset = side * 0.24 / math.hypot(dx, dy)
            ax.text(
                x0 + at * dx - dy * offset,
                y0 + at * dy + dx * offset,
                f"c = {cost:.3g}\nw = {w:.3f}" if variable else f"c = {cost:.3g}",
                ha="center",
                va="center",
                fontsize=8,
                color=colour,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8),
            )
        for node, (x, y_) in POSITIONS.items():
            ax.scatter(
                x,
                y_,
                s=520,
                color="gold" if node in (SOURCE, TARGET) else "white",
                edgecolors="k",
                zorder=3,
            )
            ax.text(x, y_, str(node), ha="center", va="center", zorder=4, fontsize=11)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-0.4, 2.5)
        ax.set_ylim(-0.4, 2.4)
        ax.set_aspect("equal")
        ax.axis("off")
    fig.suptitle(
        f"Perturbed shortest path 0 → 8, additive Normal noise, σ = {SIGMA:.4f}, "
        f"M = {num_samples:,}\n"
        "edge width ∝ weight of the perturbed solution; red: the four variable costs"
    )
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the perturbed solution, its 6→8 weight and gradient; ascend; plot."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("runs/examples"),
        help="folder for the figure (created if missing)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=NUM_SAMPLES)
    args = parser.parse_args(argv)

    layer = pl.PerturbedGraphShortestPath(
        SOURCE, TARGET, num_samples=args.num_samples, sigma=SIGMA, noise=pl.Normal()
    )
    key_before, key_steps, key_after = jax.random.split(jax.random.key(args.seed), 3)
    costs = jnp.array(INITIAL_COSTS)
    print(
        f"Shortest path {SOURCE} → {TARGET} on 9 nodes, additive Normal noise, "
        f"σ = 0.05/√2 = {SIGMA:.4f}, M = {args.num_samples:,}"
    )
    print(f"variable costs (6→8, 6→5, 5→4, 4→8) = {_fmt(costs)}")
    weight, grad, y_before = weight_and_grad(layer, costs, key_before)
    print("perturbed solution y[i, j] (weight on the arc i → j):")
    print(_fmt(y_before))
    print(
        f"weight on 6→8: {float(weight):.4f}   (closed form {exact_weight(costs):.4f}; "
        f"READMEs {README['weight']})"
    )
    print(f"its gradient w.r.t. the four costs: {_fmt(grad, 4)}")
    print(f"  closed form: {_fmt(exact_grad(costs), 4)}")
    print(f"  READMEs:     {_fmt(README['grad'], 4)}")

    trajectory = [float(weight)]
    for k in jax.random.split(key_steps, NUM_STEPS):
        value, step_grad, _ = weight_and_grad(layer, costs, k)
        trajectory.append(float(value))
        costs = costs + LEARNING_RATE * step_grad  # ascent: raise the 6→8 weight
    weight_after, grad_after, y_after = weight_and_grad(layer, costs, key_after)
    print(
        f"\n{NUM_STEPS} steps of gradient ascent (learning rate {LEARNING_RATE}): "
        f"costs → {_fmt(costs, 4)}"
    )
    print(
        "weight on 6→8 every 5 steps: "
        + ", ".join(f"{w:.3f}" for w in trajectory[1::5])
    )
    print(
        f"weight on 6→8 after: {float(weight_after):.4f}   (closed form "
        f"{exact_weight(costs):.4f}; READMEs {README['after']})"
    )
    print("perturbed solution after:")
    print(_fmt(y_after))

    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "shortest_path_9_nodes.png"
    _plot(
        [
            (
                f"before: w(6→8) = {float(weight):.3f}",
                np.asarray(INITIAL_COSTS),
                np.asarray(y_before),
            ),
            (
                f"after {NUM_STEPS} ascent steps: w(6→8) = {float(weight_after):.3f}",
                np.asarray(costs),
                np.asarray(y_after),
            ),
        ],
        args.num_samples,
        figure,
    )
    print(f"figure: {figure}")
    return dict(
        sigma=SIGMA,
        num_samples=args.num_samples,
        solution_before=np.asarray(y_before),
        weight_before=float(weight),
        exact_weight_before=exact_weight(INITIAL_COSTS),
        grad_before=np.asarray(grad),
        exact_grad_before=exact_grad(INITIAL_COSTS),
        trajectory=np.asarray(trajectory),
        costs_after=np.asarray(costs),
        solution_after=np.asarray(y_after),
        weight_after=float(weight_after),
        exact_weight_after=exact_weight(costs),
        grad_after=np.asarray(grad_after),
        figure=str(figure),
    )


if __name__ == "__main__":
    main()
