"""The package as a user installs it (issue 14): a wheel built from this checkout,
installed with its `experiments` extra into a fresh virtual environment outside the
checkout, runs the main job from an empty folder by the config's name.

Slow (a fresh environment installs JAX from the package index); CI runs it with the
other slow tests. What the wheel holds (py.typed, the built-in configs, the project
URLs, a README without relative links) is checked on the built file itself.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import zipfile

import pytest

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHORT = [
    "data.num_train=64",
    "data.num_test=16",
    "training.epochs=1",
    "training.batch_size=16",
    "training.eval_batch_size=16",
]


def _run(args, cwd, timeout=1200) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.pop("VIRTUAL_ENV", None)
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    dist = tmp_path_factory.mktemp("dist")
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, ROOT],
        dist,
    )
    (path,) = dist.glob("perturbed_layers-*.whl")
    return path


def test_the_wheel_holds_types_configs_urls_and_absolute_links(wheel):
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        (metadata,) = [n for n in names if n.endswith(".dist-info/METADATA")]
        meta = archive.read(metadata).decode()
    assert "perturbed_layers/py.typed" in names
    # The training configs and the comparisons (configs/compare/), by relative path.
    prefix = "perturbed_layers/experiments/configs/"
    shipped = {n.removeprefix(prefix) for n in names if n.startswith(prefix)}
    folder = ROOT / "configs"
    expected = {p.relative_to(folder).as_posix() for p in folder.rglob("*.yaml")}
    assert shipped == expected and "compare/shortest_path.yaml" in shipped
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in meta.splitlines()
        if line.startswith("Project-URL: ")
    )
    assert {"Homepage", "Repository", "Documentation", "Issues"} <= urls.keys()
    assert all(url.startswith("https://") for url in urls.values())
    description = meta.split("\n\n", 1)[1]
    assert description.startswith("# perturbed_layers")
    targets = re.findall(r"\]\(([^)\s]+)\)", description)
    assert targets, "the README has links; the check must see them"
    relative = [t for t in targets if not re.match(r"https://|#", t)]
    assert relative == []
    # Every absolute link into the repository names a file that exists in it.
    repository = urls["Repository"].rstrip("/")
    for target in targets:
        for kind in ("/blob/main/", "/raw/main/"):
            if target.startswith(repository + kind):
                path = target.removeprefix(repository + kind).split("#")[0]
                assert (ROOT / path).exists(), target


def test_installed_wheel_runs_the_main_job_from_an_empty_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], tmp_path)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = bin_dir / "python"
    _run([python, "-m", "pip", "install", "-q", f"{wheel}[experiments]"], tmp_path)
    empty = tmp_path / "work"
    empty.mkdir()
    # The package comes from the fresh environment, not from this checkout.
    where = _run(
        [python, "-c", "import perturbed_layers; print(perturbed_layers.__file__)"],
        empty,
    ).stdout.strip()
    assert pathlib.Path(where).is_relative_to(venv), where
    command = bin_dir / "perturbed-layers"
    listed = _run([command, "configs"], empty).stdout
    assert "quickstart" in listed and "pyepo_shortest_path" in listed
    printed = _run([command, "configs", "quickstart"], empty).stdout
    assert printed == (ROOT / "configs" / "quickstart.yaml").read_text()
    _run([command, "train", "quickstart", "--no-progress", *SHORT], empty)
    (run,) = (empty / "runs").glob("quickstart-*")
    assert sorted(p.name for p in empty.iterdir()) == ["runs"]
    for name in ("run.json", "config.yaml", "checkpoint.eqx", "curves.png"):
        assert (run / name).is_file(), name
    lines = (run / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [0, 1]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["name"] == "quickstart"
    assert 0 <= summary["test_cost_optimal_share"] <= 1
    # The run folder reads back with the installed package too.
    evaluated = _run([command, "evaluate", run], empty).stdout
    assert "cost_optimal_share" in evaluated
