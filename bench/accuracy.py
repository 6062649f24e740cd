"""Section `accuracy` of bench/run.py: gradient error of the perturbed argmax.

Relative error ‖ĝ − g‖/‖g‖ over the batch of the VJP vᵀ∂y_ε/∂θ (Gumbel, σ = 0.5,
B = 32, n = 10) against the exact softmax Jacobian, mean over 20 keys, M ∈ {100, 1000};
ours against optax and jaxopt (whole batch and vmapped per row), plus ablations of our
estimator (information only) and checks that contenders drawing the same samples
agree.
"""

from typing import Any

import _common as C
import core
import jax
import numpy as np

B, N = 32, 10
VARIANTS = (
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
CHECKS = {
    "chunked_vs_unchunked_max_abs_diff": ("ours_chunked", "ours"),
    "pl_make_perturbed_fun_vs_optax_max_abs_diff": (
        "pl_make_perturbed_fun_whole",
        "optax_whole",
    ),
}


def variants(quick: bool, m: int) -> list[str]:
    """Ablations of our estimator and same-samples checks (information only: no
    target's ratio uses them); --quick keeps only `ours_chunked` at M=1000."""
    if not quick:
        return list(VARIANTS)
    return ["ours_chunked"] if m == 1000 else []


def error_summary(grads: list[np.ndarray], g_exact) -> dict[str, Any]:
    """Relative errors of one contender's gradients over the keys, summarised."""
    errs = [core.rel_err(g, g_exact) for g in grads]
    s = C.summarize(errs)
    return {**{k: s[k] for k in ("mean", "median", "min", "max")}, "per_key": errs}


def checks(grads: dict[str, list[np.ndarray]], g_exact) -> dict[str, float]:
    """Max |difference| over keys and entries of the pairs of `CHECKS` that ran, and
    max |g| for scale."""
    diffs = {
        check: float(
            max(np.max(np.abs(x - y)) for x, y in zip(grads[a], grads[b], strict=True))
        )
        for check, (a, b) in CHECKS.items()
        if a in grads and b in grads
    }
    return {**diffs, "max_abs_g_exact": float(np.max(np.abs(g_exact)))}


def run(quick: bool) -> dict[str, Any]:
    theta, v = core.inputs(B, N)
    g_exact = core.exact_vjp(theta, v)
    keys = jax.random.split(jax.random.key(core.KEYS_SEED), core.NUM_ACC_KEYS)
    names = core.with_jaxopt(
        ["ours", "optax_whole", "optax_vmapped", "jaxopt_whole", "jaxopt_vmapped"]
    )
    out: dict[str, Any] = {
        "setup": {
            "B": B,
            "n": N,
            "sigma": core.SIGMA,
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
        extra = variants(quick, m)
        grads: dict[str, list[np.ndarray]] = {}
        res: dict[str, dict[str, Any]] = {}
        for name in names + extra:
            c = core.compiled_vg(name, B, N, m)
            grads[name] = [np.asarray(c.fn(theta, v, k)[1]) for k in keys]
            res[name] = {
                "description": core.DESCRIPTIONS[name],
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
            "variants": {k: res[k] for k in extra},
            "ratios": ratios,
            "checks": checks(grads, g_exact),
        }
        C.log(
            f"  accuracy M={m}: "
            + ", ".join(f"{k}={r['mean']:.4f}" for k, r in res.items())
        )
    return out
