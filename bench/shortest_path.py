#!/usr/bin/env python
"""Batched grid shortest paths: `grid_shortest_path` (jit) against SciPy's Dijkstra.

Warcraft-like instances: 8-connectivity, vertex costs from the Warcraft terrain costs
{0.8, 1.2, 5.3, 7.7, 9.2}, laid out in patches (smoothed Gaussian noise cut at fixed
quantiles, so mountains and water form obstacles to go around, as on the maps) or, with
`--terrain iid`, drawn independently per cell. One call solves 32 × 10 = 320 instances
(a batch of 32 with M = 10 perturbed samples each); grid sides 12, 18, 24, 30.

Contenders, timed interleaved (each repetition times each once, order rotated), one call
per sample, after compilation and a warm-up:

- `ours`: `jax.jit(grid_shortest_path)` on the `(32, 10, H, W)` batch, blocked.
- `ours vmapped`: the same through `jax.jit(jax.vmap(jax.vmap(...)))`, as a perturbed
  layer calls it.
- `scipy a`: `scipy.sparse.csgraph.dijkstra` per instance, the CSR graph built per
  instance with NumPy, the path read back from the predecessors (as a user writes it).
- `scipy b`: the same with the graph structure prebuilt; only the weights change.
- `scipy c`: one Dijkstra call over all instances: one graph with every instance and a
  super-source (structure prebuilt), paths read back for all instances at once
  (`perturbed_layers._host_examples`, the host solver behind
  `scipy_grid_shortest_path`).
- `host_solver`: `scipy c` as a `host_solver` inside `jax.jit`/`vmap`.

Before timing, every instance's path cost is checked against SciPy's optimum.

A second section times the layer, not the solver: forward + Fenchel–Young gradient of
`pl.PerturbedShortestPath` on 12×12 grids, 8-connectivity, a batch of 32, M = 10,
Normal noise σ = 0.5, both multiplicative (on the costs) and additive (on the costs
+ 3, which keeps every perturbed cost positive: the smallest, 3.4, is 6.8 σ away
from 0). The costs are Warcraft terrain costs, each scaled by a random factor in
[0.5, 2]; the targets are the shortest paths of the unscaled ones. Contenders, timed interleaved, one call per sample, median over 20
calls after compilation:

- `FY value_and_grad`: `jax.jit(jax.value_and_grad(mean FY loss))` in the costs.
- `layer fwd+VJP`: `jax.jit` of `jax.vjp(layer)` and its pullback of a cotangent
  (the Jacobian estimator: what a loss on y_ε(costs) costs to differentiate).
- `solver alone`: `jax.jit(grid_shortest_path)` on the 10 × 32 perturbed instances,
  for scale.

Results: Markdown tables on stdout, JSON in
bench/results/shortest_path-<date>[-quick].json (the layer section under
"layer_fy").

Usage: python bench/shortest_path.py [--quick] [--repeats N] [--sizes 12,18,24,30]
       [--terrain patches|iid] [--layer-only]
"""

import argparse
import sys
import time
from typing import Any

import _common as C

C.setup_path()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402
from scipy.sparse.csgraph import dijkstra  # noqa: E402

import perturbed_layers as pl  # noqa: E402
from perturbed_layers._host_examples import (  # noqa: E402
    _GridDijkstra,
    scipy_grid_shortest_path,
)
from perturbed_layers.solvers import grid_shortest_path  # noqa: E402

TERRAIN = np.array([0.8, 1.2, 5.3, 7.7, 9.2], np.float32)
# Fractions of cells per terrain type, cheapest first (patches mode).
TERRAIN_SHARES = np.array([0.35, 0.25, 0.15, 0.15, 0.10])
KING_MOVES = [(di, dj) for di in (-1, 0, 1) for dj in (-1, 0, 1) if (di, dj) != (0, 0)]
BATCH, SAMPLES = 32, 10
SEED = 0
LAYER_SIDE, LAYER_SIGMA, LAYER_OFFSET = 12, 0.5, 3.0


