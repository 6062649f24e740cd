#!/usr/bin/env python
"""Batched pure-JAX solvers against their SciPy references, solves per second.

One call solves 32 × M=10 = 320 instances (float32). Contenders, after compilation
and a warm-up, median over repetitions:

- `ours`: `jax.jit(solver)` on the whole `(320, ...)` batch, blocked.
- `scipy`: the reference called per instance from a Python loop
  (`linear_sum_assignment(maximize=True)`, `milp` (HiGHS), `minimum_spanning_tree`,
  `linprog(method="highs")`).
- `host_solver`: that loop as one `pl.host_solver` inside `jax.jit` (knapsack:
  `pl.scipy_milp` with the weights shared; LP: the `linprog` loop with the
  constraints per instance as `args`).
- `layer`: the perturbed layer's forward pass over the same problem family, B = 32
  instances × M = 10 samples = 320 solves per call (`pl.PerturbedAssignment`,
  `pl.PerturbedKnapsack`, `pl.PerturbedSpanningTree` on edge vectors,
  `pl.PerturbedLinearProgram` with its constraints in `args`), Normal noise σ = 0.5:
  the solver's cost inside the layer, noise and averaging included.

Every instance's objective is checked against the reference before timing.
PyEPO knapsack size (`pyepo/data/knapsack.py`): 32 items, 2 resources, weights
`choice(range(300, 800)) / 100` (two decimals), integer values (deg 4, noise 0.5);
capacity 20 per resource (as in PyEPO users' scripts; an assumption).

Usage: python bench/solvers.py [--quick]; writes bench/results/solvers-<date>-cpu.md.
"""

import argparse
import datetime
import pathlib
import warnings

import _common as C
import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse.csgraph
from scipy.optimize import (
    Bounds,
    LinearConstraint,
    linear_sum_assignment,
    linprog,
    milp,
)

C.setup_path()
import perturbed_layers as pl  # noqa: E402
from perturbed_layers.solvers import (  # noqa: E402
    knapsack,
    linear_assignment,
    linear_program,
    spanning_tree,
)

N = 320
B, M = 32, 10  # the layer's batch and samples: B × M = N solves per call
KEY = jax.random.key(0)


def layer_call(layer, theta, args=None):
    fn = jax.jit(lambda t, a: layer(t, a, key=KEY))
    fn(theta, args).block_until_ready()
    return lambda: fn(theta, args).block_until_ready()


def linprog_batch(c, args):
    """The per-instance linprog loop as a host solver with per-instance data."""
    return np.stack(
        [
            linprog(c[k], A_ub=args["A_ub"][k], b_ub=args["b_ub"][k], method="highs").x
            for k in range(c.shape[0])
        ]
    )


def lsa_batch(s):
    out = np.zeros_like(s)
    for k, sk in enumerate(s):
        r, c = linear_sum_assignment(sk, maximize=True)
        out[k, r, c] = 1
    return out


def mst_batch(w):
    out = np.zeros_like(w)
    for k, wk in enumerate(w):
        t = scipy.sparse.csgraph.minimum_spanning_tree(np.where(np.isinf(wk), 0, wk))
        t = (t + t.T).toarray()
        out[k] = t != 0
    return out


def milp_one(v, w, c):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = milp(
            -v,
            constraints=LinearConstraint(w, -np.inf, c),
            integrality=np.ones_like(v),
            bounds=Bounds(0, 1),
        )
    return r.x


def assignment_case(rng, n):
    s = rng.normal(size=(N, n, n)).astype(np.float32)
    ours = jax.jit(linear_assignment)
    y = np.asarray(ours(s))
    ref = lsa_batch(s.astype(np.float64))
    assert np.allclose((y * s).sum((1, 2)), (ref * s).sum((1, 2)), rtol=1e-4)
    host = jax.jit(pl.host_solver(lsa_batch, event_ndim=2))
    layer = pl.PerturbedAssignment(num_samples=M, sigma=0.5, noise=pl.Normal())
    return (
        lambda: ours(s).block_until_ready(),
        lambda: lsa_batch(s),
        lambda: host(s).block_until_ready(),
        layer_call(layer, s[:B]),
    )


def spanning_case(rng, n):
    w = rng.uniform(0.1, 10.0, (N, n, n)).astype(np.float32)
    w = np.triu(w, 1)
    w = w + np.swapaxes(w, 1, 2)
    w[:, np.arange(n), np.arange(n)] = np.inf
    ours = jax.jit(spanning_tree)
    y = np.asarray(ours(w))
    ref = mst_batch(w)
    ww = np.where(np.isinf(w), 0, w)
    assert np.allclose((y * ww).sum((1, 2)), (ref * ww).sum((1, 2)), rtol=1e-4)
    host = jax.jit(pl.host_solver(mst_batch, event_ndim=2))
    rows, cols = np.triu_indices(n, 1)
    layer = pl.PerturbedSpanningTree(num_samples=M, sigma=0.5, noise=pl.Normal())
    return (
        lambda: ours(w).block_until_ready(),
        lambda: mst_batch(w),
        lambda: host(w).block_until_ready(),
        layer_call(layer, w[:B, rows, cols]),
    )


