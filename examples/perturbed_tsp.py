"""Learning travelling-salesman costs: a MILP solved by HiGHS as a perturbed layer.

**The task.** Each instance is n = 6 cities in the unit square. A tour's true cost
is its Euclidean length, but the model does not see distances: it sees, for every
arc i → j, the features φ_ij = (|Δx|, |Δy|, Δx², Δy², 1) and predicts the arc's cost
as a linear function w·φ_ij. It is trained with the Fenchel–Young loss on the
optimal tours only (no costs as targets), so that the tours it plans are short.

**The solver.** The travelling salesman as a mixed-integer program, in the
Miller–Tucker–Zemlin form: binary x_ij for the n(n − 1) arcs, one arc out of and
one arc into every city (equalities), and order variables 1 ≤ u_i ≤ n − 1 with
u_i − u_j + (n − 1) x_ij ≤ n − 2 for the cities i, j ≠ 0, which rule out subtours.
`pl.scipy_milp` solves it exactly with HiGHS, on the host, all M × B perturbed
instances of a call in one callback; the order variables cost nothing and are not
perturbed (the layer's θ is the arc costs only). This is PyEPO's TSP model without
a Gurobi licence.

**The layer and the loss.** `pl.Perturbed(solve, objective="min")` makes
y_ε(c) = E[x*(c + σZ)], the probability of each arc in the tour under noise, and
`pl.FenchelYoungLoss` the loss whose gradient in the costs is x_true − y_ε(c).

**What it prints.** The normalised regret on held-out instances, Σ (L(tour of ĉ) −
L*) / Σ L*, with L the true length, before training (w = 0: all tours tie) and
after; and the time taken. Run it with `python examples/perturbed_tsp.py [--out
DIR] [--seed S]`; it writes `perturbed_tsp.png` into `DIR` (default
`runs/examples`). `main` returns the key numbers as a dict.
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
from matplotlib.figure import Figure

import perturbed_layers as pl

N = 6
ARCS = [(i, j) for i in range(N) for j in range(N) if i != j]
E = len(ARCS)
BATCH = 8
NUM_TEST = 32


def mtz_milp(n: int) -> pl.HostSolver:
    """min c·(x, u) over tours x: degree equalities and MTZ subtour elimination."""
    arcs = [(i, j) for i in range(n) for j in range(n) if i != j]
    e = len(arcs)
    a_eq = np.zeros((2 * n, e + n - 1))
    for k, (i, j) in enumerate(arcs):
        a_eq[i, k] = 1  # one arc out of i
        a_eq[n + j, k] = 1  # one arc into j
    rows = []
    for k, (i, j) in enumerate(arcs):
        if i > 0 and j > 0:  # u_i − u_j + (n − 1) x_ij ≤ n − 2
            row = np.zeros(e + n - 1)
            row[k] = n - 1
            row[e + i - 1] += 1
            row[e + j - 1] -= 1
            rows.append(row)
    return pl.scipy_milp(
        A_ub=np.array(rows),
        b_ub=np.full(len(rows), n - 2.0),
        A_eq=a_eq,
        b_eq=np.ones(2 * n),
        lower=np.concatenate([np.zeros(e), np.ones(n - 1)]),
        upper=np.concatenate([np.ones(e), np.full(n - 1, n - 1.0)]),
        integrality=np.concatenate([np.ones(e), np.zeros(n - 1)]).astype(int),
    )


MILP = mtz_milp(N)


def tour(arc_costs: jax.Array) -> jax.Array:
    """The 0/1 arcs of a shortest tour for these arc costs (the order variables cost
    nothing and are dropped from the output)."""
    costs = jnp.concatenate([arc_costs, jnp.zeros(N - 1, arc_costs.dtype)])
    return MILP(costs)[:E]


def features(cities: np.ndarray) -> np.ndarray:
    """(B, E, 5) arc features (|Δx|, |Δy|, Δx², Δy², 1) and (B, E) true lengths."""
    i, j = np.array(ARCS).T
    d = cities[:, j] - cities[:, i]
    phi = np.concatenate([np.abs(d), d**2, np.ones((*d.shape[:2], 1))], axis=-1)
    return phi.astype(np.float32), np.linalg.norm(d, axis=-1).astype(np.float32)


def lengths(arcs: jax.Array, true_costs: jax.Array) -> jax.Array:
    return jnp.sum(arcs * true_costs, axis=-1)


def is_tour(x: np.ndarray) -> bool:
    """One cycle through all N cities."""
    succ = {i: j for (i, j), v in zip(ARCS, x, strict=True) if v > 0.5}
    node, seen = 0, set()
    while node not in seen:
        seen.add(node)
        node = succ.get(node, -1)
    return len(succ) == N and len(seen) == N and node == 0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=pathlib.Path, default=pathlib.Path("runs/examples")
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=25)
    opts = parser.parse_args(argv)
    start = time.perf_counter()
    rng = np.random.default_rng(opts.seed)
    layer = pl.Perturbed(
        tour, objective="min", num_samples=5, sigma=0.1, noise=pl.Normal()
    )
    loss = pl.FenchelYoungLoss(layer)
    exact = eqx.nn.inference_mode(layer)  # the unperturbed solver, no key needed

    test_cities = rng.uniform(size=(NUM_TEST, N, 2))
    test_phi, test_len = features(test_cities)
    test_best = lengths(exact(jnp.asarray(test_len)), test_len)

    def regret(w):
        planned = exact(jnp.asarray(test_phi) @ w)
        valid = all(is_tour(x) for x in np.asarray(planned))
        gap = jnp.sum(lengths(planned, test_len) - test_best) / jnp.sum(test_best)
        return float(gap), valid, planned

    w = jnp.zeros(5)
    regret_before, _, _ = regret(w)
    optimiser = optax.adam(0.05)
    state = optimiser.init(w)

    @jax.jit
    def step(w, state, phi, y_true, key):
        value, grad = jax.value_and_grad(
            lambda v: loss(phi @ v, y_true, key=key).mean()
        )(w)
        updates, state = optimiser.update(grad, state)
        return optax.apply_updates(w, updates), state, value

    key = jax.random.key(opts.seed)
    history = []
    for _ in range(opts.steps):
        phi, true_len = features(rng.uniform(size=(BATCH, N, 2)))
        y_true = exact(jnp.asarray(true_len))
        key, sub = jax.random.split(key)
        w, state, value = step(w, state, jnp.asarray(phi), y_true, sub)
        history.append(float(value))
    regret_after, valid, _ = regret(w)
    soft = layer(jnp.asarray(test_phi[:1]) @ w, key=jax.random.key(1))[0]
    seconds = time.perf_counter() - start
    print(f"normalised regret: before {regret_before:.1%}, after {regret_after:.1%}")
    print(f"weights (|dx|, |dy|, dx^2, dy^2, 1): {np.round(np.asarray(w), 3)}")
    print(f"all planned tours valid: {valid}; {seconds:.1f} s")

    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    left.plot(history, color="tab:blue")
    left.set(xlabel="step", ylabel="Fenchel–Young loss (batch mean)")
    left.set_title(
        f"regret {regret_before:.0%} → {regret_after:.1%} on {NUM_TEST} tests",
        fontsize=9,
    )
    xy = test_cities[0]
    best = np.asarray(exact(jnp.asarray(test_len[:1])))[0]
    for (i, j), p, b in zip(ARCS, np.asarray(soft), best, strict=True):
        if p > 0.02:
            right.annotate(
                "",
                xy=xy[j],
                xytext=xy[i],
                arrowprops=dict(
                    arrowstyle="->", color="tab:orange", alpha=float(p), lw=2
                ),
            )
        if b > 0.5:
            right.plot(*xy[[i, j]].T, color="k", lw=0.8, ls="--")
    right.scatter(*xy.T, color="k", zorder=3)
    right.set_title("test instance 0: optimal tour (dashed), y_ε (orange)", fontsize=9)
    right.set_xticks([])
    right.set_yticks([])
    opts.out.mkdir(parents=True, exist_ok=True)
    figure = opts.out / "perturbed_tsp.png"
    fig.savefig(figure, dpi=110, bbox_inches="tight")
    print(f"wrote {figure}")
    return {
        "figure": str(figure),
        "regret_before": regret_before,
        "regret_after": regret_after,
        "tours_valid": valid,
        "seconds": seconds,
    }


if __name__ == "__main__":
    main()