def make_costs(rng: np.random.Generator, n: int, side: int, terrain: str) -> np.ndarray:
    if terrain == "iid":
        return TERRAIN[rng.integers(0, len(TERRAIN), (n, side, side))]
    noise = uniform_filter(
        rng.normal(size=(n, side, side)), size=(1, 5, 5), mode="wrap"
    )
    cuts = np.quantile(noise, np.cumsum(TERRAIN_SHARES)[:-1])
    return TERRAIN[np.digitize(noise, cuts)]


# ----------------------------------------------------------------- SciPy baselines


def user_graph(c: np.ndarray) -> scipy.sparse.csr_matrix:
    """CSR of the king-move grid, arc u -> v weighted c[v], built from scratch."""
    h, w = c.shape
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    tails, heads = [], []
    for di, dj in KING_MOVES:
        ok = (ii + di >= 0) & (ii + di < h) & (jj + dj >= 0) & (jj + dj < w)
        tails.append((ii * w + jj)[ok])
        heads.append(((ii + di) * w + jj + dj)[ok])
    t, hd = np.concatenate(tails), np.concatenate(heads)
    return scipy.sparse.csr_matrix((c.ravel()[hd], (t, hd)), shape=(h * w, h * w))


def read_path(pred: np.ndarray, h: int, w: int, dtype) -> np.ndarray:
    mask = np.zeros(h * w, dtype)
    node = h * w - 1
    while node >= 0:  # the source's predecessor is -9999
        mask[node] = 1
        node = pred[node]
    return mask.reshape(h, w)


def scipy_per_instance(costs: np.ndarray) -> np.ndarray:
    out = np.empty_like(costs)
    for k, c in enumerate(costs):
        _, pred = dijkstra(user_graph(c), indices=0, return_predecessors=True)
        out[k] = read_path(pred, *c.shape, c.dtype)
    return out


def prebuilt_structure(h: int, w: int):
    graph = user_graph(np.ones((h, w), np.float32))
    graph.sort_indices()
    return graph.indptr, graph.indices


def scipy_prebuilt(costs: np.ndarray, structure) -> np.ndarray:
    indptr, indices = structure
    _, h, w = costs.shape
    out = np.empty_like(costs)
    for k, c in enumerate(costs):
        graph = scipy.sparse.csr_matrix(
            (c.ravel()[indices], indices, indptr), shape=(h * w, h * w)
        )
        _, pred = dijkstra(graph, indices=0, return_predecessors=True)
        out[k] = read_path(pred, h, w, c.dtype)
    return out


def optimum(c: np.ndarray) -> float:
    dist = dijkstra(user_graph(c.astype(np.float64)), indices=0)
    return float(dist[-1] + c[0, 0])


# ------------------------------------------------- the layer: forward + FY gradient


