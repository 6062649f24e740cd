"""Section `scaling` of bench/run.py: time against M and against B, log-log.

Forward + gradient time at n = 10 against M (B = 32) and against B (M = 1000), ours,
optax whole and vmapped (and jaxopt vmapped in the full run), with the log-log slope
over the upper half of each range.
"""

from typing import Any

import _common as C
import core
import numpy as np

N = 10


def run(quick: bool, repeats: int) -> dict[str, Any]:
    if quick:
        ms, bs = [100, 1000, 10_000], [1, 32, 256]
        names = ["ours", "optax_whole", "optax_vmapped"]
    else:
        ms, bs = [10, 100, 1000, 10_000, 100_000], [1, 8, 32, 128, 256]
        names = core.with_jaxopt(
            ["ours", "optax_whole", "optax_vmapped", "jaxopt_vmapped"]
        )
    out: dict[str, Any] = {
        "setup": {
            "n": N,
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
            r = core.time_point(
                b, N, m, names, repeats=repeats, budget_s=8.0, min_sample_s=0.05
            )
            out[axis].append(r)
            C.log(
                f"  scaling {axis} B={b} M={m}: "
                + ", ".join(
                    f"{k}={C.fmt_time(c['time_s']['median'])}"
                    for k, c in r["contenders"].items()
                    if "time_s" in c
                )
            )
    out["loglog_slope_upper_range"] = slopes(out, names)
    return out


def slopes(out: dict[str, Any], names: list[str]) -> dict[str, dict[str, float]]:
    """Per axis and contender, the log-log slope over the upper half of the range
    (past fixed overheads)."""
    result: dict[str, dict[str, float]] = {}
    for axis, var in (("vs_M", "M"), ("vs_B", "B")):
        result[axis] = {}
        for name in names:
            pts = [
                (r[var], r["contenders"][name]["time_s"]["median"])
                for r in out[axis]
                if "time_s" in r["contenders"].get(name, {})
            ]
            pts = pts[len(pts) // 2 :] if len(pts) >= 4 else pts[-2:]
            if len(pts) >= 2:
                x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
                result[axis][name] = float(np.polyfit(x, y, 1)[0])
    return result
