"""MkDocs hook: pages generated from the repository at build time, never written twice.

- `<!-- generated: benchmarks -->` in a page becomes the latest report of
  `python bench/run.py`, included as it is: the newest
  `bench/results/<date>-<device>[-quick].md` (a full run before a `--quick` one of the
  same day; `-partial` files, from `--only`, are not reports), its headings one level
  down and its plots added to the site as `figures/bench_<name>.png`. Below it, the
  names of the latest files of the other benchmarks (`devices-…`, `shortest_path-…`,
  a partial run), which the page does not render.
- `<!-- generated: config-keys -->` becomes the table of every key of the experiment
  config, with its type and default, read from the pydantic schema in
  `perturbed_layers.experiments`.

The build never fails because a benchmark changed its output: a missing plot is
named on the page, and no result at all is said. A section that cannot be made at all
(the config schema cannot be imported: the `docs` extra brings what it needs) is a
warning, so `mkdocs build --strict` fails, and the page says what went wrong.
"""

import logging
import pathlib
import re
import types
import typing
from typing import Any

log = logging.getLogger("mkdocs.hooks.perturbed_layers")


class SectionError(RuntimeError):
    """A generated section that cannot be made; the message says why."""


ROOT = pathlib.Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
BENCH_MARK = "<!-- generated: benchmarks -->"
CONFIG_MARK = "<!-- generated: config-keys -->"
# `[<benchmark>-]<date><rest>.json|md`; bench/run.py's files have no prefix.
_RESULT = re.compile(
    r"^(?:(?P<prefix>[a-z_]+)-)?(?P<date>\d{4}-\d{2}-\d{2})(?P<rest>[^.]*)\.(?:json|md)$"
)
_HEADING = re.compile(r"^(#{1,5}) ", re.MULTILINE)
_IMAGE = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)/\s]+\.png)\)")


# ------------------------------------------------------------------ benchmarks


def _results(folder: pathlib.Path) -> list[tuple[re.Match[str], pathlib.Path]]:
    """The result files (JSON and Markdown) in `folder`, with their parsed names."""
    paths = sorted(folder.iterdir()) if folder.is_dir() else []
    matches = ((_RESULT.match(path.name), path) for path in paths)
    return [(match, path) for match, path in matches if match is not None]


def _rank(match: re.Match[str]) -> tuple[str, bool]:
    """Newest date first; on the same date a full run before a `--quick` one."""
    return match["date"], "-quick" not in match["rest"]


def _partial(match: re.Match[str]) -> bool:
    """Whether a file is from `bench/run.py --only` (some sections, not a report)."""
    return match["rest"].endswith("-partial")


def latest_report(folder: pathlib.Path = RESULTS) -> pathlib.Path | None:
    """The newest Markdown report of `bench/run.py`, or None."""
    reports = [
        (_rank(match), path.name, path)
        for match, path in _results(folder)
        if match["prefix"] is None and path.suffix == ".md" and not _partial(match)
    ]
    return max(reports)[2] if reports else None


def unrendered_results(
    folder: pathlib.Path = RESULTS, report: pathlib.Path | None = None
) -> list[list[pathlib.Path]]:
    """The files of the latest run of every series but the report's: one series per
    benchmark prefix (`devices`, `shortest_path`, ...), bench/run.py's partial runs,
    and its full runs when the newest one is not the report (no Markdown yet)."""
    found = _results(folder)
    latest: dict[tuple[str, bool], tuple[tuple[str, bool], str]] = {}
    for match, path in found:
        series = (match["prefix"] or "", _partial(match))
        candidate = (_rank(match), path.stem)
        if series not in latest or candidate > latest[series]:
            latest[series] = candidate
    skip = report.stem if report is not None else None
    stems = sorted(stem for _, stem in latest.values() if stem != skip)
    return [[path for _, path in found if path.stem == stem] for stem in stems]


def _demote(markdown: str) -> str:
    """Every heading one level down: the page has its own title."""
    return _HEADING.sub(r"#\1 ", markdown)


def include_report(report: pathlib.Path) -> tuple[str, dict[str, bytes]]:
    """A report for the page, and its figures (site name → PNG bytes): headings one
    level down, image links to the PNGs beside it rewritten to site files."""
    figures: dict[str, bytes] = {}

    def image(match: re.Match[str]) -> str:
        png = report.parent / match["src"]
        if not png.is_file():
            return f"*Figure missing: {match['alt']} (`{match['src']}` not found).*"
        name = f"bench_{match['src']}"
        figures[name] = png.read_bytes()
        return f"![{match['alt']}](figures/{name})"

    body = _IMAGE.sub(image, _demote(report.read_text().rstrip()))
    data = report.with_suffix(".json")
    source = f"From `bench/results/{report.name}`" + (
        f" (data: `{data.name}` beside it)" if data.is_file() else ""
    )
    return f"{source}, written by `python bench/run.py`.\n\n{body}", figures


def _others_markdown(runs: list[list[pathlib.Path]]) -> str:
    """A list of the files the page does not render, one item per run."""
    items = "\n".join("- " + ", ".join(f"`{p.name}`" for p in run) for run in runs)
    return (
        "## Other results\n\nThe latest files of the other benchmarks in "
        "`bench/results/`, not rendered on this page:\n\n" + items
    )


def benchmarks_markdown(
    folder: pathlib.Path = RESULTS,
) -> tuple[str, dict[str, bytes]]:
    """The benchmarks section and its figures (site name → PNG bytes)."""
    report = latest_report(folder)
    if report is not None:
        text, figures = include_report(report)
    else:
        text, figures = "No `python bench/run.py` report in `bench/results/` yet.", {}
    others = unrendered_results(folder, report)
    if others:
        text += "\n\n" + _others_markdown(others)
    return text, figures


# ------------------------------------------------------------- config keys


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


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
    """The config-keys section. **Raises:** `SectionError` if the schema cannot be
    imported or found."""
    try:
        import perturbed_layers.experiments as experiments
    except ImportError as error:
        raise SectionError(
            f"cannot import perturbed_layers.experiments ({error}); install the "
            "docs extra"
        ) from None
    schema = find_schema(experiments)
    if schema is None:
        raise SectionError("perturbed_layers.experiments has no config schema")
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
        try:
            section = config_markdown()
        except SectionError as error:
            # A warning: `mkdocs build --strict` fails on it.
            log.warning(f"{page.file.src_path}: the config-keys table: {error}")
            section = (
                f"!!! failure\n    The config-keys table could not be made: {error}"
            )
        markdown = markdown.replace(CONFIG_MARK, section)
    return markdown
