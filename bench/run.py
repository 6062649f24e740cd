#!/usr/bin/env python
"""Every benchmark of issue 6 in one run: perturbed_layers against its peers.

Sections (`--only NAME ...` picks some):

- `accuracy`: relative error of the VJP of the perturbed argmax against the exact
  softmax Jacobian, B=32, n=10, σ=0.5, Gumbel, M ∈ {100, 1000}, mean over 20 keys;
  ours vs optax (whole batch / vmapped per row) and jaxopt (whole / vmapped); also
  ablation variants of our estimator (information only, in no target; --quick: the
  chunked one at M=1000), and checks that chunked and unchunked, and
  pl.make_perturbed_fun and optax, give the same gradients from the same samples.
- `timing`: forward+gradient wall time over B ∈ {1, 32, 256}, n ∈ {10, 100, 1000},
  M ∈ {100, 1000} (a subset with --quick), and the noise-draw floor (B·n·M Gumbel
  values alone) where B·n·M ≥ 10⁷.
- `memory`: peak memory of jit(grad) at M = 100,000, B = 32, n = 1000: ours with
  chunk_size=500 run in a subprocess (peak RSS, or device peak on an accelerator),
  and XLA's compiled memory analysis of every contender.
- `fy`: the Fenchel–Young loss step against the layer's forward+gradient.
- `shortest_path`: solves per second on 12×12 grids (32 × M=10 instances per call)
  against SciPy's Dijkstra looping over instances, and how both grow with the side.
- `pyepo`: PyEPO's 5×5 shortest path with its perturbedFenchelYoung (Gurobi) against
  ours, seconds per epoch and test normalised regret (bench/pyepo_compare.py).
- `scaling`: time against M and against B, log-log, ours, optax and jaxopt.

Contenders are timed interleaved (every repetition times each once, in a rotated
order); results are medians with min and max, and ratios are medians of per-repetition
(paired) ratios. Output: bench/results/<date>-<device>[-quick].json, a Markdown table
of target / measured / met (.md beside it) and PNG plots (log-log scaling curves).
Compiled programs are cached on disk (JAX's persistent compilation cache, see
--compile-cache) so a second run skips most compile time; run time is unaffected.

Usage: python bench/run.py [--quick] [--only NAME ...] [--out DIR] [--readme]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

SECTIONS = (
    "accuracy",
    "timing",
    "fy",
    "scaling",
    "memory",
    "shortest_path",
    "pyepo",
)
DEFAULT_CACHE = Path.home() / ".cache" / "perturbed_layers" / "bench-jax"


def _configure_compile_cache(argv: list[str]) -> str | None:
    """Set JAX's persistent compilation cache before jax is imported (also for the
    subprocesses, through the environment)."""
    if "--no-compile-cache" in argv:
        return None
    path = str(DEFAULT_CACHE)
    for i, a in enumerate(argv):
        if a == "--compile-cache" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--compile-cache="):
            path = a.split("=", 1)[1]
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", path)
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


_CACHE_DIR = _configure_compile_cache(sys.argv[1:])

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

C.setup_path()

import core  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

SIGMA = core.SIGMA
FLOOR_MIN_ELEMS = core.FLOOR_MIN_ELEMS
MEM_B, MEM_N, MEM_M, MEM_CHUNK = core.MEM_B, core.MEM_N, core.MEM_M, core.MEM_CHUNK

VARIANTS = {"ours_scan": "epoch in one lax.scan"}

TARGETS = {
    "acc_whole": 0.1,  # ours / optax whole batch, at most
    "acc_vmapped": 0.6,  # ours / optax vmapped per row, at most
    "time_vmapped": 1.0,  # ours / optax vmapped, at most, everywhere
    "floor": 1.1,  # ours / noise-draw floor where B·n·M ≥ 1e7, at most (issue 18)
    "time_fastest": 1.0,  # ours / every peer's fastest form, everywhere (issue 18)
    "acc_per_s": 0.1,  # error²·time ours / every peer, headline (issue 18)
    "fy_floor": 1.15,  # FY step / its noise draw alone, at most (issue 18)
    "mem": 2 * C.GIB,  # below
    "fy": 0.6,  # FY step / layer fwd+grad, at most
    "sp": 10.0,  # scipy per-instance / ours, at least
    "pyepo_speed": 20.0,  # PyEPO / ours seconds per epoch, at least
    "pyepo_regret": 0.5,  # |regret difference| in points, at most
}

T0 = time.perf_counter()


def log(msg: str) -> None:
    print(
        f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:5.0f}s] {msg}",
        flush=True,
    )


# ------------------------------------------------------------------ contenders

_JAXOPT: dict[str, Any] = {}


def jaxopt_status() -> dict[str, Any]:
    """Whether jaxopt installs, imports and differentiates with this jax."""
    if _JAXOPT:
        return _JAXOPT
    try:
        version = importlib.metadata.version("jaxopt")
    except importlib.metadata.PackageNotFoundError:
        _JAXOPT.update(ok=False, reason="not installed (pip install jaxopt)")
        return _JAXOPT
    try:
        from jaxopt import perturbations

        f = perturbations.make_perturbed_argmax(
            core.one_hot_argmax, 10, SIGMA, perturbations.Gumbel()
        )
        t = jnp.zeros((2, 3))
        g = jax.grad(lambda t: jnp.sum(f(t, jax.random.key(0)) * t))(t)
        if not bool(jnp.all(jnp.isfinite(g))):
            raise FloatingPointError("non-finite gradient")
        _JAXOPT.update(ok=True, version=version)
    except Exception as e:
        _JAXOPT.update(
            ok=False,
            version=version,
            reason=f"does not import/run with jax {jax.__version__}: "
            f"{type(e).__name__}: {e}",
        )
    return _JAXOPT


def forward_any(name: str, m: int, chunk: int | None = None):
    """(theta (B, n), key) -> y (B, n): core's contenders plus jaxopt's."""
    if name.startswith("jaxopt"):
        from jaxopt import perturbations

        f = perturbations.make_perturbed_argmax(
            core.one_hot_argmax, m, SIGMA, perturbations.Gumbel()
        )
        if name == "jaxopt_whole":
            return lambda t, k: f(t, k)
        return lambda t, k: jax.vmap(f)(t, jax.random.split(k, t.shape[0]))
    return core.forward(name, m, chunk)


DESCRIPTIONS = {
    **core.DESCRIPTIONS,
    "jaxopt_whole": "jaxopt.perturbations.make_perturbed_argmax on the whole (B, n) "
    "batch (one instance)",
    "jaxopt_vmapped": "jaxopt make_perturbed_argmax vmapped over rows, split keys",
    "floor": "jax.random.gumbel(key, (M·B·n,)) alone, reshaped: the noise-draw floor",
}


def with_jaxopt(names: list[str]) -> list[str]:
    ok = jaxopt_status()["ok"]
    return [n for n in names if ok or not n.startswith("jaxopt")]


_CACHE: dict[tuple, C.Compiled] = {}


def compiled_vg(name: str, b: int, n: int, m: int) -> C.Compiled:
    """jit(value_and_grad(θ ↦ ⟨y_ε(θ), v⟩)) for a contender, compiled once per run.

    Its gradient is the VJP vᵀ ∂y_ε/∂θ, so the accuracy section uses it too."""
    key = ("vg", name, b, n, m)
    if key not in _CACHE:
        theta, v = core.inputs(b, n)
        if name == "floor":
            fn, args = core.floor_fn(b, n, m), (jax.random.key(7),)
        else:
            fn = core.vg_fn(forward_any(name, m))
            args = (theta, v, jax.random.key(core.RUN_KEY_SEED))
        compiled, seconds, ma = C.compile_aot(fn, *args)
        _CACHE[key] = C.Compiled(compiled, args, seconds, ma)
        if name == "ours":  # core.bench_fy reuses it
            core._COMPILED[("vg", "ours", b, n, m)] = (compiled, seconds)
    return _CACHE[key]


def time_point(
    b: int,
    n: int,
    m: int,
    names: list[str],
    *,
    repeats: int,
    budget_s: float | None = None,
    min_sample_s: float = 0.1,
    mem_limit: float = 10 * C.GIB,
) -> dict[str, Any]:
    """Interleaved timing of the contenders at one (B, n, M); paired ratios."""
    t = C.time_contenders(
        {name: compiled_vg(name, b, n, m) for name in names},
        repeats=repeats,
        budget_s=budget_s,
        min_sample_s=min_sample_s,
        mem_limit=mem_limit,
    )
    return {"B": b, "n": n, "M": m, "elements": b * n * m, **t}


# ------------------------------------------------------------ 1. accuracy


ACCURACY_VARIANTS = (
    "ours_loo",
    "ours_loo_rb",
    "ours_loo_sym",
    "ours_no_cv",
    "ours_plain",
    "ours_optax_noise",
    "ours_chunked",
    "pl_make_perturbed_fun_whole",
)
# Consistency checks: the variant computes the same estimate as the contender.
ACCURACY_CHECKS = {
    "chunked_vs_unchunked_max_abs_diff": ("ours_chunked", "ours"),
    "pl_make_perturbed_fun_vs_optax_max_abs_diff": (
        "pl_make_perturbed_fun_whole",
        "optax_whole",
    ),
}


def accuracy_variants(quick: bool, m: int) -> list[str]:
    """Ablations of our estimator and same-samples checks (information only: no
    target's ratio uses them); --quick keeps only `ours_chunked` at M=1000."""
    if not quick:
        return list(ACCURACY_VARIANTS)
    return ["ours_chunked"] if m == 1000 else []


def error_summary(grads: list[np.ndarray], g_exact) -> dict[str, Any]:
    """Relative errors of one contender's gradients over the keys, summarised."""
    errs = [core.rel_err(g, g_exact) for g in grads]
    s = C.summarize(errs)
    return {**{k: s[k] for k in ("mean", "median", "min", "max")}, "per_key": errs}


def accuracy_checks(grads: dict[str, list[np.ndarray]], g_exact) -> dict[str, float]:
    """Max |difference| over keys and entries of the pairs of `ACCURACY_CHECKS` that
    ran, and max |g| for scale."""
    checks = {
        check: float(
            max(np.max(np.abs(x - y)) for x, y in zip(grads[a], grads[b], strict=True))
        )
        for check, (a, b) in ACCURACY_CHECKS.items()
        if a in grads and b in grads
    }
    return {**checks, "max_abs_g_exact": float(np.max(np.abs(g_exact)))}


def bench_accuracy(quick: bool) -> dict[str, Any]:
    b, n = 32, 10
    theta, v = core.inputs(b, n)
    g_exact = core.exact_vjp(theta, v)
    keys = jax.random.split(jax.random.key(core.KEYS_SEED), core.NUM_ACC_KEYS)
    names = with_jaxopt(
        ["ours", "optax_whole", "optax_vmapped", "jaxopt_whole", "jaxopt_vmapped"]
    )
    out: dict[str, Any] = {
        "setup": {
            "B": b,
            "n": n,
            "sigma": SIGMA,
            "noise": "Gumbel",
            "keys": f"split(key({core.KEYS_SEED}), {core.NUM_ACC_KEYS})",
            "metric": "mean over keys of ||g_hat - g||_F / ||g||_F, whole batch; "
            "g = exact softmax VJP (float64)",
            "variants": "ablations of our estimator and same-samples checks, "
            "information only (in no ratio)",
        },
        "by_M": {},
    }
    for m in (100, 1000):
        variants = accuracy_variants(quick, m)
        grads: dict[str, list[np.ndarray]] = {}
        res: dict[str, dict[str, Any]] = {}
        for name in names + variants:
            c = compiled_vg(name, b, n, m)
            grads[name] = [np.asarray(c.fn(theta, v, k)[1]) for k in keys]
            res[name] = {
                "description": DESCRIPTIONS[name],
                **error_summary(grads[name], g_exact),
                "compile_s": c.compile_s,
            }
        ratios = {}
        for ref in names[1:]:
            a, r = res["ours"]["per_key"], res[ref]["per_key"]
            ratios[f"ours/{ref}"] = {
                "ratio_of_means": float(np.mean(a) / np.mean(r)),
                "bootstrap95": core.bootstrap_ratio_ci(a, r),
            }
        out["by_M"][str(m)] = {
            "contenders": {k: res[k] for k in names},
            "variants": {k: res[k] for k in variants},
            "ratios": ratios,
            "checks": accuracy_checks(grads, g_exact),
        }
        log(
            f"  accuracy M={m}: "
            + ", ".join(f"{k}={r['mean']:.4f}" for k, r in res.items())
        )
    return out


# ------------------------------------------------------------ 2. timing


def timing_grid(quick: bool) -> list[tuple[int, int, int]]:
    if quick:
        return [(32, 10, 1000), (32, 10, 100), (256, 100, 1000)]
    grid = [
        (b, n, m) for b in (1, 32, 256) for n in (10, 100, 1000) for m in (100, 1000)
    ]
    grid.remove((32, 10, 1000))
    return [(32, 10, 1000), *grid]


def timing_names(b: int, n: int, m: int) -> list[str]:
    names = ["ours", "optax_vmapped", "jaxopt_vmapped"]
    if n == 10 or (b, n, m) == (32, 10, 1000):
        names.insert(1, "optax_whole")
    if (b, n) == (32, 10):
        names.append("jaxopt_whole")
    if (b, n, m) == (32, 10, 1000):
        names.append("ours_plain")  # every variance reduction off (information)
    if b * n * m >= FLOOR_MIN_ELEMS:
        names.append("floor")
    return with_jaxopt(names)


def bench_timing(quick: bool, repeats: int) -> dict[str, Any]:
    results = []
    for i, (b, n, m) in enumerate(timing_grid(quick)):
        t0 = time.perf_counter()
        # Each configuration's ratios are medians over its repetitions, and the
        # targets take the worst configuration: cheap ones get 3x the repetitions
        # (within a time budget), those with a noise-floor target a larger budget.
        big = b * n * m >= 1e8
        floor = b * n * m >= FLOOR_MIN_ELEMS
        r = time_point(
            b,
            n,
            m,
            timing_names(b, n, m),
            repeats=2 if big else (repeats + 4 if i == 0 else 3 * repeats),
            budget_s=None if big else (30.0 if i == 0 else 20.0 if floor else 8.0),
            min_sample_s=0.0 if big else (0.25 if i == 0 else 0.1),
        )
        results.append(r)
        rv = r["ratios"].get("ours/optax_vmapped", {}).get("wall", {})
        rf = r["ratios"].get("ours/floor", {}).get("wall", {})
        log(
            f"  timing B={b} n={n} M={m}: "
            + ", ".join(
                f"{k}={C.fmt_time(c['time_s']['median'])}"
                for k, c in r["contenders"].items()
                if "time_s" in c
            )
            + (f"; ours/optax_vmapped={rv['median']:.2f}" if rv else "")
            + (f"; ours/floor={rf['median']:.2f}" if rf else "")
            + f" ({time.perf_counter() - t0:.0f} s)"
        )
    return {
        "setup": {
            "sigma": SIGMA,
            "noise": "Gumbel",
            "what": "jit(value_and_grad(theta -> <y_eps(theta), v>)), warm, blocked",
            "floor": "jit(jax.random.gumbel(key, (M*B*n,))), where B*n*M >= 1e7",
            "note": "configs with B*n*M >= 1e8: 2 repetitions of one call each; "
            "others 3x --repeats within 8 s (20 s where the floor is timed)",
        },
        "grid": results,
    }


# ------------------------------------------------------------ 3. memory


def bench_memory(quick: bool) -> dict[str, Any]:
    run_m = 5_000 if quick else MEM_M
    log(f"  memory: ours chunk={MEM_CHUNK} run at M={run_m} in a subprocess")
    run = C.run_child(
        Path(__file__).resolve(),
        {
            "contender": "ours_chunked",
            "B": MEM_B,
            "n": MEM_N,
            "M": run_m,
            "chunk": MEM_CHUNK,
            "run": True,
        },
        timeout=1800.0,
    )
    if "error" in run:
        log(f"  memory child failed: {run['error']}")
    compiled: dict[str, Any] = {}
    names = ["ours_chunked", "optax_whole"]
    if not quick:
        names += with_jaxopt(["ours", "optax_vmapped", "jaxopt_whole"])
    theta, v = core.inputs(MEM_B, MEM_N)
    for name in names:
        fwd = forward_any(
            "ours" if name == "ours_chunked" else name,
            MEM_M,
            MEM_CHUNK if name == "ours_chunked" else None,
        )
        grad = jax.grad(lambda t, vv, k, fwd=fwd: jnp.sum(fwd(t, k) * vv))
        try:
            _, seconds, ma = C.compile_aot(grad, theta, v, jax.random.key(0))
            compiled[name] = {"compile_s": seconds, "memory_analysis": ma}
            log(
                f"  memory: {name} M={MEM_M} XLA total {C.fmt_bytes(ma.get('total_bytes', 0))}"
            )
        except Exception as e:  # e.g. a compile-time allocation failure
            compiled[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return {
        "setup": {
            "B": MEM_B,
            "n": MEM_N,
            "M": MEM_M,
            "chunk_size": MEM_CHUNK,
            "run_M": run_m,
            "what": "jit(grad(theta -> <y_eps(theta), v>)). Run: one subprocess, peak "
            "RSS (VmHWM, compilation included) minus RSS after imports and inputs; "
            "on an accelerator also the device's peak_bytes_in_use. Compiled: XLA "
            "memory_analysis (temp + arguments + outputs) at M=100,000, not run.",
            "note": "quick runs the chunked program at M=5,000: with chunks its memory "
            "does not grow with M (the XLA analysis at M=100,000 checks it)"
            if quick
            else "",
        },
        "run": run,
        "compiled": compiled,
    }


# ------------------------------------------------------------ 5. shortest paths


def bench_shortest_path(quick: bool, repeats: int) -> dict[str, Any]:
    import shortest_path as sp

    sizes = [12, 30] if quick else [12, 18, 24, 30]
    reps = 5 if quick else max(repeats, 10)
    rng = np.random.default_rng(sp.SEED)
    ours = jax.jit(sp.grid_shortest_path)
    super_source = sp._GridDijkstra(8)
    results = []
    for side in sizes:
        costs_np = sp.make_costs(rng, sp.BATCH * sp.SAMPLES, side, "patches")
        costs = jax.device_put(costs_np.reshape(sp.BATCH, sp.SAMPLES, side, side))
        t0 = time.perf_counter()
        compiled = ours.lower(costs).compile()
        compile_s = time.perf_counter() - t0
        structure = sp.prebuilt_structure(side, side)
        masks = np.asarray(compiled(costs)).reshape(-1, side, side)
        ref = np.array([sp.optimum(c) for c in costs_np[:64]])
        got = (masks[:64] * costs_np[:64]).sum((1, 2), dtype=np.float64)
        max_rel = float(np.max(np.abs(got - ref) / ref))
        contenders = {
            "ours": lambda f=compiled, x=costs: f(x),
            "scipy_per_instance": lambda x=costs_np: sp.scipy_per_instance(x),
            "scipy_prebuilt": lambda x=costs_np, s=structure: sp.scipy_prebuilt(x, s),
            "scipy_super_source": lambda x=costs_np: super_source(x),
        }
        t = C.time_interleaved(contenders, repeats=reps, min_sample_s=0.0)
        per = t["per_contender"]
        ratios = {
            name: C.paired_ratio(per[name]["samples"], per["ours"]["samples"])
            for name in contenders
            if name != "ours"
        }
        n_inst = sp.BATCH * sp.SAMPLES
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
        log(
            f"  shortest path {side}x{side}: "
            + ", ".join(f"{k}={C.fmt_time(s['median'])}" for k, s in per.items())
            + f"; scipy per instance / ours = {ratios['scipy_per_instance']['median']:.1f}"
        )
    growth = {}
    if len(results) >= 2:
        sides = np.log([r["side"] for r in results])
        for name in results[0]["seconds_per_call"]:
            ts = np.log([r["seconds_per_call"][name]["median"] for r in results])
            growth[name] = float(np.polyfit(sides, ts, 1)[0])
    return {
        "setup": {
            "batch": sp.BATCH,
            "samples": sp.SAMPLES,
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


# ------------------------------------------------------------ 7. scaling


def bench_scaling(quick: bool, repeats: int) -> dict[str, Any]:
    n = 10
    if quick:
        ms, bs = [100, 1000, 10_000], [1, 32, 256]
        names = ["ours", "optax_whole", "optax_vmapped"]
    else:
        ms, bs = [10, 100, 1000, 10_000, 100_000], [1, 8, 32, 128, 256]
        names = with_jaxopt(["ours", "optax_whole", "optax_vmapped", "jaxopt_vmapped"])
    out: dict[str, Any] = {
        "setup": {
            "n": n,
            "vs_M": {"B": 32, "M": ms},
            "vs_B": {"M": 1000, "B": bs},
            "contenders": names,
        },
        "vs_M": [],
        "vs_B": [],
    }
    for axis, points in (
        ("vs_M", [(32, m) for m in ms]),
        ("vs_B", [(b, 1000) for b in bs]),
    ):
        for b, m in points:
            r = time_point(
                b, n, m, names, repeats=repeats, budget_s=8.0, min_sample_s=0.05
            )
            out[axis].append(r)
            log(
                f"  scaling {axis} B={b} M={m}: "
                + ", ".join(
                    f"{k}={C.fmt_time(c['time_s']['median'])}"
                    for k, c in r["contenders"].items()
                    if "time_s" in c
                )
            )
    slopes: dict[str, dict[str, float]] = {}
    for axis, var in (("vs_M", "M"), ("vs_B", "B")):
        slopes[axis] = {}
        for name in names:
            pts = [
                (r[var], r["contenders"][name]["time_s"]["median"])
                for r in out[axis]
                if "time_s" in r["contenders"].get(name, {})
            ]
            # Slope over the upper half of the range (past fixed overheads).
            pts = pts[len(pts) // 2 :] if len(pts) >= 4 else pts[-2:]
            if len(pts) >= 2:
                x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
                slopes[axis][name] = float(np.polyfit(x, y, 1)[0])
    out["loglog_slope_upper_range"] = slopes
    return out


# ------------------------------------------------------------ plots


STYLE = {
    "ours": ("tab:blue", "o", "-"),
    "optax_whole": ("tab:orange", "s", "--"),
    "optax_vmapped": ("tab:red", "^", "-"),
    "jaxopt_whole": ("tab:green", "v", "--"),
    "jaxopt_vmapped": ("tab:green", "D", "-"),
    "floor": ("0.4", "x", ":"),
}


def plot_scaling(res: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sc = res["scaling"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, axis, var in ((axes[0], "vs_M", "M"), (axes[1], "vs_B", "B")):
        for name in sc["setup"]["contenders"]:
            pts = [
                (r[var], r["contenders"][name]["time_s"])
                for r in sc[axis]
                if "time_s" in r["contenders"].get(name, {})
            ]
            if not pts:
                continue
            x = np.array([p[0] for p in pts], float)
            med = np.array([p[1]["median"] for p in pts])
            lo = med - np.array([p[1]["min"] for p in pts])
            hi = np.array([p[1]["max"] for p in pts]) - med
            color, marker, ls = STYLE.get(name, ("k", ".", "-"))
            ax.errorbar(
                x,
                med,
                yerr=[lo, hi],
                color=color,
                marker=marker,
                ls=ls,
                label=name,
                capsize=3,
                ms=5,
            )
        ours = [
            (r[var], r["contenders"]["ours"]["time_s"]["median"])
            for r in sc[axis]
            if "time_s" in r["contenders"].get("ours", {})
        ]
        if len(ours) >= 2:  # a guide: time proportional to the variable
            x0, y0 = ours[-1]
            xs = np.array([ours[0][0], x0], float)
            ax.plot(xs, y0 * xs / x0, color="0.6", ls=":", lw=1, label=f"∝ {var}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylabel("forward + gradient time [s]")
        if var == "M":
            ax.set_xlabel("M (samples), B=32, n=10")
            ax.set_title("time vs M")
        else:
            ax.set_xlabel("B (batch), M=1000, n=10")
            ax.set_title("time vs B")
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_shortest_path(res: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    rs = res["shortest_path"]["results"]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    colors = {
        "ours": "tab:blue",
        "scipy_per_instance": "tab:red",
        "scipy_prebuilt": "tab:orange",
        "scipy_super_source": "tab:purple",
    }
    for name in rs[0]["seconds_per_call"]:
        x = np.array([r["side"] for r in rs], float)
        s = [r["seconds_per_call"][name] for r in rs]
        med = np.array([v["median"] for v in s])
        err = [
            med - np.array([v["min"] for v in s]),
            np.array([v["max"] for v in s]) - med,
        ]
        slope = res["shortest_path"]["growth_exponent_vs_side"].get(name)
        label = name + (f" (∝ side^{slope:.1f})" if slope is not None else "")
        ax.errorbar(
            x, med, yerr=err, marker="o", capsize=3, label=label, color=colors.get(name)
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xticks([r["side"] for r in rs], [f"{r['side']}" for r in rs])
    ax.set_xlabel("grid side (8-connectivity)")
    ax.set_ylabel("seconds per call (32 × 10 instances)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------ targets table


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def grid_ratios(grid: list[dict[str, Any]], ratio: str) -> list[tuple[dict, float]]:
    """(config, median paired wall-time ratio) for each timing config with `ratio`."""
    return [
        (g, g["ratios"][ratio]["wall"]["median"]) for g in grid if ratio in g["ratios"]
    ]


def config(g: dict[str, Any]) -> str:
    return f"({g['B']},{g['n']},{g['M']})"


def targets_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(bench, metric, target, measured, met, detail=""):
        rows.append(
            {
                "benchmark": bench,
                "metric": metric,
                "target": target,
                "measured": measured,
                "met": met,
                "detail": detail,
            }
        )

    jx = res.get("jaxopt", {})
    acc = res.get("accuracy")
    if acc and "by_M" in acc:
        for m, e in acc["by_M"].items():
            c = e["contenders"]
            for ref, tkey in (
                ("optax_whole", "acc_whole"),
                ("optax_vmapped", "acc_vmapped"),
            ):
                r = e["ratios"][f"ours/{ref}"]
                lo, hi = r["bootstrap95"]
                add(
                    "1 gradient accuracy",
                    f"rel. error ours / {ref}, M={m}",
                    f"≤ {TARGETS[tkey]}",
                    r["ratio_of_means"],
                    r["ratio_of_means"] <= TARGETS[tkey],
                    f"{c['ours']['mean']:.4f} / {c[ref]['mean']:.4f}; 95% bootstrap [{lo:.3f}, {hi:.3f}]",
                )
            for ref in ("jaxopt_whole", "jaxopt_vmapped"):
                if f"ours/{ref}" in e["ratios"]:
                    r = e["ratios"][f"ours/{ref}"]
                    add(
                        "1 gradient accuracy",
                        f"rel. error ours / {ref}, M={m}",
                        "(info)",
                        r["ratio_of_means"],
                        None,
                        f"{c['ours']['mean']:.4f} / {c[ref]['mean']:.4f}",
                    )
        if not jx.get("ok", True):
            add(
                "1 gradient accuracy",
                "jaxopt contender",
                "(info)",
                "not run",
                None,
                jx.get("reason", ""),
            )
    tim = res.get("timing")
    if tim and "grid" in tim:
        grid = tim["grid"]
        head = grid[0]
        r = head["ratios"].get("ours/optax_vmapped")
        if r:
            add(
                "2 fwd+grad time",
                f"ours / optax_vmapped, headline B={head['B']} n={head['n']} M={head['M']}",
                f"≤ {TARGETS['time_vmapped']}",
                r["wall"]["median"],
                r["wall"]["median"] <= TARGETS["time_vmapped"],
                f"paired [{r['wall']['min']:.2f}, {r['wall']['max']:.2f}]; CPU-time ratio {r['cpu']['median']:.2f}",
            )
        vs = grid_ratios(grid, "ours/optax_vmapped")
        if vs:
            over = [
                f"{config(g)} {x:.2f}" for g, x in vs if x > TARGETS["time_vmapped"]
            ]
            add(
                "2 fwd+grad time",
                f"ours / optax_vmapped, worst of {len(vs)} (B,n,M) configs",
                f"≤ {TARGETS['time_vmapped']} everywhere",
                max(x for _, x in vs),
                not over,
                ("over 1.0: " + "; ".join(over))
                if over
                else f"all {len(vs)} configs ≤ 1.0",
            )
        fl = grid_ratios(grid, "ours/floor")
        if fl:
            add(
                "2 fwd+grad time",
                f"ours / noise-draw floor, worst of {len(fl)} configs with B·n·M ≥ 1e7",
                f"≤ {TARGETS['floor']}",
                max(x for _, x in fl),
                all(x <= TARGETS["floor"] for _, x in fl),
                "; ".join(f"{config(g)} {x:.2f}" for g, x in fl),
            )
        fastest = []
        for g in grid:
            cs = g["contenders"]
            peers = {
                k: c["time_s"]["median"]
                for k, c in cs.items()
                if k.startswith(("optax", "jaxopt")) and "time_s" in c
            }
            if peers and "time_s" in cs.get("ours", {}):
                best = min(peers, key=peers.__getitem__)
                fastest.append((g, cs["ours"]["time_s"]["median"] / peers[best], best))
        if fastest:
            over = [
                f"{config(g)} {x:.2f} vs {who}"
                for g, x, who in fastest
                if x > TARGETS["time_fastest"]
            ]
            worst = max(fastest, key=lambda item: item[1])
            add(
                "2 fwd+grad time",
                f"ours / every peer's fastest form, worst of {len(fastest)} configs",
                f"≤ {TARGETS['time_fastest']} everywhere",
                worst[1],
                not over,
                ("over: " + "; ".join(over))
                if over
                else f"worst {config(worst[0])} vs {worst[2]}",
            )
        jv = [x for _, x in grid_ratios(grid, "ours/jaxopt_vmapped")]
        if jv:
            add(
                "2 fwd+grad time",
                "ours / jaxopt_vmapped, min–max over configs",
                "(info)",
                f"{min(jv):.2f}–{max(jv):.2f}",
                None,
                f"{len(jv)} configs",
            )
    if acc and "by_M" in acc and tim and "grid" in tim:
        head = next(
            (g for g in tim["grid"] if (g["B"], g["n"], g["M"]) == (32, 10, 1000)), None
        )
        errs = acc["by_M"]["1000"]["contenders"]
        if head is not None:
            cs = head["contenders"]
            parts, values = [], []
            for ref in (
                "optax_whole",
                "optax_vmapped",
                "jaxopt_whole",
                "jaxopt_vmapped",
            ):
                if ref in errs and "time_s" in cs.get(ref, {}):
                    e2t = (errs["ours"]["mean"] / errs[ref]["mean"]) ** 2 * (
                        cs["ours"]["time_s"]["median"] / cs[ref]["time_s"]["median"]
                    )
                    parts.append(f"{ref} {e2t:.3g}")
                    values.append(e2t)
            add(
                "1+2 accuracy per second",
                "error²·time, ours / peer, B=32 n=10 M=1000 (time to reach equal error)",
                f"≤ {TARGETS['acc_per_s']} every peer",
                ", ".join(parts),
                bool(values) and max(values) <= TARGETS["acc_per_s"],
                "Monte-Carlo error² ∝ 1/M, time ∝ M: below 1 means ours reaches a given gradient error in that fraction of the peer's time",
            )
    mem = res.get("memory")
    if mem and "run" in mem:
        run = mem["run"]
        if "error" not in run:
            peak = run.get("device_peak_bytes", run["peak_rss_delta_bytes"])
            what = "device peak" if "device_peak_bytes" in run else "peak RSS delta"
            add(
                "3 peak memory",
                f"{what}, jit(grad) ours chunk={run['chunk']}, M={run['M']}, B=32, n=1000",
                "< 2 GiB",
                C.fmt_bytes(peak),
                peak < TARGETS["mem"],
                f"run {run['run_s']:.1f} s, compile {run['compile_s']:.1f} s (subprocess)",
            )
        else:
            add(
                "3 peak memory",
                "peak memory run",
                "< 2 GiB",
                "error",
                False,
                run["error"],
            )
        for name, c in mem.get("compiled", {}).items():
            if "memory_analysis" not in c:
                add(
                    "3 peak memory",
                    f"XLA memory analysis {name}, M=100,000",
                    "(info)",
                    "error",
                    None,
                    c.get("error", ""),
                )
                continue
            total = c["memory_analysis"].get("total_bytes", 0)
            ours = name == "ours_chunked"
            add(
                "3 peak memory",
                f"XLA memory analysis (temp+arg+out), {name}"
                + (f" chunk={MEM_CHUNK}" if ours else "")
                + ", M=100,000",
                "< 2 GiB" if ours else "(info)",
                C.fmt_bytes(total),
                (total < TARGETS["mem"]) if ours else None,
                "compiled, not run",
            )
    fy = res.get("fy")
    if fy and "ratio_fy_over_layer" in fy:
        r = fy["ratio_fy_over_layer"]
        add(
            "4 FY vs layer",
            "FY loss value_and_grad / layer fwd+grad, B=32 n=10 M=1000",
            f"≤ {TARGETS['fy']}",
            r["median"],
            r["median"] <= TARGETS["fy"],
            f"paired [{r['min']:.2f}, {r['max']:.2f}]; CPU-time ratio {fy['cpu_ratio_fy_over_layer']['median']:.2f}; "
            f"noise floor / layer {fy['ratio_floor_over_layer']['median']:.2f}",
        )
        if "ratio_fy_over_floor" in fy:
            r = fy["ratio_fy_over_floor"]
            add(
                "4 FY vs noise draw",
                "FY loss value_and_grad / its noise draw alone, B=32 n=10 M=1000",
                f"≤ {TARGETS['fy_floor']}",
                r["median"],
                r["median"] <= TARGETS["fy_floor"],
                f"paired [{r['min']:.2f}, {r['max']:.2f}]",
            )
    sp = res.get("shortest_path")
    if sp and sp.get("results"):
        r0 = sp["results"][0]
        r = r0["ratio_to_ours"]["scipy_per_instance"]
        add(
            "5 shortest paths",
            f"solves/s ours / scipy per instance, {r0['side']}×{r0['side']}, 32×10 per call",
            f"≥ {TARGETS['sp']}×",
            r["median"],
            r["median"] >= TARGETS["sp"],
            f"ours {r0['solves_per_s']['ours']:,.0f} solves/s; ×prebuilt {r0['ratio_to_ours']['scipy_prebuilt']['median']:.1f}, "
            f"×super-source {r0['ratio_to_ours']['scipy_super_source']['median']:.1f}",
        )
        last = sp["results"][-1]
        g = sp.get("growth_exponent_vs_side", {})
        add(
            "5 shortest paths",
            f"growth {r0['side']}→{last['side']}: time ∝ side^k",
            "(info)",
            ", ".join(f"{k} {v:.2f}" for k, v in g.items()),
            None,
            f"ours / scipy per instance at {last['side']}×{last['side']}: "
            f"{last['ratio_to_ours']['scipy_per_instance']['median']:.1f}×",
        )
    pe = res.get("pyepo")
    if pe:
        if pe.get("error"):
            add(
                "6 PyEPO",
                "PyEPO comparison",
                "≥ 20× at Δregret within ±0.5 pt",
                "error",
                False,
                pe["error"],
            )
        elif pe.get("skipped"):
            add(
                "6 PyEPO",
                "PyEPO comparison",
                "≥ 20× at Δregret within ±0.5 pt",
                "skipped",
                None,
                pe["skipped"],
            )
        for m, e in pe.get("by_M", {}).items():
            for name in ("ours", "ours_scan"):
                o = e.get(name, {})
                if "speedup_pyepo_over_this" not in o:
                    continue
                r = o["speedup_pyepo_over_this"]
                proto = name != "ours"
                add(
                    "6 PyEPO",
                    f"s/epoch PyEPO / {name}, M={m} ({pe['setup']['epochs']} epochs)"
                    + (f" [variant: {VARIANTS[name]}]" if proto else ""),
                    "(info)"
                    if proto
                    else f"≥ {TARGETS['pyepo_speed']:g}× at Δregret within ±{TARGETS['pyepo_regret']} pt",
                    f"{r['median']:.1f}×, Δ {o['regret_diff_points']:+.2f} pt",
                    None if proto else o["met"],
                    f"PyEPO {C.fmt_time(e['pyepo']['epoch_s']['median'])}/epoch, regret {100 * e['pyepo']['regret']:.2f}%; "
                    f"{name} {C.fmt_time(o['epoch_s']['median'])}/epoch, regret {100 * o['regret']:.2f}%; "
                    f"paired [{r['min']:.1f}, {r['max']:.1f}]",
                )
    sc = res.get("scaling")
    if sc and "loglog_slope_upper_range" in sc:
        for axis, var in (("vs_M", "M"), ("vs_B", "B")):
            sl = sc["loglog_slope_upper_range"].get(axis, {})
            add(
                "7 scaling",
                f"log-log slope of time vs {var} (upper half of the range)",
                "(plot)",
                ", ".join(f"{k} {v:.2f}" for k, v in sl.items()),
                None,
                "see scaling PNG",
            )
    for name in SECTIONS:
        s = res.get(name)
        if isinstance(s, dict) and s.get("error") and name != "pyepo":
            add(name, "section failed", "-", "error", False, s["error"][:300])
    return rows


def render_targets(rows: list[dict[str, Any]]) -> str:
    def met(x):
        return "n/a" if x is None else ("yes" if x else "**NO**")

    return C.markdown_table(
        ["benchmark", "metric", "target", "measured", "met", "detail"],
        [
            [
                r["benchmark"],
                r["metric"],
                r["target"],
                _fmt(r["measured"]),
                met(r["met"]),
                r["detail"],
            ]
            for r in rows
        ],
    )


def accuracy_rows(by_m: dict[str, Any], group: str) -> list[list[str]]:
    """One row per contender of `group` ("contenders" or "variants"): its error at
    each M ("-" where it did not run) and its description."""
    entries: dict[str, dict[str, Any]] = {}
    for e in by_m.values():
        for name, c in e.get(group, {}).items():
            entries.setdefault(name, c)
    rows = []
    for name, first in entries.items():
        cells = []
        for e in by_m.values():
            c = e.get(group, {}).get(name)
            cells.append(
                f"{c['mean']:.4f} [{c['min']:.3f}, {c['max']:.3f}]" if c else "-"
            )
        label = name if group == "contenders" else f"{name} (variant)"
        rows.append([label, *cells, first["description"]])
    return rows


def render_accuracy(by_m: dict[str, Any]) -> list[str]:
    """Section 1: the peers, then the variants, and the consistency checks."""
    variants = accuracy_rows(by_m, "variants")
    header = ["contender", *(f"M={m}" for m in by_m), "what"]
    parts = [C.markdown_table(header, accuracy_rows(by_m, "contenders") + variants)]
    if variants:
        parts += ["", "Variants are information only: no target's ratio uses them."]
    checks = [
        f"M={m}: " + ", ".join(f"{k} {x:.3g}" for k, x in e["checks"].items())
        for m, e in by_m.items()
        if e.get("checks")
    ]
    if checks:
        parts += [
            "",
            "Consistency checks, max |difference| over keys and entries between "
            "contenders that draw the same samples (max_abs_g_exact: the scale of "
            "g): " + "; ".join(checks) + ".",
        ]
    return parts


def render(res: dict[str, Any], pngs: dict[str, str]) -> str:
    env = res["env"]
    d = env["device"]
    v = res["versions"]
    parts = [
        f"# Benchmarks against the peers: {res['date']}, {res['device_tag']}"
        + (" (quick)" if res["quick"] else ""),
        "",
        f"Device: {d['platform']} ({d['device_kind']}, {d['num_devices']} device(s)), CPU {d['cpu_model']} × "
        f"{d['cpu_count']} cores, {C.fmt_bytes(d['mem_total_bytes'] or 0)} RAM; load average "
        f"{res['load_avg_start']} at start, {res.get('load_avg_end')} at end; "
        f"{res.get('elapsed_s', 0):.0f} s in all.",
        "",
        "Versions: " + ", ".join(f"{k} {x}" for k, x in v.items() if x) + ".",
        "",
        "Estimator thresholds in force (pl.Thresholds for this platform): "
        + ", ".join(f"{k}={x:g}" for k, x in env.get("thresholds", {}).items())
        + ".",
        "",
        "Medians over interleaved repetitions, [min, max]; ratios are medians of paired "
        "(per-repetition) ratios. `python bench/run.py"
        + (" --quick" if res["quick"] else "")
        + (" --only " + " ".join(res["sections"]) if res["partial"] else "")
        + "`.",
        "",
        "## Targets (issues 6 and 18)",
        "",
        render_targets(res["targets"]),
    ]
    for key, png in pngs.items():
        parts += ["", f"![{key}]({png})"]
    acc = res.get("accuracy")
    if acc and "by_M" in acc:
        parts += ["", "## 1. Gradient relative error, mean [min, max] over 20 keys", ""]
        parts += render_accuracy(acc["by_M"])
    tim = res.get("timing")
    if tim and "grid" in tim:
        parts += [
            "",
            "## 2. Forward+gradient time, median [min, max]; ratios are paired medians",
            "",
        ]
        cols = ["ours", "optax_whole", "optax_vmapped", "jaxopt_vmapped", "floor"]
        rows = []
        for g in tim["grid"]:
            cs = g["contenders"]
            row = [g["B"], g["n"], g["M"]]
            for c in cols:
                x = cs.get(c, {})
                row.append(
                    C.fmt_summary(x["time_s"])
                    if "time_s" in x
                    else x.get("skipped", "-")
                )
            for ref in ("optax_vmapped", "jaxopt_vmapped", "floor"):
                r = g["ratios"].get(f"ours/{ref}")
                row.append(f"{r['wall']['median']:.2f}" if r else "-")
            row.append(g["repeats"])
            rows.append(row)
        parts.append(
            C.markdown_table(
                [
                    "B",
                    "n",
                    "M",
                    *cols,
                    "ours/optax_vmapped",
                    "ours/jaxopt_vmapped",
                    "ours/floor",
                    "reps",
                ],
                rows,
            )
        )
    fy = res.get("fy")
    if fy and "time_s" in fy:
        parts += ["", "## 4. Fenchel–Young step vs layer, B=32 n=10 M=1000", ""]
        parts.append(
            C.markdown_table(
                ["what", "wall time", "CPU time"],
                [
                    [k, C.fmt_summary(x), C.fmt_summary(x["cpu_s"])]
                    for k, x in fy["time_s"].items()
                ],
            )
        )
    sp = res.get("shortest_path")
    if sp and sp.get("results"):
        parts += [
            "",
            "## 5. Shortest paths, 32 × 10 instances per call, seconds per call (×ours)",
            "",
        ]
        names = list(sp["results"][0]["seconds_per_call"])
        rows = []
        for r in sp["results"]:
            row = [f"{r['side']}×{r['side']}"]
            for nme in names:
                s = r["seconds_per_call"][nme]
                row.append(
                    C.fmt_summary(s)
                    + (
                        ""
                        if nme == "ours"
                        else f" ({r['ratio_to_ours'][nme]['median']:.1f}×)"
                    )
                )
            row.append(f"{r['solves_per_s']['ours']:,.0f}")
            rows.append(row)
        parts.append(C.markdown_table(["grid", *names, "ours solves/s"], rows))
    pe = res.get("pyepo")
    if pe and pe.get("by_M"):
        import pyepo_compare

        parts += [
            "",
            f"## 6. PyEPO 5×5 shortest path, FY loss, {pe['setup']['epochs']} epochs, batch 32, Adam 1e-2",
            "",
            pyepo_compare.render(pe),
            "",
            f"Data: {pe['setup']['data'].get('source')}; {pe['setup']['data'].get('experiments_data', '')}.",
        ]
    sc = res.get("scaling")
    if sc and "vs_M" in sc:
        parts += ["", "## 7. Scaling (n=10), forward+gradient time, median", ""]
        names = sc["setup"]["contenders"]
        for axis, var in (("vs_M", "M"), ("vs_B", "B")):
            rows = []
            for r in sc[axis]:
                rows.append(
                    [r["B"], r["M"]]
                    + [
                        C.fmt_time(r["contenders"][nme]["time_s"]["median"])
                        if "time_s" in r["contenders"].get(nme, {})
                        else "-"
                        for nme in names
                    ]
                )
            parts += [
                f"Time vs {var}:",
                "",
                C.markdown_table(["B", "M", *names], rows),
                "",
            ]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------ metadata


VERSIONED = (
    "perturbed_layers",
    "jax",
    "jaxlib",
    "equinox",
    "optax",
    "jaxopt",
    "numpy",
    "scipy",
    "matplotlib",
    "torch",
    "pyepo",
    "gurobipy",
    "scikit-learn",
    "pathos",
    "jaxtyping",
    "ml_dtypes",
)


def versions() -> dict[str, str | None]:
    import platform

    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import gurobipy

        out["gurobi_solver"] = ".".join(map(str, gurobipy.gurobi.version()))
    except Exception:
        pass
    return out


def git_state() -> dict[str, Any]:
    def git(*a):
        p = subprocess.run(["git", *a], capture_output=True, text=True, cwd=C.REPO_ROOT)
        return p.stdout.strip() if p.returncode == 0 else None

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "modified_files": None if status is None else len(status.splitlines()),
    }


def device_tag() -> str:
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "cpu"
    kind = "".join(ch if ch.isalnum() else "-" for ch in str(dev.device_kind).lower())
    return f"{dev.platform}-{kind.strip('-')}"


# ------------------------------------------------------------ main


def update_readme(md: str, md_name: str) -> bool:
    readme = C.REPO_ROOT / "bench" / "README.md"
    start, end = "<!-- latest-results:start -->", "<!-- latest-results:end -->"
    if not readme.exists():
        return False
    text = readme.read_text()
    if start not in text or end not in text:
        return False
    body = md.replace("](", "](results/").replace("](results/http", "](http")
    body = body.replace("# Benchmarks against the peers", "### Latest run", 1)
    body = body.replace("\n## ", "\n#### ")
    body += f"\nFull report: [results/{md_name}](results/{md_name}).\n"
    new = text.split(start)[0] + start + "\n" + body + end + text.split(end, 1)[1]
    readme.write_text(new)
    return True


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="a subset, < 5 minutes on 2 cores"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=None,
        metavar="NAME",
        help=f"sections to run, of {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=C.RESULTS_DIR,
        help="output directory (default bench/results)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timing repetitions")
    p.add_argument(
        "--pyepo-epochs", type=int, default=None, help="default 3 (quick) / 20"
    )
    p.add_argument(
        "--readme", action="store_true", help="put the table into bench/README.md"
    )
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help=f"JAX persistent compilation cache (default {DEFAULT_CACHE})",
    )
    p.add_argument(
        "--no-compile-cache", action="store_true", help="compile everything afresh"
    )
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.mem_child is not None:
        core.mem_child(json.loads(args.mem_child), forward_any)
        return

    sections = args.only or list(SECTIONS)
    repeats = args.repeats or (3 if args.quick else 5)
    tag = device_tag()
    stem = (
        f"{C.today()}-{tag}"
        + ("-quick" if args.quick else "")
        + ("-partial" if args.only else "")
    )
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "benchmark": "bench/run.py (issue 6)",
        "date": C.today(),
        "started": C.now_iso(),
        "device_tag": tag,
        "quick": args.quick,
        "partial": bool(args.only),
        "sections": sections,
        "argv": sys.argv[1:],
        "env": C.env_info(),
        "versions": versions(),
        "git": git_state(),
        "compile_cache": _CACHE_DIR,
        "load_avg_start": C.load_avg(),
        "jaxopt": jaxopt_status(),
        "targets_spec": {
            "1": "gradient rel. error: ours <= 0.1 x optax whole batch, <= 0.6 x optax vmapped (B=32, n=10, sigma=0.5, M in {100, 1000})",
            "2": "fwd+grad time <= 1.0 x optax vmapped everywhere; <= 1.3 x noise-draw floor where B*n*M >= 1e7",
            "3": "peak memory of jit(grad) at M=100000, B=32, n=1000, chunked: < 2 GiB",
            "4": "FY loss step <= 0.6 x layer fwd+grad",
            "5": "shortest paths 12x12, 32 x M=10 per call: >= 10x scipy Dijkstra per instance; growth 12..30",
            "6": "PyEPO 5x5 PFY, M in {1,3,10}: >= 20x faster per epoch at the same regret (+-0.5 points)",
            "7": "scaling of time vs M and vs B, log-log, ours and optax",
        },
    }
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    pngs: dict[str, str] = {}

    def save() -> None:
        res["targets"] = targets_table(res)
        res["load_avg_end"] = C.load_avg()
        res["elapsed_s"] = time.perf_counter() - T0
        C.write_json(json_path, res)

    log(
        f"device {tag} ({res['env']['device']}), sections {sections}, compile cache {_CACHE_DIR}"
    )
    if not res["jaxopt"]["ok"]:
        log(f"jaxopt: {res['jaxopt']['reason']}")

    def run_section(name: str, fn) -> None:
        if name not in sections:
            return
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as e:  # one failing section must not lose the others
            traceback.print_exc()
            res[name] = {"error": f"{type(e).__name__}: {e}"}
        res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
        save()

    run_section("accuracy", lambda: bench_accuracy(args.quick))
    run_section("timing", lambda: bench_timing(args.quick, repeats))
    run_section("fy", lambda: core.bench_fy(repeats))
    run_section("scaling", lambda: bench_scaling(args.quick, repeats))
    run_section("memory", lambda: bench_memory(args.quick))
    run_section("shortest_path", lambda: bench_shortest_path(args.quick, repeats))

    def pyepo_section():
        import pyepo_compare

        return pyepo_compare.run(
            quick=args.quick,
            epochs=args.pyepo_epochs,
            variants=not args.quick,
            log_fn=log,
        )

    run_section("pyepo", pyepo_section)

    title = f"{res['date']}, {tag}{' (quick)' if args.quick else ''}"
    if isinstance(res.get("scaling"), dict) and "vs_M" in res["scaling"]:
        path = out_dir / f"{stem}-scaling.png"
        plot_scaling(res, path, f"perturbed argmax, forward + gradient, {title}")
        pngs["scaling"] = path.name
    if isinstance(res.get("shortest_path"), dict) and res["shortest_path"].get(
        "results"
    ):
        path = out_dir / f"{stem}-shortest-path.png"
        plot_shortest_path(res, path, f"grid shortest paths, {title}")
        pngs["shortest_path"] = path.name
    res["plots"] = pngs
    save()
    md = render(res, pngs)
    md_path.write_text(md)
    if args.readme and update_readme(md, md_path.name):
        log("updated bench/README.md")
    log(f"done in {res['elapsed_s']:.0f} s; wrote {json_path}, {md_path}")
    print()
    print(render_targets(res["targets"]))


if __name__ == "__main__":
    main()
