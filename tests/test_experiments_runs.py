"""End-to-end runs of the shipped configs, shrunk by overrides (slow: each compiles).

Each config trains for 2 epochs through the CLI (`perturbed_layers.experiments.main`)
on a small slice of its data; the run folder is then checked file by file. Resuming
an interrupted run must end with exactly the metrics of an uninterrupted one, and a
diverging run must stop with its last good checkpoint untouched.
"""

import importlib.util
import json
import pathlib

import equinox as eqx
import jax
import numpy as np
import pytest

from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _run_folder as files

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
SMALL = {
    "pyepo_shortest_path": ["data.num_data=600", "data.test_size=100"],
    "pyepo_knapsack": ["data.num_data=300", "data.test_size=100"],
    "pyepo_tsp": [
        "data.num_data=120",
        "data.test_size=40",
        "data.num_nodes=8",
        "training.batch_size=16",
        "training.eval_batch_size=40",
    ],
    "warcraft_12x12": [
        "data.num_train=64",
        "data.num_test=16",
        "training.batch_size=16",
        "training.eval_batch_size=16",
    ],
    "label_ranking": ["data.num_train=640", "data.num_test=100"],
    "quickstart": [
        "data.num_train=64",
        "data.num_test=16",
        "training.batch_size=16",
        "training.eval_batch_size=16",
    ],
}
PNG = b"\x89PNG\r\n\x1a\n"


def _cli(name: str, out: pathlib.Path, *extra: str) -> int:
    argv = ["train", str(CONFIGS / f"{name}.yaml"), "--out", str(out), "--no-progress"]
    return ex.main([*argv, *SMALL[name], *extra])


def _records(out: pathlib.Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def test_every_config_is_exercised():
    assert set(SMALL) == {path.stem for path in CONFIGS.glob("*.yaml")}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_two_epoch_run(name, tmp_path):
    out = tmp_path / "run"
    assert _cli(name, out, "training.epochs=2") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["epochs"] == 2
    assert [r["epoch"] for r in _records(out)] == [0, 1, 2]
    config = ex.load_config(out / "config.yaml")
    assert config.training.epochs == 2 and config.name == name
    for png in ("curves.png", "examples.png"):
        data = (out / png).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000
    headline = next(key for key in summary if key.startswith("test_"))
    assert headline in summary["trivial"]
    # Every number reported is defined on the metrics page.
    page = (ROOT / "docs" / "metrics.md").read_text()
    reported = {k.removeprefix("test_") for k in [*summary, *_records(out)[-1]]}
    assert sorted(k for k in reported if f"`{k}`" not in page) == []
    # The checkpoint holds the final model: re-evaluating it gives the same metrics.
    evaluation = ex.evaluate(out, log=lambda _: None)
    assert evaluation["epoch"] == 2
    for key, value in evaluation.items():
        if key.startswith("test_"):
            assert value == pytest.approx(summary[key], rel=1e-6, abs=1e-9), key
    if name == "pyepo_shortest_path":
        # Even two epochs on 500 points beat the feature-free predictor by far.
        assert (
            summary["test_normalized_regret"]
            < 0.5 * summary["trivial"]["test_normalized_regret"]
        )
    if name == "label_ranking":
        assert summary["test_spearman"] > summary["trivial"]["test_spearman"] + 0.3


def _without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in records]


