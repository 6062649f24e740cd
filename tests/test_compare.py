"""`perturbed-layers compare`: the comparison file, its cells, the run, the report."""

import json
import pathlib

import pytest

from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _compare as cmp
from perturbed_layers.experiments._builtin import builtin_comparisons

ROOT = pathlib.Path(__file__).resolve().parent.parent

TINY = """\
name: tiny
base: pyepo_shortest_path
overrides:
  data.num_data: 300
  data.test_size: 100
  training.epochs: 1
  training.eval_batch_size: 100
settings:
  data.deg: [1, 4]
seeds: [0, 1]
methods:
  two_stage: {loss.name: regression, loss.target: costs}
  spo_plus: {loss.name: spo_plus}
pyepo:
  methods: [spo_plus]
  settings: {data.deg: [4]}
  seeds: [0]
"""


def _write(tmp_path, text=TINY, name="tiny.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_cells_are_methods_times_settings_times_seeds(tmp_path):
    comparison = cmp.load_comparison(_write(tmp_path))
    ours = cmp.cells(comparison, pyepo=False)
    assert len(ours) == 2 * 2 * 2
    assert {c.side for c in ours} == {"ours"}
    both = cmp.cells(comparison, pyepo=True)
    peer = [c for c in both if c.side == "pyepo-torch"]
    assert [(c.method, c.setting, c.seed) for c in peer] == [
        ("spo_plus", {"data.deg": 4}, 0)
    ]
    assert len({c.folder for c in ours}) == len(ours)  # one run folder each


def test_a_cell_config_has_the_method_setting_and_seed(tmp_path):
    path = _write(tmp_path)
    comparison = cmp.load_comparison(path)
    base = ex.load_config(ROOT / "configs" / "pyepo_shortest_path.yaml")
    raw = base.model_dump(mode="json")
    cell = cmp.Cell(side="ours", method="spo_plus", setting={"data.deg": 1}, seed=1)
    config = cmp.cell_config(comparison, cell, raw, str(path), ["training.epochs=3"])
    assert config.loss.name == "spo_plus"
    assert config.data.deg == 1 and config.data.num_data == 300
    assert config.data.seed == 1 and config.training.seed == 1
    assert config.training.epochs == 3  # the command line's override comes last
    assert raw["loss"]["name"] == "fenchel_young"  # the base is not changed


@pytest.mark.parametrize(
    "edit, words",
    [
        (("spo_plus: {loss.name: spo_plus}", "spo_plus: {loss.nam: spo_plus}"),
         "[spo_plus, deg=1, seed 0]: loss.nam: unknown key"),
        (("methods: [spo_plus]", "methods: [dbb]"),
         "pyepo.methods: 'dbb' is not one of methods"),
        (("settings: {data.deg: [4]}", "settings: {data.deg: [3]}"),
         "pyepo.settings.data.deg: [3] not among settings.data.deg"),
        (("seeds: [0]\n", "seeds: [5]\n"), "pyepo.seeds: [5] not among seeds"),
        (("data.deg: [1, 4]", "data..deg: [1, 4]"), "is not a config key"),
        (("base: pyepo_shortest_path", "base: nowhere"),
         "nowhere: no such file, and not a built-in config"),
        (("training.epochs: 1", "training.epochs: 0"),
         "training.epochs: Input should be greater than 0"),
    ],
)  # fmt: skip
def test_a_bad_comparison_names_the_file_and_the_key(tmp_path, edit, words):
    path = _write(tmp_path, TINY.replace(*edit))
    out = tmp_path / "out"
    with pytest.raises(ex.ConfigError) as info:
        cmp.compare(path, out, log=lambda _: None)
    assert str(path) in str(info.value) or "nowhere" in words
    assert words in str(info.value), str(info.value)
    assert not out.exists()  # nothing ran, nothing was written


def test_the_builtin_comparisons_are_valid(tmp_path):
    comparisons = builtin_comparisons()
    assert {"shortest_path", "knapsack"} <= set(comparisons)
    for path in comparisons.values():
        comparison = cmp.load_comparison(path)
        base = ex.load_config(ROOT / "configs" / f"{comparison.base}.yaml")
        raw = base.model_dump(mode="json")
        for cell in cmp.cells(comparison, pyepo=True):
            cmp.cell_config(comparison, cell, raw, str(path), [])
        assert len(cmp.cells(comparison, pyepo=False)) == 7 * 4 * 2 * 3


@pytest.mark.slow
def test_compare_runs_the_grid_writes_the_report_and_resumes(tmp_path, capsys):
    path, out = _write(tmp_path), tmp_path / "out"
    assert ex.main(["compare", str(path), "--out", str(out)]) == 0
    lines = (out / "results.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == 8
    assert {(r["method"], r["setting"]["data.deg"], r["seed"]) for r in records} == {
        (m, d, s) for m in ("two_stage", "spo_plus") for d in (1, 4) for s in (0, 1)
    }
    for r in records:
        assert r["metric"] == "normalized_regret" and r["n_train"] == 200
        assert 0 <= r["value"] < 1
        summary = json.loads((out / r["run"] / "summary.json").read_text())
        assert summary["test_normalized_regret"] == r["value"]
    table = (out / "table.md").read_text()
    assert "| two_stage |" in table and "deg=4 (n_train=200)" in table
    assert (out / "regret.png").stat().st_size > 0
    assert len((out / "table.csv").read_text().splitlines()) == 9

    # Not again into the same folder without --resume ...
    assert ex.main(["compare", str(path), "--out", str(out)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    # ... and with it, a lost result is made again, the others are kept.
    (out / "results.jsonl").write_text("\n".join(lines[:-1]) + "\n")
    assert ex.main(["compare", str(path), "--out", str(out), "--resume"]) == 0
    again = [json.loads(x) for x in (out / "results.jsonl").read_text().splitlines()]
    assert again[:-1] == records[:-1]
    assert again[-1]["value"] == pytest.approx(records[-1]["value"], abs=1e-6)
    # A changed file does not resume into the old folder.
    _write(tmp_path, TINY.replace("seeds: [0, 1]", "seeds: [0, 2]"))
    assert ex.main(["compare", str(path), "--out", str(out), "--resume"]) == 2
    assert "holds a different comparison" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_with_pyepo_puts_its_regret_beside_ours(tmp_path):
    pytest.importorskip("pyepo")
    pytest.importorskip("torch")
    pytest.importorskip("gurobipy")
    path, out = _write(tmp_path), tmp_path / "out"
    text = TINY.replace("seeds: [0, 1]", "seeds: [0]").replace(
        "data.deg: [1, 4]", "data.deg: [4]"
    )
    path = _write(tmp_path, text)
    results = cmp.compare(path, out, pyepo=True, log=lambda _: None)
    peer = [r for r in results if r["side"] == "pyepo-torch"]
    assert len(peer) == 1 and 0 <= peer[0]["value"] < 1
    table = (out / "table.md").read_text()
    assert "Ours beside PyEPO (pyepo-torch)" in table and "| spo_plus | deg=4" in table
