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

Before timing, every instance's path cost is checked against SciPy's optimum. Results:
a Markdown table on stdout, JSON in bench/results/shortest_path-<date>[-quick].json.

Usage: python bench/shortest_path.py [--quick] [--repeats N] [--sizes 12,18,24,30]
       [--terrain patches|iid]
"""

import argparse
import sys
import time

import _common as C

C.setup_path()

import jax  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402
from scipy.sparse.csgraph import dijkstra  # noqa: E402

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


# ------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="sizes 12, 18; 5 reps")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--sizes", type=str, default=None)
    parser.add_argument("--terrain", choices=["patches", "iid"], default="patches")
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
    for side in sizes:
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
    print()
    print(
        f"{BATCH}×{SAMPLES} = {BATCH * SAMPLES} instances per call, 8-connectivity, "
        f"{args.terrain} Warcraft terrain; median of {repeats} interleaved calls; "
        "(×ours) = median of the paired ratios contender / ours."
    )
    print(C.markdown_table(header, rows))
    suffix = "-quick" if args.quick else ""
    path = C.RESULTS_DIR / f"shortest_path-{C.today()}{suffix}.json"
    C.write_json(
        path,
        {
            "benchmark": "batched grid shortest paths",
            "when": C.now_iso(),
            "load_avg": C.load_avg(),
            "env": C.env_info(),
            "config": {
                "sizes": sizes,
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
        },
    )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
