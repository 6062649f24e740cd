"""The documentation cannot drift from the code.

- Every fenced ```python block in `docs/**/*.md` and in the docstrings of the public
  names of `perturbed_layers` and `perturbed_layers.solvers` (what their `__init__.py`
  export, and the methods those classes define) runs, each in a fresh namespace.
  Blocks of other libraries' code, shown for comparison, say so in their title
  (```` ```python title="... (not run)" ````) and are the only ones skipped.
- The build-time generators of the site (docs/hooks.py) are checked on small inputs.
- `mkdocs build --strict` passes (slow; skipped without the `docs` extra).
"""

import importlib.util
import inspect
import pathlib
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from types import ModuleType

import pytest

import perturbed_layers
import perturbed_layers.solvers

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOT_RUN = "not run)"
_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$",
    re.MULTILINE | re.DOTALL,
)


def python_blocks(text: str) -> Iterator[tuple[str, str]]:
    """(info string, dedented code) of each fenced block whose language is python."""
    for match in _FENCE.finditer(text):
        info = match["info"].strip()
        if info.split(" ", 1)[0] in ("python", "py"):
            yield info, textwrap.dedent(match["body"])


def _public_docstrings() -> Iterator[tuple[str, str]]:
    """(qualified name, docstring) of the public API, each object once."""
    seen: set[int] = set()

    def visit(name: str, obj: object) -> Iterator[tuple[str, str]]:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        doc = inspect.getdoc(obj) if not isinstance(obj, ModuleType) else obj.__doc__
        if doc:
            yield name, doc
        if inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if attr.startswith("_") and attr != "__call__":
                    continue
                member = getattr(member, "__func__", member)
                if callable(member) and getattr(member, "__doc__", None):
                    yield from visit(f"{name}.{attr}", member)

    for module in (perturbed_layers, perturbed_layers.solvers):
        yield from visit(module.__name__, module)
        for attr, obj in sorted(vars(module).items()):
            if attr.startswith("_") or isinstance(obj, ModuleType):
                continue
            if not getattr(obj, "__module__", "").startswith("perturbed_layers"):
                continue
            yield from visit(f"{module.__name__}.{attr}", obj)


def _collect() -> list:
    params = []
    for path in sorted(DOCS.rglob("*.md")):
        for i, (info, code) in enumerate(python_blocks(path.read_text())):
            marks = [pytest.mark.skip(reason=info)] if NOT_RUN in info else []
            ident = f"docs/{path.relative_to(DOCS)}:{i}"
            params.append(pytest.param(code, id=ident, marks=marks))
    for name, doc in _public_docstrings():
        for i, (info, code) in enumerate(python_blocks(doc)):
            marks = [pytest.mark.skip(reason=info)] if NOT_RUN in info else []
            params.append(pytest.param(code, id=f"{name}:{i}", marks=marks))
    return params


BLOCKS = _collect()


def test_blocks_were_found():
    # A collector that finds nothing would make every other test here vacuous.
    ids = [p.id for p in BLOCKS]
    assert sum(i.startswith("docs/") for i in ids) >= 15
    assert sum(i.startswith("perturbed_layers") for i in ids) >= 15
    assert any(i.startswith("perturbed_layers.FenchelYoungLoss") for i in ids)


# About two minutes in all on a shared 2-core CPU (each block compiles its own ops).
@pytest.mark.slow
@pytest.mark.parametrize("code", BLOCKS)
def test_code_block_runs(code: str, request):
    name = request.node.callspec.id
    try:
        exec(compile(code, name, "exec"), {"__name__": "__docs__"})
    except ModuleNotFoundError as error:
        # Only the optional extras may be missing; anything else is a broken example.
        if error.name is not None and error.name.split(".")[0] in ("flax", "scipy"):
            pytest.skip(f"needs the optional dependency {error.name}")
        raise


def test_every_public_name_is_in_the_api_reference():
    # A name exported from __init__.py but missing from docs/api/ is undocumented.
    directives = set()
    for path in (DOCS / "api").glob("*.md"):
        directives |= set(re.findall(r"^::: (\S+)", path.read_text(), re.MULTILINE))
    missing = []
    for module in (perturbed_layers, perturbed_layers.solvers):
        for attr, obj in vars(module).items():
            if attr.startswith("_") or isinstance(obj, ModuleType):
                continue
            name = f"{module.__name__}.{attr}"
            ours = getattr(obj, "__module__", "").startswith("perturbed_layers")
            if ours and name not in directives:
                missing.append(name)
    assert not missing, f"add to docs/api/*.md: {missing}"


