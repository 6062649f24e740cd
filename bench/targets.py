"""The table of targets (issues 6 and 18) from the results of bench/run.py.

One row per target or piece of information: benchmark, metric, target, measured,
met (True, False, or None for information) and detail. `report.py` renders it.
"""

from collections.abc import Callable
from typing import Any

import _common as C
import core

VARIANTS = {"ours_scan": "epoch in one call"}

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


# What each target is, in words (recorded in the JSON as `targets_spec`).
SPEC = {
    "1": "gradient rel. error: ours <= 0.1 x optax whole batch, <= 0.6 x optax vmapped (B=32, n=10, sigma=0.5, M in {100, 1000})",
    "2": "fwd+grad time <= 1.0 x optax vmapped everywhere; <= 1.3 x noise-draw floor where B*n*M >= 1e7",
    "3": "peak memory of jit(grad) at M=100000, B=32, n=1000, chunked: < 2 GiB",
    "4": "FY loss step <= 0.6 x layer fwd+grad",
    "5": "shortest paths 12x12, 32 x M=10 per call: >= 10x scipy Dijkstra per instance; growth 12..30",
    "6": "PyEPO 5x5 PFY, M in {1,3,10}: >= 20x faster per epoch at the same regret (+-0.5 points)",
    "7": "scaling of time vs M and vs B, log-log, ours and optax",
}


def grid_ratios(grid: list[dict[str, Any]], ratio: str) -> list[tuple[dict, float]]:
    """(config, median paired wall-time ratio) for each timing config with `ratio`."""
    return [
        (g, g["ratios"][ratio]["wall"]["median"]) for g in grid if ratio in g["ratios"]
    ]


def config(g: dict[str, Any]) -> str:
    return f"({g['B']},{g['n']},{g['M']})"


Add = Callable[..., None]


def accuracy_rows(res: dict[str, Any], add: Add) -> None:
    """Section 1: gradient error ratios to each peer, at each M."""
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


def timing_rows(res: dict[str, Any], add: Add) -> None:
    """Section 2: time ratios to optax per row, the noise floor, every peer's fastest form."""
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


def accuracy_per_second_rows(res: dict[str, Any], add: Add) -> None:
    """Sections 1 and 2: error²·time, ours against each peer, at the headline."""
    acc, tim = res.get("accuracy"), res.get("timing")
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


def memory_rows(res: dict[str, Any], add: Add) -> None:
    """Section 3: peak memory of the run, XLA's analysis of each contender."""
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
                + (f" chunk={core.MEM_CHUNK}" if ours else "")
                + ", M=100,000",
                "< 2 GiB" if ours else "(info)",
                C.fmt_bytes(total),
                (total < TARGETS["mem"]) if ours else None,
                "compiled, not run",
            )


def fy_rows(res: dict[str, Any], add: Add) -> None:
    """Section 4: the FY step against the layer and against its noise draw."""
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


def shortest_path_rows(res: dict[str, Any], add: Add) -> None:
    """Section 5: solves per second against SciPy, growth with the side."""
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


def pyepo_rows(res: dict[str, Any], add: Add) -> None:
    """Section 6: seconds per epoch against PyEPO at the same regret."""
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


def scaling_rows(res: dict[str, Any], add: Add) -> None:
    """Section 7: log-log slopes."""
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


def targets_table(
    res: dict[str, Any], sections: tuple[str, ...]
) -> list[dict[str, Any]]:
    """The targets table of a run's results: each section's rows in issue 6's
    order, then a row per failed section (in `sections` order)."""
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

    for part in (
        accuracy_rows,
        timing_rows,
        accuracy_per_second_rows,
        memory_rows,
        fy_rows,
        shortest_path_rows,
        pyepo_rows,
        scaling_rows,
    ):
        part(res, add)
    for name in sections:
        s = res.get(name)
        if isinstance(s, dict) and s.get("error") and name != "pyepo":
            add(name, "section failed", "-", "error", False, s["error"][:300])
    return rows