def bench_layer(
    rng: np.random.Generator, terrain: str, repeats: int
) -> tuple[dict, str]:
    """Forward + FY-gradient time of PerturbedShortestPath (module docstring)."""
    side = LAYER_SIDE
    true_costs = jax.device_put(make_costs(rng, BATCH, side, terrain))
    y_true = jax.jit(grid_shortest_path)(true_costs)
    # Predicted costs: the true ones, each cell scaled by a random factor in [0.5, 2].
    costs = jax.device_put(
        true_costs * np.exp2(rng.uniform(-1, 1, true_costs.shape)).astype(np.float32)
    )
    key = jax.random.key(SEED)
    cotangent = jax.device_put(rng.normal(size=costs.shape).astype(np.float32))
    solver = jax.jit(grid_shortest_path)
    results, rows = {}, []
    for perturbation, offset in (("multiplicative", 0.0), ("additive", LAYER_OFFSET)):
        layer = pl.PerturbedShortestPath(
            num_samples=SAMPLES,
            sigma=LAYER_SIGMA,
            noise=pl.Normal(),
            perturbation=perturbation,
            connectivity=8,
        )
        loss = pl.FenchelYoungLoss(layer)
        theta = costs + offset

        def fy_value_and_grad(c, y, loss=loss):
            return jax.value_and_grad(lambda c: loss(c, y, key=key).mean())(c)

        def layer_forward_vjp(c, g, layer=layer):
            y, pullback = jax.vjp(lambda c: layer(c, key=key), c)
            return y, pullback(g)[0]

        fy, fy_compile_s, fy_memory = C.compile_aot(fy_value_and_grad, theta, y_true)
        vjp, vjp_compile_s, vjp_memory = C.compile_aot(
            layer_forward_vjp, theta, cotangent
        )
        # The same perturbed instances as the layer solves, for the solver's time.
        if perturbation == "multiplicative":
            z = jax.random.normal(key, (SAMPLES, *theta.shape))
            perturbed = theta * jnp.exp(LAYER_SIGMA * z - LAYER_SIGMA**2 / 2)
        else:
            perturbed = theta + LAYER_SIGMA * jax.random.normal(
                key, (SAMPLES, *theta.shape)
            )
        contenders = {
            "FY value_and_grad": lambda f=fy, c=theta: f(c, y_true),
            "layer fwd+VJP": lambda f=vjp, c=theta: f(c, cotangent),
            "solver alone": lambda x=perturbed: solver(x),
        }
        value, grad = fy(theta, y_true)
        if not (np.all(np.isfinite(np.asarray(grad))) and np.isfinite(float(value))):
            sys.exit(f"FY loss or gradient not finite ({perturbation})")
        print(
            f"layer, {perturbation}: timing {repeats} interleaved repetitions",
            flush=True,
        )
        timing = C.time_interleaved(contenders, repeats=repeats, min_sample_s=0.0)
        per = timing["per_contender"]
        results[perturbation] = {
            "offset": offset,
            "compile_s": {
                "FY value_and_grad": fy_compile_s,
                "layer fwd+VJP": vjp_compile_s,
            },
            "memory": {"FY value_and_grad": fy_memory, "layer fwd+VJP": vjp_memory},
            "seconds_per_call": per,
        }
        rows.append(
            [
                perturbation + (f" (costs + {offset:g})" if offset else ""),
                C.fmt_summary(per["FY value_and_grad"]),
                C.fmt_summary(per["layer fwd+VJP"]),
                C.fmt_summary(per["solver alone"]),
                f"{fy_compile_s:.1f} s / {vjp_compile_s:.1f} s",
            ]
        )
    header = [
        "perturbation",
        "FY value_and_grad: median [min, max]",
        "layer fwd+VJP",
        "solver alone",
        "compile (FY / VJP)",
    ]
    table = (
        f"PerturbedShortestPath, {side}×{side}, 8-connectivity, batch {BATCH}, "
        f"M = {SAMPLES}, Normal σ = {LAYER_SIGMA}; median of {repeats} interleaved "
        "calls after compilation\n" + C.markdown_table(header, rows)
    )
    config = {
        "side": side,
        "batch": BATCH,
        "samples": SAMPLES,
        "sigma": LAYER_SIGMA,
        "additive_offset": LAYER_OFFSET,
        "repeats": repeats,
    }
    return {"config": config, "results": results}, table


# ------------------------------------------------------- bench/run.py's section


