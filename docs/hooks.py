"""MkDocs hook: pages generated from the repository at build time, never written twice.

- `<!-- generated: benchmarks -->` in a page becomes the tables of the latest results
  in `bench/results/*.json` (one file per benchmark: the newest date, a full run
  before a `--quick` one), and the plots drawn from them are added to the site as
  `figures/bench_*.png`.
- `<!-- generated: config-keys -->` becomes the table of every key of the experiment
  config, with its type and default, read from the pydantic schema in
  `perturbed_layers.experiments`, or a note that the subpackage does not exist yet.

A benchmark file whose layout this hook does not know is named on the page, not
rendered: the build never fails because a benchmark changed its output.
"""

import io
import json
import pathlib
import re
import types
import typing
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_MARK = "<!-- generated: benchmarks -->"
CONFIG_MARK = "<!-- generated: config-keys -->"
_NAME = re.compile(r"^(?P<name>[a-z_]+)-(?P<date>\d{4}-\d{2}-\d{2})(?P<rest>.*)\.json$")


# ------------------------------------------------------------------ benchmarks


def latest_results(folder: pathlib.Path = RESULTS) -> dict[str, pathlib.Path]:
    """The newest result file per benchmark name (a full run before a quick one)."""
    best: dict[str, tuple[tuple[str, bool], pathlib.Path]] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        match = _NAME.match(path.name)
        if match is None:
            continue
        rank = (match["date"], "quick" not in match["rest"])
        name = match["name"]
        if name not in best or rank > best[name][0]:
            best[name] = (rank, path)
    return {name: path for name, (_, path) in sorted(best.items())}


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def _env(res: dict[str, Any]) -> str:
    env = res.get("env", {})
    device, versions = env.get("device", {}), env.get("versions", {})
    parts = [
        f"{device.get('cpu_count', '?')} × {device.get('cpu_model', device.get('platform', '?'))}",
        ", ".join(f"{k} {v}" for k, v in versions.items()),
    ]
    return "; ".join(p for p in parts if p)


