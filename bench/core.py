#!/usr/bin/env python
"""Core benchmark of perturbed_layers against optax.perturbations on this machine.

Four measurements, each against a target:

1. Gradient accuracy: relative error ‖ĝ − g‖/‖g‖ of the VJP of the perturbed argmax
   against the exact softmax Jacobian J = (diag s − s sᵀ)/σ, s = softmax(θ/σ), Gumbel
   noise, B=32, n=10, σ=0.5, M ∈ {100, 1000}, pinned θ ~ N(0, 1) and cotangent v,
   mean over 20 pinned keys. Contenders: ours (`pl.PerturbedArgmax`, per-instance
   estimator), optax `make_perturbed_fun` on the whole (B, n) batch (one instance),
   optax vmapped per row with split keys; plus our estimator options varied.
2. Forward+gradient wall time (value_and_grad of ⟨y_ε(θ), v⟩, jit, warm, blocked),
   ours vs optax whole vs optax vmapped, over B, n, M; the noise-draw floor (B·n·M
   Gumbel values alone) where B·n·M ≥ 1e7.
3. Peak memory of jit(grad) at M=100,000, B=32, n=1000, ours with chunk_size=500,
   in a subprocess per contender (peak RSS minus the RSS after imports and inputs),
   and XLA's compiled memory analysis (also for optax, compiled but never run).
4. Fenchel–Young loss step (value_and_grad of the loss) vs the layer's
   forward+gradient at B=32, n=10, M=1000.

Contenders are timed interleaved (each repetition times each once, rotating the order)
and reported as median [min, max]. Results go to
bench/results/core-<date>-cpu.json (core-<date>-cpu-quick.json with --quick) and a
Markdown table is printed.

Usage: python bench/core.py [--quick] [--repeats N] [--sections acc,time,mem,fy]
"""

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

C.setup_path()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import perturbed_layers as pl  # noqa: E402
from perturbed_layers.solvers import argmax_one_hot  # noqa: E402

SIGMA = 0.5
THETA_SEED, V_SEED, KEYS_SEED, LABEL_SEED, RUN_KEY_SEED = 0, 1, 2024, 3, 7
NUM_ACC_KEYS = 20
MEM_B, MEM_N, MEM_M, MEM_CHUNK = 32, 1000, 100_000, 500
MEM_QUICK_M = 10_000
FLOOR_MIN_ELEMS = 10**7

# Compiled functions shared between sections: key -> (compiled, compile seconds).
_COMPILED: dict[tuple, tuple[Any, float]] = {}

TARGETS = {
    "acc_ratio_whole": 0.1,
    "acc_ratio_vmapped": 0.6,
    "time_ratio_vmapped": 1.0,
    "mem_bytes": 2 * C.GIB,
    "fy_ratio": 0.6,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------ contenders


def one_hot_argmax(x):
    """One-hot argmax along the last axis, of an array of any rank (optax's `fun`)."""
    return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)


def inputs(b: int, n: int):
    theta = jax.random.normal(jax.random.key(THETA_SEED), (b, n), jnp.float32)
    v = jax.random.normal(jax.random.key(V_SEED), (b, n), jnp.float32)
    return theta, v


class _GumbelNoMoment(pl.Gumbel):
    """Gumbel noise whose score moment is 'unknown': no score control variate."""

    def score_moment(self, n: int, *, centred: bool) -> float | None:
        return None