def section(quick: bool, repeats: int) -> dict[str, Any]:
    """Section `shortest_path` of bench/run.py: ours against SciPy's Dijkstra per
    instance, prebuilt, and with a super-source; sides 12, 18, 24, 30 (--quick: 12,
    30), every path's cost checked first; the growth exponent time ∝ side^k."""
    sizes = [12, 30] if quick else [12, 18, 24, 30]
    reps = 5 if quick else max(repeats, 10)
    rng = np.random.default_rng(SEED)
    ours = jax.jit(grid_shortest_path)
    super_source = _GridDijkstra(8)
    results = []
    for side in sizes:
        costs_np = make_costs(rng, BATCH * SAMPLES, side, "patches")
        costs = jax.device_put(costs_np.reshape(BATCH, SAMPLES, side, side))
        t0 = time.perf_counter()
        compiled = ours.lower(costs).compile()
        compile_s = time.perf_counter() - t0
        structure = prebuilt_structure(side, side)
        masks = np.asarray(compiled(costs)).reshape(-1, side, side)
        ref = np.array([optimum(c) for c in costs_np[:64]])
        got = (masks[:64] * costs_np[:64]).sum((1, 2), dtype=np.float64)
        max_rel = float(np.max(np.abs(got - ref) / ref))
        contenders = {
            "ours": lambda f=compiled, x=costs: f(x),
            "scipy_per_instance": lambda x=costs_np: scipy_per_instance(x),
            "scipy_prebuilt": lambda x=costs_np, s=structure: scipy_prebuilt(x, s),
            "scipy_super_source": lambda x=costs_np: super_source(x),
        }
        t = C.time_interleaved(contenders, repeats=reps, min_sample_s=0.0)
        per = t["per_contender"]
        ratios = {
            name: C.paired_ratio(per[name]["samples"], per["ours"]["samples"])
            for name in contenders
            if name != "ours"
        }
        n_inst = BATCH * SAMPLES
        results.append(
            {
                "side": side,
                "instances_per_call": n_inst,
                "compile_s": compile_s,
                "max_rel_cost_error_vs_scipy_first64": max_rel,
                "seconds_per_call": per,
                "solves_per_s": {k: n_inst / s["median"] for k, s in per.items()},
                "ratio_to_ours": ratios,
            }
        )
        C.log(
            f"  shortest path {side}x{side}: "
            + ", ".join(f"{k}={C.fmt_time(s['median'])}" for k, s in per.items())
            + "; scipy per instance / ours = "
            + f"{ratios['scipy_per_instance']['median']:.1f}"
        )
    growth = {}
    if len(results) >= 2:
        sides = np.log([r["side"] for r in results])
        for name in results[0]["seconds_per_call"]:
            ts = np.log([r["seconds_per_call"][name]["median"] for r in results])
            growth[name] = float(np.polyfit(sides, ts, 1)[0])
    return {
        "setup": {
            "batch": BATCH,
            "samples": SAMPLES,
            "connectivity": 8,
            "terrain": "patches of Warcraft terrain costs (bench/shortest_path.py)",
            "sizes": sizes,
            "repeats": reps,
            "contenders": {
                "ours": "jax.jit(grid_shortest_path) on the (32, 10, H, W) batch",
                "scipy_per_instance": "scipy dijkstra per instance, CSR built per "
                "instance, path read from predecessors",
                "scipy_prebuilt": "the same with the graph structure prebuilt",
                "scipy_super_source": "one dijkstra call over all instances with a "
                "super-source (perturbed_layers._host_examples._GridDijkstra)",
            },
        },
        "results": results,
        "growth_exponent_vs_side": growth,
    }


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 12, 18; 5 reps")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", type=str, default=None)
    parser.add_argument("--terrain", choices=["patches", "iid"], default="patches")
    parser.add_argument(
        "--layer-only", action="store_true", help="only the layer's FY section"
    )
    args = parser.parse_args()
    sizes = [12, 18] if args.quick else [12, 18, 24, 30]
    if args.sizes:
        sizes = [int(s) for s in args.sizes.split(",")]
    repeats = args.repeats or (5 if args.quick else 20)

    rng = np.random.default_rng(SEED)
    ours = jax.jit(grid_shortest_path)
    ours_vmapped = jax.jit(jax.vmap(jax.vmap(grid_shortest_path)))
    host = jax.jit(jax.vmap(jax.vmap(scipy_grid_shortest_path(8))))
    super_source = _GridDijkstra(8)
    results, rows = [], []
    for side in [] if args.layer_only else sizes:
        costs_np = make_costs(rng, BATCH * SAMPLES, side, args.terrain)
        costs = jax.device_put(costs_np.reshape(BATCH, SAMPLES, side, side))
        t0 = time.perf_counter()
        compiled = ours.lower(costs).compile()
        compile_s = time.perf_counter() - t0
        structure = prebuilt_structure(side, side)

        # Exactness first: every path's cost against SciPy's optimum (float64).
        masks = np.asarray(compiled(costs)).reshape(-1, side, side)
        ref = np.array([optimum(c) for c in costs_np])
        rel = np.abs((masks * costs_np).sum((1, 2), dtype=np.float64) - ref) / ref
        if rel.max() > 1e-5:
            sys.exit(f"grid_shortest_path is off the optimum by {rel.max():.2e}")
        for name, solved in [
            ("scipy a", scipy_per_instance(costs_np[:8])),
            ("scipy b", scipy_prebuilt(costs_np[:8], structure)),
            ("scipy c", super_source(costs_np[:8])),
        ]:
            got = (solved * costs_np[:8]).sum((1, 2), dtype=np.float64)
            if not np.allclose(got, ref[:8], rtol=1e-6):
                sys.exit(f"{name} is off the optimum")

        contenders = {
            "ours": lambda f=compiled, x=costs: f(x),
            "ours vmapped": lambda x=costs: ours_vmapped(x),
            "scipy a": lambda x=costs_np: scipy_per_instance(x),
            "scipy b": lambda x=costs_np, s=structure: scipy_prebuilt(x, s),
            "scipy c": lambda x=costs_np: super_source(x),
            "host_solver": lambda x=costs: host(x),
        }
        print(f"side {side}: timing {repeats} interleaved repetitions", flush=True)
        timing = C.time_interleaved(contenders, repeats=repeats, min_sample_s=0.0)
        per = timing["per_contender"]
        ours_samples = per["ours"]["samples"]
        ratios = {
            name: C.paired_ratio(per[name]["samples"], ours_samples)
            for name in contenders
            if name != "ours"
        }
        results.append(
            {
                "side": side,
                "instances_per_call": BATCH * SAMPLES,
                "compile_s": compile_s,
                "max_rel_cost_error_vs_scipy": float(rel.max()),
                "seconds_per_call": per,
                "ratio_to_ours": ratios,
                "ours_solves_per_s": BATCH * SAMPLES / per["ours"]["median"],
            }
        )
        rows.append(
            [
                f"{side}×{side}",
                C.fmt_summary(per["ours"]),
                f"{BATCH * SAMPLES / per['ours']['median']:,.0f}",
                C.fmt_summary(per["ours vmapped"]),
                *(
                    f"{C.fmt_time(per[n]['median'])} ({ratios[n]['median']:.1f}×)"
                    for n in ("scipy a", "scipy b", "scipy c", "host_solver")
                ),
            ]
        )

    # Its own generator: the same instances with or without the solver section.
    layer_fy, layer_table = bench_layer(
        np.random.default_rng(SEED + 1), args.terrain, args.repeats or 20
    )
    header = [
        "grid",
        "ours: median [min, max]",
        "ours solves/s",
        "ours vmapped",
        "scipy a: per instance (×ours)",
        "scipy b: prebuilt (×ours)",
        "scipy c: super-source (×ours)",
        "host_solver (×ours)",
    ]
    if rows:
        print()
        print(
            f"{BATCH}×{SAMPLES} = {BATCH * SAMPLES} instances per call, "
            f"8-connectivity, {args.terrain} Warcraft terrain; median of {repeats} "
            "interleaved calls; (×ours) = median of the paired ratios contender / ours."
        )
        print(C.markdown_table(header, rows))
    print()
    print(layer_table)
    # A layer-only run gets its own file: it must not replace a full run's.
    suffix = ("-quick" if args.quick else "") + ("-layer" if args.layer_only else "")
    path = C.RESULTS_DIR / f"shortest_path-{C.today()}{suffix}.json"
    C.write_json(
        path,
        {
            "benchmark": "batched grid shortest paths",
            "when": C.now_iso(),
            "load_avg": C.load_avg(),
            "env": C.env_info(),
            "config": {
                "sizes": [] if args.layer_only else sizes,
                "batch": BATCH,
                "samples": SAMPLES,
                "connectivity": 8,
                "terrain": args.terrain,
                "terrain_costs": TERRAIN.tolist(),
                "terrain_shares": TERRAIN_SHARES.tolist(),
                "repeats": repeats,
                "seed": SEED,
            },
            "results": results,
            "layer_fy": layer_fy,
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