# ---------------------------------------------------------------- site generators


def _hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _touch(folder: pathlib.Path, *names: str) -> None:
    for name in names:
        (folder / name).write_text("# Run\n")


def test_latest_report_prefers_newest_then_full_runs(tmp_path):
    hooks = _hooks()
    _touch(
        tmp_path,
        "2026-01-01-cpu.md",
        "2026-01-02-cpu-quick.md",
        "2026-01-03-cpu-partial.md",
        "2026-01-03-cpu-quick-partial.md",
        "devices-2026-01-04-cpu.md",
        "shortest_path-2026-01-04.json",
        "core-2026-01-04-cpu.json",
        "notes.md",
    )
    assert hooks.latest_report(tmp_path) == tmp_path / "2026-01-02-cpu-quick.md"
    _touch(tmp_path, "2026-01-02-cpu.md", "2026-01-02-cpu.json")
    report = hooks.latest_report(tmp_path)
    assert report == tmp_path / "2026-01-02-cpu.md"
    # Every other benchmark's latest run is named; the report's own files are not.
    others = [
        [p.name for p in run] for run in hooks.unrendered_results(tmp_path, report)
    ]
    assert others == [
        ["2026-01-03-cpu-partial.md"],
        ["core-2026-01-04-cpu.json"],
        ["devices-2026-01-04-cpu.md"],
        ["shortest_path-2026-01-04.json"],
    ]


def test_report_is_included_with_its_figures(tmp_path):
    hooks = _hooks()
    (tmp_path / "2026-01-01-cpu.md").write_text(
        "# Benchmarks: 2026-01-01\n\n## Targets\n\n| a |\n| --- |\n| 1 |\n\n"
        "![scaling](2026-01-01-cpu-scaling.png)\n\n"
        "![shortest_path](2026-01-01-cpu-shortest-path.png)\n"
    )
    (tmp_path / "2026-01-01-cpu-scaling.png").write_bytes(b"\x89PNG scaling")
    _touch(tmp_path, "devices-2026-01-01-cpu.md")
    text, figures = hooks.benchmarks_markdown(tmp_path)
    lines = text.splitlines()
    assert "## Benchmarks: 2026-01-01" in lines and "### Targets" in lines
    assert "# Benchmarks: 2026-01-01" not in lines
    assert "`bench/results/2026-01-01-cpu.md`" in lines[0]
    assert "![scaling](figures/bench_2026-01-01-cpu-scaling.png)" in lines
    assert figures == {"bench_2026-01-01-cpu-scaling.png": b"\x89PNG scaling"}
    # The missing plot keeps its alt text and says so; it is no broken link.
    missing = [line for line in lines if "shortest_path" in line]
    assert len(missing) == 1 and "missing" in missing[0] and "](" not in missing[0]
    assert "`devices-2026-01-01-cpu.md`" in text


def test_no_report_is_said(tmp_path):
    hooks = _hooks()
    assert hooks.benchmarks_markdown(tmp_path / "absent") == (
        "No `python bench/run.py` report in `bench/results/` yet.",
        {},
    )
    _touch(tmp_path, "2026-01-01-cpu-partial.md", "devices-2026-01-01-cpu.md")
    text, figures = hooks.benchmarks_markdown(tmp_path)
    assert text.startswith("No `python bench/run.py` report")
    assert "`2026-01-01-cpu-partial.md`" in text
    assert "`devices-2026-01-01-cpu.md`" in text
    assert figures == {}