def render_core(res: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    parts = ["### Targets", ""]
    rows = [
        [
            t["description"],
            t["target"],
            _num(t["measured"]),
            "yes" if t["met"] else "**no**",
            t["detail"],
        ]
        for t in res["targets"]
    ]
    parts.append(_table(["metric", "target", "measured", "met", "detail"], rows))
    figures: dict[str, bytes] = {}
    acc = res.get("accuracy")
    if acc:
        by_m = acc["by_M"]
        ms = sorted(by_m, key=int)
        names = list(by_m[ms[-1]]["contenders"])
        rows = []
        for name in names:
            row = [f"`{name}`"]
            for m in ms:
                c = by_m[m]["contenders"].get(name)
                row.append(f"{c['mean']:.4f}" if c else "-")
            rows.append(row)
        parts += [
            "",
            "### Gradient relative error ‖ĝ − g‖ / ‖g‖ (mean over keys)",
            "",
            _table(["contender", *(f"M = {m}" for m in ms)], rows),
        ]
        setup = acc.get("setup", {})
        title = ", ".join(
            f"{k} = {setup[k]}" for k in ("B", "n", "sigma", "noise") if k in setup
        )
        figures["bench_core_accuracy.png"] = _accuracy_plot(by_m, ms, names, title)
    timing = res.get("timing")
    if timing:
        rows = []
        for g in timing["grid"]:
            cells = []
            for name in ("ours", "optax_whole", "optax_vmapped"):
                c = g["contenders"].get(name, {})
                cells.append(_time(c["time_s"]["median"]) if "time_s" in c else "-")
            rows.append([g["B"], g["n"], g["M"], *cells])
        parts += [
            "",
            "### Forward + gradient time (median)",
            "",
            _table(["B", "n", "M", "ours", "optax whole", "optax vmapped"], rows),
        ]
    return "\n".join(parts), figures


def render_shortest_path(res: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    results = res["results"]
    others = list(results[0]["ratio_to_ours"])
    rows = []
    for r in results:
        ours = r["seconds_per_call"]["ours"]["median"]
        rows.append(
            [
                f"{r['side']}×{r['side']}",
                r["instances_per_call"],
                _time(ours),
                f"{r['ours_solves_per_s']:,.0f}",
                *(f"{r['ratio_to_ours'][n]['median']:.1f}×" for n in others),
            ]
        )
    header = ["grid", "instances per call", "ours", "ours solves/s", *others]
    text = "\n".join(
        [
            "Time per call of `grid_shortest_path` (ours), and each contender's time "
            "as a multiple of ours (median of paired ratios).",
            "",
            _table(header, rows),
        ]
    )
    return text, {"bench_shortest_path.png": _shortest_path_plot(results)}


RENDERERS = {"core": render_core, "shortest_path": render_shortest_path}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _accuracy_plot(
    by_m: dict[str, Any], ms: list[str], names: list[str], title: str
) -> bytes:
    plt = _pyplot()
    from matplotlib import ticker

    fig, ax = plt.subplots(figsize=(8, 3.2))
    width = 0.8 / len(ms)
    for j, m in enumerate(ms):
        values = [
            by_m[m]["contenders"].get(n, {}).get("mean", float("nan")) for n in names
        ]
        ax.bar(
            [i + j * width for i in range(len(names))], values, width, label=f"M = {m}"
        )
    ax.set_xticks([i + width * (len(ms) - 1) / 2 for i in range(len(names))])
    ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_ylabel("gradient relative error (log scale)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return _png(fig)


def _shortest_path_plot(results: list[dict[str, Any]]) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    sides = [r["side"] for r in results]
    for name in results[0]["seconds_per_call"]:
        ax.plot(
            sides,
            [r["seconds_per_call"][name]["median"] for r in results],
            "o-",
            label=name,
        )
    ax.set_yscale("log")
    ax.set(xlabel="grid side", ylabel="seconds per call", xticks=sides)
    ax.legend(fontsize=8)
    return _png(fig)


def benchmarks_markdown(
    folder: pathlib.Path = RESULTS,
) -> tuple[str, dict[str, bytes]]:
    """The benchmarks section and its figures (name → PNG bytes)."""
    found = latest_results(folder)
    if not found:
        return "No benchmark results in `bench/results/` yet.", {}
    parts, figures = [], {}
    for name, path in found.items():
        res = json.loads(path.read_text())
        title = f"## `{name}`: `bench/results/{path.name}`"
        meta = f"Measured {res.get('started') or res.get('when', '?')} on {_env(res)}."
        render = RENDERERS.get(name)
        body = None
        if render is not None:
            try:
                body, figs = render(res)
            except (KeyError, TypeError, IndexError, ValueError):
                body = None
            else:
                figures.update(figs)
                body += "".join(f"\n\n![{f}](figures/{f})" for f in figs)
        if body is None:
            body = "This file's layout is not rendered here; read the JSON file."
        parts.append(f"{title}\n\n{meta}\n\n{body}")
    return "\n\n".join(parts), figures


# ------------------------------------------------------------- config keys


def _unwrap(annotation: Any) -> tuple[Any, list[Any]]:
    """The annotation without `Annotated`, and the metadata that wrapped it."""
    metadata: list[Any] = []
    while typing.get_origin(annotation) is typing.Annotated:
        annotation, *extra = typing.get_args(annotation)
        for item in extra:
            metadata += [item, *getattr(item, "metadata", [])]
    return annotation, metadata


def _models_in(annotation: Any) -> list[type]:
    """The pydantic models an annotation refers to (through Optional, unions, ...)."""
    from pydantic import BaseModel

    annotation, _ = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(annotation) for m in _models_in(a)]
    return []


def _constraints(metadata: list[Any]) -> str:
    signs = (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤"))
    parts = [
        f"{sign} {getattr(item, attr)}"
        for item in metadata
        for attr, sign in signs
        if getattr(item, attr, None) is not None
    ]
    return ", ".join(parts)


def _type_name(annotation: Any, metadata: list[Any] = ()) -> str:  # type: ignore[assignment]
    annotation, inner = _unwrap(annotation)
    metadata = [*metadata, *inner]
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        name = " | ".join(repr(a) for a in typing.get_args(annotation))
    elif origin in (typing.Union, types.UnionType):
        name = " | ".join(_type_name(a) for a in typing.get_args(annotation))
    elif annotation is type(None):
        name = "None"
    elif isinstance(annotation, type):
        name = annotation.__name__
    else:
        name = str(annotation).replace("typing.", "")
    bounds = _constraints(metadata)
    return f"{name} ({bounds})" if bounds else name


def _entry_name(model: type) -> str:
    """A registry entry's `name` (its `Literal` value), or its class name."""
    field = model.model_fields.get("name")  # type: ignore[attr-defined]
    if field is not None and typing.get_origin(field.annotation) is typing.Literal:
        return str(typing.get_args(field.annotation)[0])
    return model.__name__


def _default(field: Any) -> str:
    if field.is_required():
        return "required"
    return f"`{field.get_default(call_default_factory=True)!r}`"


def config_rows(model: type, prefix: str = "", entry: str = "") -> list[list[str]]:
    """One row per leaf key of a pydantic model: key, entry, type, default, description.

    A field whose type is a union of models (a config group: one registry entry chosen
    by its `name`) gives a `name` row listing the choices, then each entry's keys with
    the entry named in the second column.
    """
    rows = []
    for name, field in model.model_fields.items():  # type: ignore[attr-defined]
        key = f"{prefix}{name}"
        subs = _models_in(field.annotation)
        if len(subs) == 1:
            rows += config_rows(subs[0], key + ".", entry)
            continue
        if subs:
            choices = ", ".join(f"`{_entry_name(sub)}`" for sub in subs)
            rows.append([f"`{key}.name`", "", f"one of {choices}", "required", ""])
            for sub in subs:
                sub_rows = config_rows(sub, key + ".", _entry_name(sub))
                rows += [r for r in sub_rows if r[0] != f"`{key}.name`"]
            continue
        rows.append(
            [
                f"`{key}`",
                f"`{entry}`" if entry else "",
                f"`{_type_name(field.annotation, list(field.metadata))}`",
                _default(field),
                (field.description or "").replace("\n", " "),
            ]
        )
    return rows


def find_schema(module: types.ModuleType) -> Any:
    """The experiment config schema: `config_schema()` if the package exports one, else
    the schema builder of its `_config` module (where the schema is built today from
    the registries), else the one pydantic model of the package that no other of its
    models uses as a field."""
    from pydantic import BaseModel

    exported = getattr(module, "config_schema", None)
    if callable(exported):
        return exported()
    private = getattr(module, "_config", None)
    if private is not None and callable(getattr(private, "_schema", None)):
        return private._schema()
    models = [
        v
        for v in vars(module).values()
        if isinstance(v, type) and issubclass(v, BaseModel) and v is not BaseModel
    ]
    used = {
        m
        for model in models
        for field in model.model_fields.values()
        for m in _models_in(field.annotation)
    }
    roots = [m for m in models if m not in used]
    return roots[0] if len(roots) == 1 else None


def config_markdown() -> str:
    note = "!!! note\n    "
    try:
        import perturbed_layers.experiments as experiments
    except ImportError:
        return note + "The experiments subpackage does not exist yet."
    try:
        import perturbed_layers.experiments._config  # noqa: F401
    except ImportError as error:
        if error.name != "perturbed_layers.experiments._config":
            return note + f"The config schema could not be imported: `{error}`."
    schema = find_schema(experiments)
    if schema is None:
        return (
            note + "`perturbed_layers.experiments` has no config schema yet. When it "
            "has one, this page lists every config key with its default, generated "
            "from the schema."
        )
    rows = config_rows(schema)
    header = ["key", "for `name`", "type", "default", "description"]
    if not any(row[4] for row in rows):
        header, rows = header[:4], [row[:4] for row in rows]
    return (
        "Every key of a config file, generated from the schema "
        "(`perturbed_layers.experiments`) when this site was built. A group such as "
        "`layer` names one entry with `name`; the second column says which entry a key "
        "belongs to.\n\n" + _table(header, rows)
    )


# ------------------------------------------------------------------- hooks

_BENCHMARKS: dict[str, str] = {}


def on_files(files, config):
    from mkdocs.structure.files import File

    text, figures = benchmarks_markdown()
    _BENCHMARKS["text"] = text
    for name, content in figures.items():
        files.append(File.generated(config, f"figures/{name}", content=content))
    return files


def on_page_markdown(markdown, page, config, files):
    if BENCH_MARK in markdown:
        markdown = markdown.replace(BENCH_MARK, _BENCHMARKS["text"])
    if CONFIG_MARK in markdown:
        markdown = markdown.replace(CONFIG_MARK, config_markdown())
    return markdown