def knapsack_case(rng, n, d, cap):
    rs = np.random.RandomState(int(rng.integers(1 << 30)))
    w = rs.choice(range(300, 800), size=(d, n)) / 100
    b = rs.binomial(1, 0.5, (n, 5))
    x = rs.normal(0, 1, (N, 5))
    v = ((x @ b.T / np.sqrt(5) + 3) ** 4 + 1) * 5 / 3.5**4
    v = np.ceil(v * rs.uniform(0.5, 1.5, (N, n))).astype(np.float32)
    c = np.full(d, float(cap))
    w32, c32 = w.astype(np.float32), c.astype(np.float32)
    ours = jax.jit(knapsack)
    y = np.asarray(ours(v, w32, c32))
    ref = np.stack([milp_one(vi.astype(np.float64), w, c) for vi in v])
    assert np.allclose((y * v).sum(1), (ref * v).sum(1), atol=1e-3)
    host = jax.jit(pl.scipy_milp(A_ub=w, b_ub=c, upper=1.0))
    assert np.allclose((np.asarray(host(-v)) * v).sum(1), (ref * v).sum(1), atol=1e-3)
    layer = pl.PerturbedKnapsack(
        weights=w32, capacity=c32, num_samples=M, sigma=0.5, noise=pl.Normal()
    )
    return (
        lambda: ours(v, w32, c32).block_until_ready(),
        lambda: [milp_one(vi.astype(np.float64), w, c) for vi in v],
        lambda: host(-v).block_until_ready(),
        layer_call(layer, v[:B]),
    )


def lp_case(rng, n, m):
    a = rng.uniform(0, 1, (N, m, n)).astype(np.float32)
    b = rng.uniform(1, 5, (N, m)).astype(np.float32)
    c = -rng.uniform(0, 1, (N, n)).astype(np.float32)
    ours = jax.jit(linear_program)
    x = np.asarray(ours(c, a, b))

    def ref():
        return [linprog(c[k], A_ub=a[k], b_ub=b[k], method="highs") for k in range(N)]

    funs = np.array([r.fun for r in ref()])
    assert np.allclose((c * x).sum(1), funs, rtol=1e-4)
    host = jax.jit(pl.host_solver(linprog_batch, event_ndim=1))
    args = {"A_ub": a, "b_ub": b}
    layer = pl.PerturbedLinearProgram(num_samples=M, sigma=0.5, noise=pl.Normal())
    return (
        lambda: ours(c, a, b).block_until_ready(),
        ref,
        lambda: host(c, args).block_until_ready(),
        layer_call(layer, c[:B], {"A_ub": a[:B], "b_ub": b[:B]}),
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 9
    rng = np.random.default_rng(0)
    cases = [
        ("assignment 20×20", lambda: assignment_case(rng, 20)),
        ("assignment 50×50", lambda: assignment_case(rng, 50)),
        ("knapsack PyEPO 32 items × 2 res.", lambda: knapsack_case(rng, 32, 2, 20)),
        ("knapsack 64 items × 2 res.", lambda: knapsack_case(rng, 64, 2, 40)),
        ("spanning tree 30 nodes", lambda: spanning_case(rng, 30)),
        ("spanning tree 100 nodes", lambda: spanning_case(rng, 100)),
        ("LP 20 vars × 10 cons.", lambda: lp_case(rng, 20, 10)),
        ("LP 50 vars × 30 cons.", lambda: lp_case(rng, 50, 30)),
    ]
    if not args.quick:
        cases.insert(2, ("assignment 100×100", lambda: assignment_case(rng, 100)))
    lines = [
        f"# Solvers, {N} instances per call (float32, {jax.devices()[0].platform}, "
        f"median of {repeats})",
        "",
        "| problem | ours (ms) | scipy per instance (ms) | host_solver (ms) "
        f"| ours solves/s | ours / scipy | layer {B}×{M} (ms) | layer solves/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, make in cases:
        ours, ref, host, layer = make()
        ours()
        t_ours = C.median_seconds(ours, repeats)
        t_ref = C.median_seconds(ref, max(1, repeats // 3))
        t_host = C.median_seconds(host, max(1, repeats // 3)) if host else float("nan")
        host_txt = f"{1e3 * t_host:.1f}" if host else "—"
        t_layer = C.median_seconds(layer, repeats)
        line = (
            f"| {name} | {1e3 * t_ours:.1f} | {1e3 * t_ref:.1f} | {host_txt} "
            f"| {N / t_ours:,.0f} | {t_ref / t_ours:.2f}× | {1e3 * t_layer:.1f} "
            f"| {N / t_layer:,.0f} |"
        )
        print(line, flush=True)
        lines.append(line)
    out = pathlib.Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    date = datetime.date.today().isoformat()
    path = out / f"solvers-{date}-cpu{'-quick' if args.quick else ''}.md"
    path.write_text("\n".join(lines) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    jnp.zeros(1).block_until_ready()
    main()