def test_config_keys_from_a_pydantic_schema():
    pydantic = pytest.importorskip("pydantic")
    from typing import Annotated, Literal

    hooks = _hooks()

    class Adam(pydantic.BaseModel):
        name: Literal["adam"]
        learning_rate: Annotated[float, pydantic.Field(gt=0)] = pydantic.Field(
            1e-3, description="The step size."
        )

    class Argmax(pydantic.BaseModel):
        name: Literal["argmax"]
        sigma: float = 0.5

    class TopK(pydantic.BaseModel):
        name: Literal["top_k"]
        k: int

    class Training(pydantic.BaseModel):
        epochs: int

    class Config(pydantic.BaseModel):
        seed: int = 0
        optimizer: Adam
        layer: Annotated[Argmax | TopK, pydantic.Field(discriminator="name")]
        training: Training

    module = ModuleType("fake_experiments")
    module.Config, module.Training = Config, Training  # type: ignore[attr-defined]
    assert hooks.find_schema(module) is Config
    rows = {(row[0], row[1]): row[2:] for row in hooks.config_rows(Config)}
    assert list(rows) == [
        ("`seed`", ""),
        ("`optimizer.name`", ""),
        ("`optimizer.learning_rate`", ""),
        ("`layer.name`", ""),
        ("`layer.sigma`", "`argmax`"),
        ("`layer.k`", "`top_k`"),
        ("`training.epochs`", ""),
    ]
    assert rows[("`optimizer.learning_rate`", "")] == [
        "`float (> 0)`",
        "`0.001`",
        "The step size.",
    ]
    assert rows[("`layer.name`", "")][0] == "one of `argmax`, `top_k`"
    assert rows[("`layer.k`", "`top_k`")][1] == "required"


def test_a_section_that_cannot_be_made_fails_a_strict_build(monkeypatch, caplog):
    hooks = _hooks()
    # As if the docs extra lacked the experiments' needs: the import fails.
    monkeypatch.setitem(sys.modules, "perturbed_layers.experiments", None)
    with pytest.raises(hooks.SectionError, match="install the docs extra"):
        hooks.config_markdown()
    page = ModuleType("page")
    page.file = ModuleType("file")  # type: ignore[attr-defined]
    page.file.src_path = "experiments.md"  # type: ignore[attr-defined]
    with caplog.at_level("WARNING", logger="mkdocs.hooks.perturbed_layers"):
        text = hooks.on_page_markdown(
            f"before\n{hooks.CONFIG_MARK}\nafter", page, None, None
        )
    # mkdocs --strict turns any warning of an mkdocs logger into a failed build.
    (record,) = [r for r in caplog.records if r.levelname == "WARNING"]
    assert record.name.startswith("mkdocs.")
    assert "experiments.md: the config-keys table" in record.getMessage()
    assert "could not be made" in text and hooks.CONFIG_MARK not in text


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[\[<>=!~ ;]", r, maxsplit=1)[0].lower() for r in requirements}


def test_the_docs_extra_brings_what_the_generated_pages_import():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    missing = _requirement_names(extras["experiments"]) - _requirement_names(
        extras["docs"]
    )
    assert missing == set()


@pytest.mark.slow
def test_every_metric_the_tasks_report_is_defined():
    """Each task's metrics (on two test instances, solved exactly) and the training
    numbers are defined on docs/metrics.md."""
    pytest.importorskip("pydantic")
    import jax.numpy as jnp
    import numpy as np

    from perturbed_layers import experiments as ex

    page = (DOCS / "metrics.md").read_text()
    small = {
        "pyepo_shortest_path": ["data.num_data=20", "data.test_size=10"],
        "warcraft_12x12": ["data.num_train=2", "data.num_test=2"],
        "label_ranking": ["data.num_train=5", "data.num_test=5"],
    }
    names = set()
    for config_name, overrides in small.items():
        config = ex.load_config(ROOT / "configs" / f"{config_name}.yaml", overrides)
        data = config.data.build()
        batch = ex.Batch(*(a[:2] for a in data.test))
        per = data.task.metrics(jnp.asarray(batch.costs), batch.y, batch)
        names |= set(data.task.summarise({k: np.asarray(v) for k, v in per.items()}))
    names |= {"train_loss", "train_seconds", "eval_seconds", "seconds_per_epoch"}
    names |= {"eval_seconds_per_epoch", "final_train_loss", "num_parameters"}
    assert len(names) >= 14
    undefined = sorted(n for n in names if f"`{n}`" not in page)
    assert undefined == []


@pytest.mark.slow
def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"NO_MKDOCS_2_WARNING": "1", **dict(__import__("os").environ)},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    api = (tmp_path / "api" / "layers" / "index.html").read_text()
    # Constructor signatures on the API pages (Equinox dataclass fields).
    heading = api[api.index('id="perturbed_layers.PerturbedTopK"') :][:4000]
    assert "num_samples" in heading and "sigma" in heading
    experiments = (tmp_path / "experiments" / "index.html").read_text()
    assert "training.epochs" in experiments and "could not be made" not in experiments
    assert (tmp_path / "training" / "index.html").exists()
    assert (tmp_path / "metrics" / "index.html").exists()
