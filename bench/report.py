"""The Markdown report of bench/run.py: the targets table, one table per section,
the plots (log-log scaling, shortest paths), and the block of bench/README.md between
its `latest-results` markers.
"""

from pathlib import Path
from typing import Any

import _common as C
import numpy as np


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


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
    """The whole report: the run's setting, the targets, the plots, then one
    table per section that ran (in `SECTION_TABLES` order)."""
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
    for name, table in SECTION_TABLES.items():
        section = res.get(name)
        if isinstance(section, dict):
            parts += table(section)
    return "\n".join(parts) + "\n"


def accuracy_table(acc: dict[str, Any]) -> list[str]:
    if "by_M" not in acc:
        return []
    return [
        "",
        "## 1. Gradient relative error, mean [min, max] over 20 keys",
        "",
        *render_accuracy(acc["by_M"]),
    ]


def timing_table(tim: dict[str, Any]) -> list[str]:
    if "grid" not in tim:
        return []
    parts = [
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
                C.fmt_summary(x["time_s"]) if "time_s" in x else x.get("skipped", "-")
            )
        for ref in ("optax_vmapped", "jaxopt_vmapped", "floor"):
            r = g["ratios"].get(f"ours/{ref}")
            row.append(f"{r['wall']['median']:.2f}" if r else "-")
        row.append(g["repeats"])
        rows.append(row)
    header = ["B", "n", "M", *cols, "ours/optax_vmapped", "ours/jaxopt_vmapped"]
    parts.append(C.markdown_table([*header, "ours/floor", "reps"], rows))
    return parts


def fy_table(fy: dict[str, Any]) -> list[str]:
    if "time_s" not in fy:
        return []
    rows = [
        [k, C.fmt_summary(x), C.fmt_summary(x["cpu_s"])]
        for k, x in fy["time_s"].items()
    ]
    return [
        "",
        "## 4. Fenchel–Young step vs layer, B=32 n=10 M=1000",
        "",
        C.markdown_table(["what", "wall time", "CPU time"], rows),
    ]


def shortest_path_table(sp: dict[str, Any]) -> list[str]:
    if not sp.get("results"):
        return []
    names = list(sp["results"][0]["seconds_per_call"])
    rows = []
    for r in sp["results"]:
        row = [f"{r['side']}×{r['side']}"]
        for name in names:
            ratio = (
                ""
                if name == "ours"
                else f" ({r['ratio_to_ours'][name]['median']:.1f}×)"
            )
            row.append(C.fmt_summary(r["seconds_per_call"][name]) + ratio)
        row.append(f"{r['solves_per_s']['ours']:,.0f}")
        rows.append(row)
    return [
        "",
        "## 5. Shortest paths, 32 × 10 instances per call, seconds per call (×ours)",
        "",
        C.markdown_table(["grid", *names, "ours solves/s"], rows),
    ]


def pyepo_table(pe: dict[str, Any]) -> list[str]:
    if not pe.get("by_M"):
        return []
    import pyepo_compare

    data = pe["setup"]["data"]
    return [
        "",
        f"## 6. PyEPO 5×5 shortest path, FY loss, {pe['setup']['epochs']} epochs, "
        "batch 32, Adam 1e-2",
        "",
        pyepo_compare.render(pe),
        "",
        f"Data: {data.get('source')}; {data.get('experiments_data', '')}.",
    ]


def scaling_tables(sc: dict[str, Any]) -> list[str]:
    if "vs_M" not in sc:
        return []
    parts = ["", "## 7. Scaling (n=10), forward+gradient time, median", ""]
    names = sc["setup"]["contenders"]
    for axis, var in (("vs_M", "M"), ("vs_B", "B")):
        rows = []
        for r in sc[axis]:
            cs = r["contenders"]
            rows.append(
                [r["B"], r["M"]]
                + [
                    C.fmt_time(cs[name]["time_s"]["median"])
                    if "time_s" in cs.get(name, {})
                    else "-"
                    for name in names
                ]
            )
        parts += [f"Time vs {var}:", "", C.markdown_table(["B", "M", *names], rows), ""]
    return parts


# The tables of the report, in its order (a section's number is its place in issue 6).
SECTION_TABLES = {
    "accuracy": accuracy_table,
    "timing": timing_table,
    "fy": fy_table,
    "shortest_path": shortest_path_table,
    "pyepo": pyepo_table,
    "scaling": scaling_tables,
}


# ------------------------------------------------------------------ plots


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


def write_plots(res: dict[str, Any], out_dir: Path, stem: str) -> dict[str, str]:
    """The PNGs of the sections that ran, beside the report: {name: file name}."""
    title = f"{res['date']}, {res['device_tag']}{' (quick)' if res['quick'] else ''}"
    pngs: dict[str, str] = {}
    if isinstance(res.get("scaling"), dict) and "vs_M" in res["scaling"]:
        path = out_dir / f"{stem}-scaling.png"
        plot_scaling(res, path, f"perturbed argmax, forward + gradient, {title}")
        pngs["scaling"] = path.name
    sp = res.get("shortest_path")
    if isinstance(sp, dict) and sp.get("results"):
        path = out_dir / f"{stem}-shortest-path.png"
        plot_shortest_path(res, path, f"grid shortest paths, {title}")
        pngs["shortest_path"] = path.name
    return pngs


# ------------------------------------------------------------------ README


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
