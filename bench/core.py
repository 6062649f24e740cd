"""The contenders and shared measurement pieces of the benchmarks run by bench/run.py.

Not a script (`python bench/run.py` is the entry point): it holds

- the contenders on the perturbed argmax (B, n) -> (B, n): ours (`pl.PerturbedArgmax`,
  per-instance estimator), optax `make_perturbed_fun` on the whole (B, n) batch (one
  instance) and vmapped per row with split keys, and ablation variants of our
  estimator (`forward`, `DESCRIPTIONS`);
- the pinned inputs (θ ~ N(0, 1), cotangent v, keys) and the measures: the exact
  softmax VJP Jᵀv, J = (diag s − s sᵀ)/σ, s = softmax(θ/σ) (the Gumbel-perturbed
  argmax), relative errors and a paired bootstrap interval of their ratio;
- the programs timed (`vg_fn`: value_and_grad of ⟨y_ε(θ), v⟩; `floor_fn`: the
  noise draw alone), the memory subprocess (`mem_child`) and the Fenchel–Young step
  against the layer (`bench_fy`).
"""

import time
from typing import Any

import _common as C

C.setup_path()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import perturbed_layers as pl  # noqa: E402

SIGMA = 0.5
THETA_SEED, V_SEED, KEYS_SEED, LABEL_SEED, RUN_KEY_SEED = 0, 1, 2024, 3, 7
NUM_ACC_KEYS = 20
MEM_B, MEM_N, MEM_M, MEM_CHUNK = 32, 1000, 100_000, 500
FLOOR_MIN_ELEMS = 10**7

# Compiled functions shared between sections: key -> (compiled, compile seconds).
_COMPILED: dict[tuple, tuple[Any, float]] = {}


# ------------------------------------------------------------------ contenders


def one_hot_argmax(x):
    """One-hot argmax along the last axis, of an array of any rank (optax's `fun`)."""
    return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)


def inputs(b: int, n: int):
    """The pinned θ ~ N(0, 1) and cotangent v, both (B, n)."""
    theta = jax.random.normal(jax.random.key(THETA_SEED), (b, n), jnp.float32)
    v = jax.random.normal(jax.random.key(V_SEED), (b, n), jnp.float32)
    return theta, v


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

    # Ablations are estimator options (pl.Estimator), on the same layer.
    ablations = {
        "ours_loo": pl.Estimator(rao_blackwell=False, symmetrise=False),
        "ours_loo_rb": pl.Estimator(symmetrise=False),
        "ours_loo_sym": pl.Estimator(rao_blackwell=False),
        "ours_no_cv": pl.Estimator(control_variate=False),
        "ours_plain": pl.Estimator(
            baseline=False, rao_blackwell=False, symmetrise=False, control_variate=False
        ),
    }
    if name in ablations:
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, estimator=ablations[name]
        )
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
    "ours_loo": "pl.Estimator(rao_blackwell=False, symmetrise=False): "
    "leave-one-out baseline only",
    "ours_loo_rb": "pl.Estimator(symmetrise=False): "
    "leave-one-out + Rao-Blackwellised score",
    "ours_loo_sym": "pl.Estimator(rao_blackwell=False): "
    "leave-one-out + symmetrised + score control variate",
    "ours_no_cv": "pl.Estimator(control_variate=False): "
    "everything but the score control variate",
    "ours_plain": "pl.Estimator(all off): the plain score-function estimator "
    "(what optax and jaxopt compute), per instance",
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


# ------------------------------------------------------------ timed programs


def vg_fn(fwd):
    """jit-able value_and_grad of θ ↦ ⟨y_ε(θ), v⟩; its gradient is vᵀ ∂y_ε/∂θ."""
    return jax.value_and_grad(lambda t, vv, k: jnp.sum(fwd(t, k) * vv))


def floor_fn(b: int, n: int, m: int):
    """The noise-draw floor: key -> the B·n·M Gumbel values alone, drawn the fastest
    way we know (one flat vector: XLA:CPU fills a 1-D array ~4x faster than a 3-D
    one of the same values)."""
    return lambda k: jax.random.gumbel(k, (m * b * n,), jnp.float32).reshape(m, b, n)


# ------------------------------------------------------------ memory


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


# ------------------------------------------------------------ Fenchel-Young


def bench_fy(repeats: int) -> dict[str, Any]:
    """`pl.FenchelYoungLoss` value_and_grad against the layer's forward+gradient and
    the noise floor, B=32, n=10, M=1000, interleaved; paired ratios."""
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
    floor_c, floor_cs, _ = C.compile_aot(floor_fn(b, n, m), key)
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
        "ratio_fy_over_floor": C.paired_ratio(
            per["fy_value_and_grad"]["samples"], per["floor_gumbel"]["samples"]
        ),
        "fy_grad_rel_err_vs_softmax_minus_y": rel_err(g, s - np.asarray(y)),
    }
