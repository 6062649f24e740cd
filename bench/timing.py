"""Section `timing` of bench/run.py: forward + gradient time over a grid of sizes.

`jit(value_and_grad(θ ↦ ⟨y_ε(θ), v⟩))` over B ∈ {1, 32, 256}, n ∈ {10, 100, 1000},
M ∈ {100, 1000} (--quick: three configurations, the headline first), ours against
optax and jaxopt, and the noise-draw floor where B·n·M ≥ 10⁷.
"""

import time
from typing import Any

import _common as C
import core

HEADLINE = (32, 10, 1000)


def grid(quick: bool) -> list[tuple[int, int, int]]:
    """The (B, n, M) configurations, the headline first."""
    if quick:
        return [HEADLINE, (32, 10, 100), (256, 100, 1000)]
    configs = [
        (b, n, m) for b in (1, 32, 256) for n in (10, 100, 1000) for m in (100, 1000)
    ]
    configs.remove(HEADLINE)
    return [HEADLINE, *configs]


def names(b: int, n: int, m: int) -> list[str]:
    """The contenders timed at (B, n, M)."""
    out = ["ours", "optax_vmapped", "jaxopt_vmapped"]
    if n == 10 or (b, n, m) == HEADLINE:
        out.insert(1, "optax_whole")
    if (b, n) == (32, 10):
        out.append("jaxopt_whole")
    if (b, n, m) == HEADLINE:
        out.append("ours_plain")  # every variance reduction off (information)
    if b * n * m >= core.FLOOR_MIN_ELEMS:
        out.append("floor")
    return core.with_jaxopt(out)


def run(quick: bool, repeats: int) -> dict[str, Any]:
    results = []
    for i, (b, n, m) in enumerate(grid(quick)):
        t0 = time.perf_counter()
        # Each configuration's ratios are medians over its repetitions, and the
        # targets take the worst configuration: cheap ones get 3x the repetitions
        # (within a time budget), those with a noise-floor target a larger budget.
        big = b * n * m >= 1e8
        floor = b * n * m >= core.FLOOR_MIN_ELEMS
        r = core.time_point(
            b,
            n,
            m,
            names(b, n, m),
            repeats=2 if big else (repeats + 4 if i == 0 else 3 * repeats),
            budget_s=None if big else (30.0 if i == 0 else 20.0 if floor else 8.0),
            min_sample_s=0.0 if big else (0.25 if i == 0 else 0.1),
        )
        results.append(r)
        rv = r["ratios"].get("ours/optax_vmapped", {}).get("wall", {})
        rf = r["ratios"].get("ours/floor", {}).get("wall", {})
        C.log(
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
            "sigma": core.SIGMA,
            "noise": "Gumbel",
            "what": "jit(value_and_grad(theta -> <y_eps(theta), v>)), warm, blocked",
            "floor": "jit(jax.random.gumbel(key, (M*B*n,))), where B*n*M >= 1e7",
            "note": "configs with B*n*M >= 1e8: 2 repetitions of one call each; "
            "others 3x --repeats within 8 s (20 s where the floor is timed)",
        },
        "grid": results,
    }
