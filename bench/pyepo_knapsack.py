#!/usr/bin/env python
"""PyEPO's knapsack, solved by PyEPO's own models and by ours, on the same instances.

PyEPO 2.2.7 solves its knapsack through `pyepo.model.grb.knapsackModel` (Gurobi, one
instance per call, exact) or `pyepo.model.mpax.knapsackModel` (MPAX, a first-order LP
solver on JAX: the LP relaxation, so selections may be fractional). Ours is
`pl.solvers.knapsack`, exact branch and bound, the whole batch in one jit call. Data:
`pyepo.data.knapsack.genData` (32 items, 2 resources, capacity 20 each, PyEPO's
tutorial setting). Reported: time per solve and whether each answer is an exact
optimum (a 0/1 selection within capacity whose value equals Gurobi's to 1e-4).

Usage: python bench/pyepo_knapsack.py [--num N] [--mpax-num K]
(needs the bench extra: pyepo, gurobipy; MPAX needs `pip install mpax`).
"""

import argparse
import datetime
import pathlib
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

import perturbed_layers as pl

OUT = pathlib.Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--num", type=int, default=320, help="instances")
    parser.add_argument("--mpax-num", type=int, default=32, help="instances for MPAX")
    args = parser.parse_args()
    from pyepo.data.knapsack import genData
    from pyepo.model.grb import knapsackModel as GurobiKnapsack

    capacity = np.array([20.0, 20.0])
    weights, _, values = genData(
        args.num, 5, 32, dim=2, deg=4, noise_width=0.5, seed=135
    )

    # Gurobi through PyEPO, one instance per call (how PyEPO's losses call it).
    model = GurobiKnapsack(weights, capacity)
    t0 = time.perf_counter()
    grb = []
    for c in values:
        model.setObj(c)
        sol, obj = model.solve()
        grb.append((np.asarray(sol), float(obj)))
    grb_time = (time.perf_counter() - t0) / args.num
    grb_obj = np.array([o for _, o in grb])

    # Ours: the whole batch in one compiled call.
    solve = jax.jit(pl.solvers.knapsack)
    v, w, cap = (jnp.asarray(a, jnp.float32) for a in (values, weights, capacity))
    jax.block_until_ready(solve(v, w, cap))
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        ours = np.asarray(jax.block_until_ready(solve(v, w, cap)))
        times.append(time.perf_counter() - t0)
    ours_time = statistics.median(times) / args.num

    def exact(sel: np.ndarray, best: np.ndarray) -> np.ndarray:
        binary = np.all(np.isclose(sel, np.round(sel), atol=1e-4), axis=1)
        fits = np.all(sel @ weights.T <= capacity + 1e-4, axis=1)
        value = np.sum(sel * values[: len(sel)], axis=1)
        return binary & fits & np.isclose(value, best, rtol=1e-4, atol=1e-4)

    rows = [
        ("PyEPO + Gurobi (per instance)", grb_time, 1.0, args.num),
        (
            "ours, pl.solvers.knapsack (batch)",
            ours_time,
            exact(ours, grb_obj).mean(),
            args.num,
        ),
    ]
    try:
        from pyepo.model.mpax import knapsackModel as MpaxKnapsack

        mpax = MpaxKnapsack(weights, capacity)
        k = min(args.mpax_num, args.num)
        mpax.setObj(values[0])
        mpax.solve()  # compile
        t0 = time.perf_counter()
        sols = []
        for c in values[:k]:
            mpax.setObj(c)
            sols.append(np.asarray(mpax.solve()[0]))
        mpax_time = (time.perf_counter() - t0) / k
        rows.append(
            (
                "PyEPO + MPAX (LP relaxation)",
                mpax_time,
                exact(np.stack(sols), grb_obj[:k]).mean(),
                k,
            )
        )
    except ImportError as error:
        rows.append((f"PyEPO + MPAX: not run ({error})", float("nan"), float("nan"), 0))

    lines = [
        f"# PyEPO knapsack: PyEPO's models against ours, {datetime.date.today()}, cpu",
        "",
        f"genData({args.num}, 5, 32, dim=2, deg=4, noise_width=0.5, seed=135), capacity 20 "
        "per resource, float32 on our side. Exact: a 0/1 selection within capacity "
        "whose value equals Gurobi's to 1e-4.",
        "",
        "| solver | time per solve | × ours | exact share | instances |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, t, ok, n in rows:
        lines.append(
            f"| {name} | {t * 1e3:.3f} ms | {t / ours_time:.1f} | {ok:.3f} | {n} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    OUT.mkdir(exist_ok=True)
    (OUT / f"pyepo-knapsack-{datetime.date.today()}-cpu.md").write_text(text)


if __name__ == "__main__":
    main()
