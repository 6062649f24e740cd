"""The table and the figure of a comparison, made from its `results.jsonl` records."""

import math
import pathlib
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from . import _run_folder as files
from ._compare import Comparison, _label

TABLE, CSV, FIGURE = "table.md", "table.csv", "regret.png"


def _setting_label(record: dict[str, Any]) -> str:
    label = _label(record["setting"])
    if record.get("n_train") is not None:
        label += f" (n_train={record['n_train']})"
    return label


def _scale(metric: str) -> tuple[float, str]:
    # Regrets are fractions; PyEPO's figures and tables show them in percent.
    return (100.0, " (%)") if "regret" in metric else (1.0, "")


def _mean_spread(values: Sequence[float]) -> str:
    if any(not math.isfinite(v) for v in values):
        return "nan"  # a diverged cell stays visible, never averaged away
    mean = statistics.fmean(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}"


def _group(records: Iterable[dict[str, Any]], side: str) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        if r["side"] == side:
            groups.setdefault((r["method"], _setting_label(r)), []).append(r)
    return groups


def table(comparison: Comparison, results: list[dict[str, Any]]) -> str:
    """The Markdown table: ours per method × setting (mean ± standard deviation over
    seeds), then, where PyEPO ran, ours beside PyEPO on the same cells."""
    if not results:
        return "no results yet\n"
    metric = results[0]["metric"]
    scale, unit = _scale(metric)
    ours = _group(results, "ours")
    settings = list(dict.fromkeys(label for _, label in ours))
    lines = [
        f"# {comparison.name}: test {metric}{unit}, mean ± sd over "
        f"{len(comparison.seeds)} seed(s)",
        "",
        "| method | " + " | ".join(settings) + " |",
        "|---|" + "---|" * len(settings),
    ]
    for method in comparison.methods:
        row = [
            _mean_spread([r["value"] * scale for r in ours.get((method, s), [])])
            if (method, s) in ours
            else "–"
            for s in settings
        ]
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    runs = [r for r in results if r["side"] == "ours"]
    wall = sum(r["wall_seconds"] for r in runs)
    lines += ["", f"Wall time of our {len(runs)} runs: {wall:.0f} s.", ""]
    peers = sorted({r["side"] for r in results} - {"ours"})
    for side in peers:
        lines += _beside(results, side, scale, unit, metric)
    return "\n".join(lines) + "\n"


def _beside(
    results: list[dict[str, Any]], side: str, scale: float, unit: str, metric: str
) -> list[str]:
    theirs = _group(results, side)
    seeds = {(r["method"], _setting_label(r)): set() for r in results}
    for r in results:
        if r["side"] == side:
            seeds[(r["method"], _setting_label(r))].add(r["seed"])
    lines = [
        f"## Ours beside PyEPO ({side}), the same cells and seeds",
        "",
        f"| method | setting | ours{unit} | PyEPO{unit} | ours − PyEPO (points) | "
        "wall s ours | wall s PyEPO | PyEPO / ours |",
        "|---|---|---|---|---|---|---|---|",
    ]
    total_ours = total_theirs = 0.0
    for (method, setting), peer in theirs.items():
        mine = [
            r
            for r in results
            if r["side"] == "ours"
            and r["method"] == method
            and _setting_label(r) == setting
            and r["seed"] in seeds[(method, setting)]
        ]
        if not mine:
            continue
        a = statistics.fmean(r["value"] * scale for r in mine)
        b = statistics.fmean(r["value"] * scale for r in peer)
        ta = sum(r["wall_seconds"] for r in mine)
        tb = sum(r["wall_seconds"] for r in peer)
        total_ours, total_theirs = total_ours + ta, total_theirs + tb
        lines.append(
            f"| {method} | {setting} | {a:.2f} | {b:.2f} | {a - b:+.2f} | "
            f"{ta:.1f} | {tb:.1f} | {tb / ta:.1f}× |"
        )
    if total_ours > 0:
        lines += [
            "",
            f"Wall time over these cells: ours {total_ours:.0f} s, PyEPO "
            f"{total_theirs:.0f} s ({total_theirs / total_ours:.1f}× ours). "
            f"Metric: test {metric}.",
            "",
        ]
    return lines


def csv_text(results: list[dict[str, Any]]) -> str:
    """One row per run: side, method, setting, seed, n_train, value, seconds."""
    header = "side,method,setting,seed,n_train,metric,value,train_seconds,wall_seconds"
    rows = [
        ",".join(
            str(x)
            for x in (
                r["side"],
                r["method"],
                _label(r["setting"]).replace(",", ";"),
                r["seed"],
                r.get("n_train"),
                r["metric"],
                r["value"],
                f"{r['train_seconds']:.3f}",
                f"{r['wall_seconds']:.3f}",
            )
        )
        for r in results
    ]
    return "\n".join([header, *rows]) + "\n"


def figure(comparison: Comparison, results: list[dict[str, Any]], path: pathlib.Path):
    """One panel per setting: each method's value per seed (dots) and mean (bar);
    PyEPO's runs as crosses beside ours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = results[0]["metric"]
    scale, unit = _scale(metric)
    settings = list(dict.fromkeys(_setting_label(r) for r in results))
    methods = list(comparison.methods)
    cols = min(4, len(settings))
    rows = math.ceil(len(settings) / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(3.2 * cols + 1, 2.8 * rows + 0.6), squeeze=False
    )
    for ax, setting in zip(axes.ravel(), settings, strict=False):
        for i, method in enumerate(methods):
            for side, dx, marker in (("ours", -0.12, "o"), (None, 0.12, "x")):
                values = [
                    r["value"] * scale
                    for r in results
                    if r["method"] == method
                    and _setting_label(r) == setting
                    and ((r["side"] == "ours") == (side == "ours"))
                ]
                if not values:
                    continue
                color = "tab:blue" if side == "ours" else "tab:orange"
                ax.bar(i + dx, statistics.fmean(values), 0.22, color=color, alpha=0.35)
                ax.plot([i + dx] * len(values), values, marker, color=color, ms=4)
        ax.set_xticks(range(len(methods)), methods, rotation=45, ha="right")
        ax.set_title(setting, fontsize=8)
        ax.set_ylabel(f"{metric}{unit}", fontsize=8)
    for ax in axes.ravel()[len(settings) :]:
        ax.set_axis_off()
    fig.suptitle(
        f"{comparison.name}: ours (blue dots: seeds, bar: mean); PyEPO (orange crosses)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    comparison: Comparison, results: list[dict[str, Any]], out: pathlib.Path
) -> None:
    """Write `table.md`, `table.csv` and (with results) `regret.png` into `out`."""
    files.write_text(out / TABLE, table(comparison, results))
    files.write_text(out / CSV, csv_text(results))
    if results:
        figure(comparison, results, out / FIGURE)