def forward(name: str, m: int, chunk: int | None = None):
    """A forward function (theta (B, n), key) -> y (B, n) for contender `name`."""
    gumbel = pl.Gumbel()
    if name == "ours":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, chunk_size=chunk
        )
        return lambda t, k: layer(t, key=k)
    if name in ("optax_whole", "optax_vmapped"):
        f = optax.perturbations.make_perturbed_fun(
            one_hot_argmax, m, SIGMA, optax.perturbations.Gumbel()
        )
        if name == "optax_whole":
            return lambda t, k: f(k, t)
        return lambda t, k: jax.vmap(f)(jax.random.split(k, t.shape[0]), t)
    if name == "pl_make_perturbed_fun_whole":
        f = pl.make_perturbed_fun(
            one_hot_argmax,
            m,
            SIGMA,
            optax.perturbations.Gumbel(),
            chunk_size=chunk,
        )
        return lambda t, k: f(k, t)

    def generic(**kw):
        layer = pl.Perturbed(
            argmax_one_hot, num_samples=m, sigma=SIGMA, noise=gumbel, **kw
        )
        return lambda t, k: layer(t, key=k)

    if name == "ours_loo":
        return generic(objective=None, shift_invariant=False)
    if name == "ours_loo_rb":
        return generic(objective=None, shift_invariant=True)
    if name == "ours_loo_sym":
        return generic(objective="max", shift_invariant=False)
    if name == "ours_no_cv":
        layer = pl.PerturbedArgmax(num_samples=m, sigma=SIGMA, noise=_GumbelNoMoment())
        return lambda t, k: layer(t, key=k)
    if name == "ours_optax_noise":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=optax.perturbations.Gumbel()
        )
        return lambda t, k: layer(t, key=k)
    if name == "ours_chunked":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, chunk_size=chunk or m // 4
        )
        return lambda t, k: layer(t, key=k)
    raise ValueError(name)


DESCRIPTIONS = {
    "ours": "pl.PerturbedArgmax (leave-one-out + Rao-Blackwellised score + "
    "symmetrised + score control variate), per instance",
    "optax_whole": "optax make_perturbed_fun on the whole (B, n) batch (one instance)",
    "optax_vmapped": "optax make_perturbed_fun vmapped over rows, split keys",
    "ours_loo": "pl.Perturbed(argmax, objective=None, shift_invariant=False): "
    "leave-one-out baseline only",
    "ours_loo_rb": "pl.Perturbed(objective=None, shift_invariant=True): "
    "leave-one-out + Rao-Blackwellised score",
    "ours_loo_sym": "pl.Perturbed(objective='max', shift_invariant=False): "
    "leave-one-out + symmetrised + score control variate",
    "ours_no_cv": "pl.PerturbedArgmax with a Gumbel noise of unknown score moment: "
    "everything but the score control variate",
    "ours_optax_noise": "pl.PerturbedArgmax(noise=optax.perturbations.Gumbel()): "
    "foreign noise, projected score instead of Rao-Blackwell",
    "ours_chunked": "pl.PerturbedArgmax(chunk_size=M/4): same samples as 'ours'",
    "pl_make_perturbed_fun_whole": "pl.make_perturbed_fun, whole batch, optax noise: "
    "same samples as optax_whole",
}