def test_resume_ends_with_the_same_metrics(tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _cli("pyepo_shortest_path", whole, "training.epochs=3") == 0

    def interrupt(epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt

    config = ex.load_config(
        CONFIGS / "pyepo_shortest_path.yaml",
        [*SMALL["pyepo_shortest_path"], "training.epochs=3"],
    )
    with pytest.raises(KeyboardInterrupt):
        ex.train(
            config, cut, progress=False, log=lambda _: None, on_epoch_end=interrupt
        )
    assert [r["epoch"] for r in _records(cut)] == [0, 1]
    assert not (cut / "summary.json").exists()
    assert _cli("pyepo_shortest_path", cut, "training.epochs=3", "--resume") == 0
    assert _without_timing(_records(cut)) == _without_timing(_records(whole))
    a = json.loads((whole / "summary.json").read_text())
    b = json.loads((cut / "summary.json").read_text())
    assert {k: v for k, v in a.items() if k.startswith("test_")} == {
        k: v for k, v in b.items() if k.startswith("test_")
    }
    # A config whose model no longer fits the checkpoint is refused before training,
    # and leaves the run folder's config as it was.
    config_text = (cut / "config.yaml").read_text()
    assert _cli("pyepo_shortest_path", cut, "model.name=mlp", "--resume") == 2
    assert (cut / "config.yaml").read_text() == config_text


def test_steps_per_call_changes_no_result(tmp_path):
    """One step per compiled call, or 7 (so the epoch ends on a shorter call): the
    same steps, so the same losses and metrics (to float rounding: XLA may fuse the
    step differently inside the loop)."""
    records = []
    for steps in (1, 7):
        out = tmp_path / f"steps{steps}"
        overrides = ["training.epochs=2", f"training.steps_per_call={steps}"]
        assert _cli("pyepo_shortest_path", out, *overrides) == 0
        records.append(_without_timing(_records(out)))
    for a, b in zip(*records, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-6), key


@pytest.mark.parametrize(
    "loss, symptom",
    [
        # The FY loss solves the perturbed costs: the solver refuses NaN / -inf.
        ("fenchel_young", "the solver refused its input"),
        # The regression loss has no solver: the loss itself becomes inf / NaN.
        ("regression", "the training loss is"),
    ],
)
def test_non_finite_loss_stops_and_keeps_the_last_checkpoint(
    tmp_path, capsys, loss, symptom
):
    out = tmp_path / "run"
    # With a learning rate near float32's largest value, Adam's first step (of size
    # ≈ the learning rate) blows the weights up: epoch 1 diverges. (A resumed run
    # cannot take a new learning rate: resuming refuses a changed config.)
    overrides = [
        *SMALL["pyepo_shortest_path"],
        "training.epochs=2",
        "optimizer.learning_rate=1e38",
        f"loss.name={loss}",
    ]
    assert _cli("pyepo_shortest_path", out, *overrides) == 1
    err = capsys.readouterr().err
    assert "training diverged in epoch 1" in err and symptom in err
    assert "epoch 0) is kept" in err
    assert [r["epoch"] for r in _records(out)] == [0]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged" and summary["checkpoint_epoch"] == 0
    # The checkpoint kept is the untrained model's, to the bit.
    exp = ex.build(ex.load_config(CONFIGS / "pyepo_shortest_path.yaml", overrides))
    model, _, epoch, *_ = files.load_checkpoint(
        out / "checkpoint.eqx", exp.model, exp.opt_state, exp.key
    )
    assert epoch == 0
    for kept, initial in zip(
        jax.tree.leaves(eqx.filter(model, eqx.is_array)),
        jax.tree.leaves(eqx.filter(exp.model, eqx.is_array)),
        strict=True,
    ):
        np.testing.assert_array_equal(kept, initial)


def _example(name: str):
    spec = importlib.util.spec_from_file_location(
        name, ROOT / "examples" / f"{name}.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_scripts_run(capsys):
    # The standalone scripts, on slices of their data: they run and learn something.
    regret = _example("train_pyepo").main(epochs=2, num_data=600, test_size=100)
    assert 0 <= regret < 0.3  # the feature-free predictor scores about 0.5
    share = _example("train_warcraft").main(epochs=1, num_train=96, num_test=100)
    assert 0 <= share <= 1
    spearman = _example("train_ranking").main(epochs=2, num_train=320)
    assert min(spearman.values()) > 0.3  # constant rankings score about 0
    out = capsys.readouterr().out
    assert "test normalised regret" in out and "cost-optimal test paths" in out
