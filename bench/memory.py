"""Section `memory` of bench/run.py: peak memory of a chunked gradient.

`jit(grad)` at M = 100,000, B = 32, n = 1000: ours with `chunk_size=500` run in a
fresh subprocess (`python bench/run.py --mem-child SPEC`, which calls `child`: peak
RSS, VmHWM, compilation included, minus the RSS after imports and inputs; on an
accelerator also the device's peak), and XLA's compiled memory analysis (temp +
arguments + outputs) at M = 100,000 for ours and the peers, compiled, not run.
--quick runs the chunked program at M = 5,000, where its memory is the same.
"""

import time
from pathlib import Path
from typing import Any

import _common as C
import core
import jax
import jax.numpy as jnp
import numpy as np

B, N, M, CHUNK = core.MEM_B, core.MEM_N, core.MEM_M, core.MEM_CHUNK
QUICK_RUN_M = 5_000
ENTRY_POINT = Path(__file__).resolve().parent / "run.py"


def run(quick: bool) -> dict[str, Any]:
    run_m = QUICK_RUN_M if quick else M
    C.log(f"  memory: ours chunk={CHUNK} run at M={run_m} in a subprocess")
    spec = {"contender": "ours_chunked", "B": B, "n": N, "M": run_m}
    measured = C.run_child(
        ENTRY_POINT, {**spec, "chunk": CHUNK, "run": True}, timeout=1800.0
    )
    if "error" in measured:
        C.log(f"  memory child failed: {measured['error']}")
    compiled: dict[str, Any] = {}
    names = ["ours_chunked", "optax_whole"]
    if not quick:
        names += core.with_jaxopt(["ours", "optax_vmapped", "jaxopt_whole"])
    theta, v = core.inputs(B, N)
    for name in names:
        fwd = core.forward(
            "ours" if name == "ours_chunked" else name,
            M,
            CHUNK if name == "ours_chunked" else None,
        )
        grad = jax.grad(lambda t, vv, k, fwd=fwd: jnp.sum(fwd(t, k) * vv))
        try:
            _, seconds, ma = C.compile_aot(grad, theta, v, jax.random.key(0))
            compiled[name] = {"compile_s": seconds, "memory_analysis": ma}
            C.log(
                f"  memory: {name} M={M} XLA total "
                f"{C.fmt_bytes(ma.get('total_bytes', 0))}"
            )
        except Exception as e:  # e.g. a compile-time allocation failure
            compiled[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return {
        "setup": {
            "B": B,
            "n": N,
            "M": M,
            "chunk_size": CHUNK,
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
        "run": measured,
        "compiled": compiled,
    }


def child(spec: dict[str, Any]) -> None:
    """Run in a fresh process: compile (and maybe run) jit(grad) and report memory
    through `C.report_child`."""
    b, n, m = spec["B"], spec["n"], spec["M"]
    theta, v = core.inputs(b, n)
    key = jax.random.key(core.RUN_KEY_SEED)
    C.block((theta, v))
    dev = jax.devices()[0]
    rss0, hwm0, maxrss0 = C.rss_bytes(), C.hwm_bytes(), C.peak_rss_bytes()
    name, chunk = spec["contender"], spec.get("chunk")
    base = "ours" if name in ("ours_chunked", "ours") else name
    fwd = core.forward(base, m, chunk)
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
        res["grad_rel_err_vs_exact"] = core.rel_err(g, core.exact_vjp(theta, v))
    C.report_child(res)