def exact_vjp(theta, v) -> np.ndarray:
    """Jᵀv with J = (diag s − s sᵀ)/σ per row (symmetric), in float64."""
    t = np.asarray(theta, np.float64) / SIGMA
    s = np.exp(t - t.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    vv = np.asarray(v, np.float64)
    return (s * vv - s * np.sum(s * vv, -1, keepdims=True)) / SIGMA


def rel_err(est, exact: np.ndarray) -> float:
    e = np.asarray(est, np.float64)
    return float(np.linalg.norm(e - exact) / np.linalg.norm(exact))


def bootstrap_ratio_ci(a, b, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% paired bootstrap interval of mean(a)/mean(b) over the keys."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(draws, len(a)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


# ------------------------------------------------------------ 1. accuracy


def vjp_fn(fwd):
    """(theta, v, key) -> vᵀ ∂y_ε/∂θ, the gradient estimate under test."""

    def vjp(t, vv, k):
        return jax.vjp(lambda u: fwd(u, k), t)[1](vv)[0]

    return vjp


def bench_accuracy(quick: bool) -> dict[str, Any]:
    b, n = 32, 10
    theta, v = inputs(b, n)
    g_exact = exact_vjp(theta, v)
    keys = jax.random.split(jax.random.key(KEYS_SEED), NUM_ACC_KEYS)
    variants = [
        "ours_loo",
        "ours_loo_rb",
        "ours_loo_sym",
        "ours_no_cv",
        "ours_optax_noise",
        "ours_chunked",
        "pl_make_perturbed_fun_whole",
    ]
    out: dict[str, Any] = {
        "setup": {
            "B": b,
            "n": n,
            "sigma": SIGMA,
            "noise": "Gumbel",
            "theta": f"N(0,1), jax.random.key({THETA_SEED})",
            "v": f"N(0,1), jax.random.key({V_SEED})",
            "keys": f"split(jax.random.key({KEYS_SEED}), {NUM_ACC_KEYS})",
            "metric": "mean over keys of ||g_hat - g||_F / ||g||_F over the batch",
        },
        "by_M": {},
    }
    for m in (100, 1000):
        names = ["ours", "optax_whole", "optax_vmapped"]
        if not quick:
            names += variants
        elif m == 1000:
            names.append("ours_chunked")
        res: dict[str, Any] = {}
        grads: dict[str, list[np.ndarray]] = {}
        for name in names:
            fwd = forward(name, m)

            compiled, compile_s, _ = C.compile_aot(vjp_fn(fwd), theta, v, keys[0])
            gs = [np.asarray(compiled(theta, v, k)) for k in keys]
            grads[name] = gs
            errs = [rel_err(gk, g_exact) for gk in gs]
            s = C.summarize(errs)
            res[name] = {
                "description": DESCRIPTIONS[name],
                "mean": s["mean"],
                "median": s["median"],
                "min": s["min"],
                "max": s["max"],
                "per_key": errs,
                "compile_s": compile_s,
            }
            log(f"  accuracy M={m} {name}: mean rel err {s['mean']:.4f}")
        ours = res["ours"]["per_key"]
        entry: dict[str, Any] = {"contenders": res}
        for ref in ("optax_whole", "optax_vmapped"):
            other = res[ref]["per_key"]
            entry[f"ratio_ours_over_{ref}"] = {
                "ratio_of_means": float(np.mean(ours) / np.mean(other)),
                "bootstrap95": bootstrap_ratio_ci(ours, other),
            }
        entry["ratio_over_optax_vmapped"] = {
            k: r["mean"] / res["optax_vmapped"]["mean"] for k, r in res.items()
        }
        checks: dict[str, Any] = {}
        if "ours_chunked" in grads:
            checks["chunked_vs_unchunked_max_abs_diff"] = float(
                max(
                    np.max(np.abs(x - y))
                    for x, y in zip(grads["ours_chunked"], grads["ours"], strict=True)
                )
            )
        if "pl_make_perturbed_fun_whole" in grads:
            checks["pl_make_perturbed_fun_vs_optax_max_abs_diff"] = float(
                max(
                    np.max(np.abs(x - y))
                    for x, y in zip(
                        grads["pl_make_perturbed_fun_whole"],
                        grads["optax_whole"],
                        strict=True,
                    )
                )
            )
        checks["max_abs_g_exact"] = float(np.max(np.abs(g_exact)))
        entry["checks"] = checks
        out["by_M"][str(m)] = entry
    return out


# ------------------------------------------------------------ 2. timing


def vg_fn(fwd):
    return jax.value_and_grad(lambda t, vv, k: jnp.sum(fwd(t, k) * vv))


def floor_fns(b: int, n: int, m: int):
    def one_key(k):
        return jax.random.gumbel(k, (m, b, n), jnp.float32)

    def per_sample(k):
        return jax.vmap(lambda kk: jax.random.gumbel(kk, (b, n), jnp.float32))(
            jax.random.split(k, m)
        )

    return {"floor_gumbel": one_key, "floor_gumbel_per_sample_keys": per_sample}


def time_config(
    b: int,
    n: int,
    m: int,
    *,
    repeats: int,
    budget_s: float,
    mem_limit: float,
    with_floor: bool,
    min_sample_s: float = 0.1,
) -> dict[str, Any]:
    theta, v = inputs(b, n)
    key = jax.random.key(RUN_KEY_SEED)
    contenders: dict[str, C.Compiled] = {}
    for name in ("ours", "optax_whole", "optax_vmapped"):
        compiled, cs, ma = C.compile_aot(vg_fn(forward(name, m)), theta, v, key)
        _COMPILED[("vg", name, b, n, m)] = (compiled, cs)
        contenders[name] = C.Compiled(compiled, (theta, v, key), cs, ma)
    if with_floor:
        for name, f in floor_fns(b, n, m).items():
            compiled, cs, ma = C.compile_aot(f, key)
            contenders[name] = C.Compiled(compiled, (key,), cs, ma)
    t = C.time_contenders(
        contenders,
        repeats=repeats,
        budget_s=budget_s,
        min_sample_s=min_sample_s,
        mem_limit=mem_limit,
        log=None if b * n * m < 1e7 else log,
    )
    out: dict[str, Any] = {
        "B": b,
        "n": n,
        "M": m,
        "elements": b * n * m,
        "repeats": t["repeats"],
        "contenders": t["contenders"],
    }
    for ref in ("optax_whole", "optax_vmapped"):
        r = t["ratios"].get(f"ours/{ref}")
        if r:
            out[f"ratio_ours_over_{ref}"] = r["wall"]
            out[f"cpu_ratio_ours_over_{ref}"] = r["cpu"]
    return out


def bench_timing(quick: bool, repeats: int, budget_s: float, mem_limit: float):
    if quick:
        grid = [(32, 10, 1000), (32, 1000, 1000)]
    else:
        grid = [(32, 10, 1000)] + [
            (b, n, m)
            for b in (1, 32, 256)
            for n in (10, 100, 1000)
            for m in (100, 1000)
            if (b, n, m) != (32, 10, 1000)
        ]
    results = []
    for i, (b, n, m) in enumerate(grid):
        t0 = time.perf_counter()
        # The headline configuration (first) gets more and longer samples.
        r = time_config(
            b,
            n,
            m,
            repeats=repeats + 4 if i == 0 else repeats,
            budget_s=2 * budget_s if i == 0 else budget_s,
            mem_limit=mem_limit,
            with_floor=b * n * m >= FLOOR_MIN_ELEMS,
            min_sample_s=0.25 if i == 0 else 0.1,
        )
        results.append(r)
        per = {
            k: c["time_s"]["median"]
            for k, c in r["contenders"].items()
            if "time_s" in c
        }
        ratio = r.get("ratio_ours_over_optax_vmapped", {}).get("median")
        log(
            f"  timing B={b} n={n} M={m}: "
            + ", ".join(f"{k}={C.fmt_time(t)}" for k, t in per.items())
            + (f"; ours/optax_vmapped={ratio:.3f}" if ratio else "")
            + f" ({time.perf_counter() - t0:.0f} s)"
        )
    return {
        "setup": {
            "sigma": SIGMA,
            "noise": "Gumbel",
            "what": "jit(value_and_grad(theta -> <y_eps(theta), v>)), warm, blocked",
            "floor": "jit(jax.random.gumbel(key, (M, B, n))); per_sample_keys: "
            "vmap over split(key, M), as the package draws",
        },
        "grid": results,
    }


# ------------------------------------------------------------ 3. memory


def mem_child(spec: dict[str, Any], forward_fn=None) -> None:
    """Run in a fresh process: compile (and maybe run) jit(grad) and report memory.

    `forward_fn(name, M, chunk)` builds the contender (default: `forward`; bench/run.py
    passes one that knows jaxopt too). Reported through `C.report_child`.
    """
    b, n, m = spec["B"], spec["n"], spec["M"]
    theta, v = inputs(b, n)
    key = jax.random.key(RUN_KEY_SEED)
    C.block((theta, v))
    dev = jax.devices()[0]
    rss0, hwm0, maxrss0 = C.rss_bytes(), C.hwm_bytes(), C.peak_rss_bytes()
    name, chunk = spec["contender"], spec.get("chunk")
    base = "ours" if name in ("ours_chunked", "ours") else name
    fwd = (forward_fn or forward)(base, m, chunk)
    grad = jax.grad(lambda t, vv, k: jnp.sum(fwd(t, k) * vv))
    compiled, compile_s, ma = C.compile_aot(grad, theta, v, key)
    res: dict[str, Any] = {
        **spec,
        "platform": dev.platform,
        "baseline_rss_bytes": rss0,
        "baseline_vmhwm_bytes": hwm0,
        "baseline_ru_maxrss_bytes": maxrss0,
        "compile_s": compile_s,
        "memory_analysis": ma,
        "vmhwm_after_compile_bytes": C.hwm_bytes(),
        "peak_rss_delta_after_compile_bytes": C.hwm_bytes() - rss0,
    }
    if spec.get("run"):
        t0 = time.perf_counter()
        g = C.block(compiled(theta, v, key))
        res["run_s"] = time.perf_counter() - t0
        hwm = C.hwm_bytes()
        res["peak_rss_bytes"] = hwm
        res["peak_rss_delta_bytes"] = hwm - rss0
        res["ru_maxrss_bytes"] = C.peak_rss_bytes()
        res["ru_maxrss_delta_bytes"] = res["ru_maxrss_bytes"] - rss0
        stats = dev.memory_stats() if hasattr(dev, "memory_stats") else None
        if stats and "peak_bytes_in_use" in stats:
            res["device_peak_bytes"] = int(stats["peak_bytes_in_use"])
        res["grad_finite"] = bool(np.all(np.isfinite(np.asarray(g))))
        res["grad_rel_err_vs_exact"] = rel_err(g, exact_vjp(theta, v))
    C.report_child(res)


def bench_memory(quick: bool, timeout: float) -> dict[str, Any]:
    common = {"B": MEM_B, "n": MEM_N}
    specs = []
    run_m = MEM_QUICK_M if quick else MEM_M
    specs.append(
        {
            **common,
            "contender": "ours_chunked",
            "M": run_m,
            "chunk": MEM_CHUNK,
            "run": True,
        }
    )
    if quick:
        specs.append(
            {**common, "contender": "ours_chunked", "M": MEM_M, "chunk": MEM_CHUNK}
        )
    specs.append({**common, "contender": "optax_whole", "M": MEM_M})
    if not quick:
        specs += [
            {**common, "contender": "ours", "M": MEM_M},
            {**common, "contender": "optax_vmapped", "M": MEM_M},
            {
                **common,
                "contender": "pl_make_perturbed_fun_whole",
                "M": MEM_M,
                "chunk": MEM_CHUNK,
            },
        ]
    results = []
    for spec in specs:
        spec = {"chunk": None, "run": False, **spec}
        r = C.run_child(Path(__file__).resolve(), spec, timeout)
        results.append(r)
        ma = r.get("memory_analysis", {})
        msg = f"  memory {spec['contender']} M={spec['M']} chunk={spec['chunk']}: "
        if "error" in r:
            msg += f"ERROR {r['error']}"
        else:
            msg += f"XLA total {C.fmt_bytes(ma.get('total_bytes', 0))}"
            if "peak_rss_delta_bytes" in r:
                msg += (
                    f", peak RSS delta {C.fmt_bytes(r['peak_rss_delta_bytes'])}, "
                    f"run {r['run_s']:.1f} s"
                )
        log(msg)
    return {
        "setup": {
            "B": MEM_B,
            "n": MEM_N,
            "M": MEM_M,
            "chunk_size": MEM_CHUNK,
            "what": "jit(grad(theta -> <y_eps(theta), v>)), one subprocess per "
            "contender; peak RSS (VmHWM, includes compilation) minus VmRSS after "
            "imports and input creation; XLA memory_analysis total = temp + "
            "argument + output. ru_maxrss is recorded too but is not used: on "
            "Linux a fork+exec child inherits the parent's peak as its floor.",
            "run_M": run_m,
            "note": "quick mode runs at M=10,000 (chunked memory does not grow with "
            "M) and compiles at M=100,000"
            if quick
            else "full run at M=100,000",
        },
        "contenders": results,
    }


# ------------------------------------------------------------ 4. Fenchel-Young


def bench_fy(repeats: int) -> dict[str, Any]:
    b, n, m = 32, 10, 1000
    theta, v = inputs(b, n)
    labels = jax.random.randint(jax.random.key(LABEL_SEED), (b,), 0, n)
    y = jax.nn.one_hot(labels, n, dtype=jnp.float32)
    key = jax.random.key(RUN_KEY_SEED)
    layer = pl.PerturbedArgmax(num_samples=m, sigma=SIGMA, noise=pl.Gumbel())
    loss = pl.FenchelYoungLoss(layer)
    cached = _COMPILED.get(("vg", "ours", b, n, m))
    if cached is not None:  # the same function, compiled by the timing section
        layer_c, layer_cs = cached
    else:
        layer_c, layer_cs, _ = C.compile_aot(
            vg_fn(lambda t, k: layer(t, key=k)), theta, v, key
        )
    fy_c, fy_cs, _ = C.compile_aot(
        jax.value_and_grad(lambda t, yy, k: loss(t, yy, key=k).sum()), theta, y, key
    )
    floor_c, floor_cs, _ = C.compile_aot(floor_fns(b, n, m)["floor_gumbel"], key)
    fns = {
        "layer_value_and_grad": lambda: layer_c(theta, v, key),
        "fy_value_and_grad": lambda: fy_c(theta, y, key),
        "floor_gumbel": lambda: floor_c(key),
    }
    timing = C.time_interleaved(fns, repeats=repeats + 4, min_sample_s=0.25)
    per = timing["per_contender"]
    _, g = fy_c(theta, y, key)
    t = np.asarray(theta, np.float64) / SIGMA
    s = np.exp(t - t.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return {
        "setup": {"B": b, "n": n, "M": m, "sigma": SIGMA, "noise": "Gumbel"},
        "repeats": timing["repeats"],
        "compile_s": {"layer": layer_cs, "fy": fy_cs, "floor": floor_cs},
        "time_s": per,
        "ratio_fy_over_layer": C.paired_ratio(
            per["fy_value_and_grad"]["samples"], per["layer_value_and_grad"]["samples"]
        ),
        "cpu_ratio_fy_over_layer": C.paired_ratio(
            per["fy_value_and_grad"]["cpu_s"]["samples"],
            per["layer_value_and_grad"]["cpu_s"]["samples"],
        ),
        "ratio_floor_over_layer": C.paired_ratio(
            per["floor_gumbel"]["samples"], per["layer_value_and_grad"]["samples"]
        ),
        "fy_grad_rel_err_vs_softmax_minus_y": rel_err(g, s - np.asarray(y)),
    }


# ------------------------------------------------------------ report


def targets_table(res: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(tid, desc, target, measured, met, detail=""):
        rows.append(
            {
                "id": tid,
                "description": desc,
                "target": target,
                "measured": measured,
                "met": met,
                "detail": detail,
            }
        )

    acc = res.get("accuracy")
    if acc:
        for m, e in acc["by_M"].items():
            for ref, key in (("optax_whole", "whole"), ("optax_vmapped", "vmapped")):
                r = e[f"ratio_ours_over_{ref}"]
                tgt = TARGETS[f"acc_ratio_{key}"]
                lo, hi = r["bootstrap95"]
                c = e["contenders"]
                add(
                    f"acc_ratio_{key}_M{m}",
                    f"grad rel. error ours/{ref}, M={m}",
                    f"<= {tgt}",
                    r["ratio_of_means"],
                    r["ratio_of_means"] <= tgt,
                    f"{c['ours']['mean']:.4f} / {c[ref]['mean']:.4f}; "
                    f"bootstrap95 [{lo:.3f}, {hi:.3f}]",
                )
    tim = res.get("timing")
    if tim:
        head = tim["grid"][0]
        r = head.get("ratio_ours_over_optax_vmapped")
        if r:
            cs = head["contenders"]
            add(
                "time_ratio_vmapped",
                f"fwd+grad time ours/optax_vmapped, B={head['B']} n={head['n']} "
                f"M={head['M']}",
                f"<= {TARGETS['time_ratio_vmapped']}",
                r["median"],
                r["median"] <= TARGETS["time_ratio_vmapped"],
                f"paired ratio [{r['min']:.3f}, {r['max']:.3f}]; ours "
                f"{C.fmt_summary(cs['ours']['time_s'])}, optax_vmapped "
                f"{C.fmt_summary(cs['optax_vmapped']['time_s'])}; CPU-time ratio "
                f"{head['cpu_ratio_ours_over_optax_vmapped']['median']:.3f}",
            )
    mem = res.get("memory")
    if mem:
        for r in mem["contenders"]:
            if r["contender"] != "ours_chunked" or "error" in r:
                continue
            tgt = TARGETS["mem_bytes"]
            if r.get("run"):
                add(
                    "mem_peak_rss",
                    f"peak RSS delta of jit(grad), ours chunk={r['chunk']}, "
                    f"M={r['M']}, B={r['B']}, n={r['n']}",
                    "< 2 GiB",
                    C.fmt_bytes(r["peak_rss_delta_bytes"]),
                    r["peak_rss_delta_bytes"] < tgt,
                    f"run {r['run_s']:.1f} s, compile {r['compile_s']:.1f} s",
                )
            if r["M"] == MEM_M:
                total = r["memory_analysis"].get("total_bytes", 0)
                add(
                    "mem_xla",
                    f"XLA memory_analysis (temp+arg+out), ours chunk={r['chunk']}, "
                    f"M={r['M']}",
                    "< 2 GiB",
                    C.fmt_bytes(total),
                    total < tgt,
                    "",
                )
    fy = res.get("fenchel_young")
    if fy:
        r = fy["ratio_fy_over_layer"]
        add(
            "fy_ratio",
            "FY loss value_and_grad time / layer fwd+grad, B=32 n=10 M=1000",
            f"<= {TARGETS['fy_ratio']}",
            r["median"],
            r["median"] <= TARGETS["fy_ratio"],
            f"paired ratio [{r['min']:.3f}, {r['max']:.3f}]; CPU-time ratio "
            f"{fy['cpu_ratio_fy_over_layer']['median']:.3f}; noise floor / layer "
            f"{fy['ratio_floor_over_layer']['median']:.3f}",
        )
    return rows


def fmt_num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def render(res: dict[str, Any]) -> str:
    parts = ["## Targets", ""]
    rows = [
        [
            r["description"],
            r["target"],
            fmt_num(r["measured"]),
            "yes" if r["met"] else "NO",
            r["detail"],
        ]
        for r in res["targets"]
    ]
    parts.append(
        C.markdown_table(["metric", "target", "measured", "met", "detail"], rows)
    )
    acc = res.get("accuracy")
    if acc:
        parts += ["", "## Gradient relative error (mean [min, max] over 20 keys)", ""]
        names = list(acc["by_M"]["1000"]["contenders"])
        rows = []
        for name in names:
            row = [name]
            for m in ("100", "1000"):
                c = acc["by_M"][m]["contenders"].get(name)
                if c is None:
                    row += ["-", "-"]
                    continue
                ratio = acc["by_M"][m]["ratio_over_optax_vmapped"][name]
                row += [
                    f"{c['mean']:.4f} [{c['min']:.3f}, {c['max']:.3f}]",
                    f"{ratio:.3f}",
                ]
            rows.append(row)
        parts.append(
            C.markdown_table(
                ["contender", "M=100", "/optax_vmapped", "M=1000", "/optax_vmapped"],
                rows,
            )
        )
    tim = res.get("timing")
    if tim:
        parts += ["", "## Forward+gradient time, median [min, max]", ""]
        rows = []
        for g in tim["grid"]:
            cs = g["contenders"]

            def cell(name, cs=cs):
                c = cs.get(name, {})
                if "time_s" in c:
                    return C.fmt_summary(c["time_s"])
                return c.get("skipped", "-")

            r = g.get("ratio_ours_over_optax_vmapped")
            rw = g.get("ratio_ours_over_optax_whole")
            rc = g.get("cpu_ratio_ours_over_optax_vmapped")
            rows.append(
                [
                    g["B"],
                    g["n"],
                    g["M"],
                    cell("ours"),
                    cell("optax_whole"),
                    cell("optax_vmapped"),
                    f"{rw['median']:.3f}" if rw else "-",
                    f"{r['median']:.3f}" if r else "-",
                    f"{rc['median']:.3f}" if rc else "-",
                    cell("floor_gumbel"),
                    cell("floor_gumbel_per_sample_keys"),
                    g["repeats"],
                ]
            )
        parts.append(
            C.markdown_table(
                [
                    "B",
                    "n",
                    "M",
                    "ours",
                    "optax whole",
                    "optax vmapped",
                    "ours/whole",
                    "ours/vmapped",
                    "ours/vmapped CPU time",
                    "noise floor",
                    "floor, per-sample keys",
                    "reps",
                ],
                rows,
            )
        )
    mem = res.get("memory")
    if mem:
        parts += ["", "## Memory of jit(grad), B=32, n=1000 (one subprocess each)", ""]
        rows = []
        for r in mem["contenders"]:
            ma = r.get("memory_analysis", {})
            rows.append(
                [
                    r["contender"],
                    r["M"],
                    r.get("chunk") or "-",
                    C.fmt_bytes(ma["temp_size_in_bytes"])
                    if "temp_size_in_bytes" in ma
                    else "-",
                    C.fmt_bytes(ma["total_bytes"]) if "total_bytes" in ma else "-",
                    C.fmt_bytes(r["peak_rss_delta_bytes"])
                    if "peak_rss_delta_bytes" in r
                    else "not run",
                    f"{r['run_s']:.1f} s" if "run_s" in r else "-",
                    f"{r['compile_s']:.1f} s"
                    if "compile_s" in r
                    else r.get("error", "-"),
                ]
            )
        parts.append(
            C.markdown_table(
                [
                    "contender",
                    "M",
                    "chunk",
                    "XLA temp",
                    "XLA total",
                    "peak RSS delta",
                    "run",
                    "compile",
                ],
                rows,
            )
        )
    fy = res.get("fenchel_young")
    if fy:
        parts += ["", "## Fenchel-Young step vs layer, B=32 n=10 M=1000", ""]
        rows = [
            [k, C.fmt_summary(v), C.fmt_summary(v["cpu_s"])]
            for k, v in fy["time_s"].items()
        ]
        parts.append(
            C.markdown_table(
                ["what", "wall time median [min, max]", "CPU time median [min, max]"],
                rows,
            )
        )
    return "\n".join(parts)


# ------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small grid, < 5 minutes")
    p.add_argument("--repeats", type=int, default=None, help="timing repetitions")
    p.add_argument(
        "--sections",
        default="acc,time,mem,fy",
        help="comma-separated subset of acc,time,mem,fy",
    )
    p.add_argument("--budget-per-config", type=float, default=None, help="seconds")
    p.add_argument(
        "--mem-limit-gib",
        type=float,
        default=10.0,
        help="skip timing contenders whose compiled memory exceeds this",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.mem_child is not None:
        mem_child(json.loads(args.mem_child))
        return

    repeats = args.repeats or (5 if args.quick else 7)
    budget = args.budget_per_config or (15.0 if args.quick else 40.0)
    sections = {s.strip() for s in args.sections.split(",") if s.strip()}
    out = args.out or C.RESULTS_DIR / (
        f"core-{C.today()}-cpu{'-quick' if args.quick else ''}.json"
    )
    res: dict[str, Any] = {
        "benchmark": "bench/core.py",
        "started": C.now_iso(),
        "quick": args.quick,
        "argv": sys.argv[1:],
        "repeats": repeats,
        "env": C.env_info(),
        "load_avg_start": C.load_avg(),
        "targets_spec": {
            "acc_ratio_whole": "ours/optax_whole gradient relative error <= 0.1",
            "acc_ratio_vmapped": "ours/optax_vmapped gradient relative error <= 0.6",
            "time_ratio_vmapped": "ours/optax_vmapped fwd+grad time <= 1.0 "
            "(B=32, n=10, M=1000)",
            "mem": "peak memory of jit(grad) at M=100000, B=32, n=1000, chunk 500 "
            "< 2 GiB",
            "fy_ratio": "FY loss step <= 0.6 x layer fwd+grad (B=32, n=10, M=1000)",
        },
    }
    t_all = time.perf_counter()

    def save():
        res["targets"] = targets_table(res)
        res["load_avg_end"] = C.load_avg()
        res["elapsed_s"] = time.perf_counter() - t_all
        C.write_json(out, res)

    log(f"device {res['env']['device']}, load {res['load_avg_start']}")
    if "acc" in sections:
        log("1. gradient accuracy")
        res["accuracy"] = bench_accuracy(args.quick)
        save()
    if "time" in sections:
        log("2. forward+gradient time")
        res["timing"] = bench_timing(
            args.quick, repeats, budget, args.mem_limit_gib * C.GIB
        )
        save()
    if "mem" in sections:
        log("3. memory (subprocesses)")
        res["memory"] = bench_memory(args.quick, timeout=1800.0)
        save()
    if "fy" in sections:
        log("4. Fenchel-Young loss vs layer")
        res["fenchel_young"] = bench_fy(repeats)
        save()
    save()
    log(f"done in {res['elapsed_s']:.0f} s; wrote {out}")
    print()
    print(render(res))


if __name__ == "__main__":
    main()
