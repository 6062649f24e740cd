"""Configs that cannot hang the machine (issue 14): bounded YAML, duplicate keys,
encodings, nesting, every float, names, Warcraft data files, progress output.

Nothing here trains; each test reads files or validates configs.
"""

import pathlib
import time

import numpy as np
import pytest

from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _train, _yaml

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
PYEPO = CONFIGS / "pyepo_shortest_path.yaml"


def _error(path, overrides=()) -> str:
    with pytest.raises(ex.ConfigError) as info:
        ex.load_config(path, overrides)
    return str(info.value)


def _laughs(levels: int, width: int = 10) -> str:
    """The "billion laughs": each level a list of `width` aliases to the previous."""
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, levels):
        refs = ", ".join([f"*l{level - 1}"] * width)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["file", "training group", "override"])
def test_billion_laughs_is_refused_fast_with_a_short_message(tmp_path, where):
    text = _laughs(9)  # 10^9 strings when expanded
    assert len(text) < 800
    path = tmp_path / "laughs.yaml"
    if where == "file":
        path.write_text(text)
    elif where == "training group":  # inside an otherwise valid config
        indented = "".join("  " + line + "\n" for line in text.splitlines())
        path.write_text(PYEPO.read_text() + "  extra:\n" + "  " + indented)
    start = time.perf_counter()
    if where == "override":
        message = _error(PYEPO, [f"training.epochs={text}"])
    else:
        message = _error(path)
    assert time.perf_counter() - start < 2
    assert len(message) < 1000
    if where != "override":
        assert "expands to more than 100,000 values" in message and str(path) in message
    else:  # an override's value is one scalar: a mapping of aliases is refused
        assert "bad override" in message


def test_a_config_just_under_the_bounds_still_loads():
    text = _laughs(4)  # 10^4 values: a large but honest document
    assert len(_yaml.load_yaml(text)["l3"]) == 10


def test_long_values_are_cut_short_in_errors(tmp_path):
    long = "x" * 100_000
    message = _error(PYEPO, [f"model.name={long}"])
    assert "model.name" in message and len(message) < 1500
    message = _error(PYEPO, [f"layer.sigma={long}"])
    assert "layer.sigma" in message and len(message) < 1500


@pytest.mark.parametrize(
    "text, key, first, second",
    [
        ("training:\n  epochs: 4\n  epochs: 1\n", "'epochs'", 2, 3),
        ("training: {a: 1}\nmodel: {}\ntraining: {b: 2}\n", "'training'", 1, 3),
    ],
)
def test_duplicate_keys_name_the_key_and_both_lines(tmp_path, text, key, first, second):
    path = tmp_path / "dup.yaml"
    path.write_text(text)
    message = _error(path)
    assert f"{path}: duplicate key {key} at line {second}" in message
    assert f"(first at line {first}," in message


def test_a_duplicate_in_a_real_config_is_refused(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(PYEPO.read_text() + "training:\n  epochs: 1\n  batch_size: 2\n")
    assert "duplicate key 'training'" in _error(path)


def test_merge_keys_are_not_duplicates():
    data = _yaml.load_yaml("base: &b {x: 1, y: 2}\nmine:\n  <<: *b\n  y: 3\n")
    assert data["mine"] == {"x": 1, "y": 3}


def test_non_utf8_deep_and_large_files_are_clear_errors(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert f"{path}: not UTF-8 text: byte 0xe9 at offset 9" in _error(path)
    path.write_text("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert f"{path}: nesting deeper than 32 levels at line 1" in _error(path)
    path.write_text("a:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 200)))
    assert "nesting deeper than 32 levels" in _error(path)
    path.write_text("# padding\n" * 200_000)
    assert "a config may have 1,048,576" in _error(path)


@pytest.mark.parametrize(
    "text, value",
    [
        ("1.5e3", 1500.0),
        ("1e-2", 0.01),
        ("1E+2", 100.0),
        (".5", 0.5),
        ("5.", 5.0),
        ("1_000.5", 1000.5),
        ("'2.5'", 2.5),
        ("' 7e-1 '", 0.7),
    ],
)
def test_every_float_python_reads_is_a_number(tmp_path, text, value):
    config = ex.load_config(PYEPO, [f"layer.sigma={text}"])
    assert config.layer.sigma == pytest.approx(value)  # pyright: ignore[reportAttributeAccessIssue]
    path = tmp_path / "c.yaml"
    path.write_text(PYEPO.read_text().replace("sigma: 1.0", f"sigma: {text}"))
    assert ex.load_config(path).layer.sigma == pytest.approx(value)  # pyright: ignore[reportAttributeAccessIssue]


@pytest.mark.parametrize("text", ["abc", "1.5.3", "true", "nan", ".inf", "1e999"])
def test_what_is_not_a_finite_number_is_still_refused(text):
    message = _error(PYEPO, [f"layer.sigma={text}"])
    assert "layer.sigma" in message
    assert "valid number" in message or "finite number" in message


# ----------------------------------------------------------- Warcraft data files


def _save_split(folder: pathlib.Path, maps, weights, paths, split="train"):
    for part, array in (
        ("maps", maps),
        ("vertex_weights", weights),
        ("shortest_paths", paths),
    ):
        np.save(folder / f"{split}_{part}.npy", array)


@pytest.fixture(scope="module")
def warcraft():
    return ex.generate_warcraft_maps(4, size=12, seed=0)


def _bad(warcraft, change):
    maps, weights, paths = (np.array(a) for a in warcraft)
    change(maps, weights, paths)
    return maps, weights, paths


@pytest.mark.parametrize(
    "change, part, words",
    [
        (lambda m, w, p: w.__setitem__((2, 3, 4), np.nan), "vertex_weights", "NaN"),
        (lambda m, w, p: w.__setitem__((1, 0, 0), 0.0), "vertex_weights", "zero or"),
        (lambda m, w, p: w.__setitem__((3, 5, 5), -1.0), "vertex_weights", "negative"),
        (lambda m, w, p: p.__setitem__((2, 4, 4), 0.5), "shortest_paths", "0/1 mask"),
        (lambda m, w, p: p.__setitem__((1, 0, 0), 0.0), "shortest_paths", "corners"),
        (lambda m, w, p: p.__setitem__((3, -1, -1), 0.0), "shortest_paths", "corners"),
    ],
)
def test_bad_warcraft_files_are_refused_before_training(
    tmp_path, warcraft, change, part, words
):
    maps, weights, paths = _bad(warcraft, change)
    _save_split(tmp_path, maps, weights, paths, "train")
    _save_split(tmp_path, *warcraft, split="test")
    overrides = [f"data.path={tmp_path}", "data.num_train=4", "data.num_test=4"]
    config = ex.load_config(CONFIGS / "warcraft_12x12.yaml", overrides)
    with pytest.raises(ex.ConfigError) as info:
        ex.build(config, "w.yaml")
    message = str(info.value)
    assert f"w.yaml: data: {tmp_path / f'train_{part}.npy'}: " in message
    assert words in message and "(map " in message


def test_warcraft_maps_of_another_dtype_are_refused(tmp_path, warcraft):
    maps, weights, paths = warcraft
    _save_split(tmp_path, maps.astype(np.float32), weights, paths, "train")
    with pytest.raises(ValueError, match=r"train_maps\.npy: dtype float32; RGB"):
        ex.load_warcraft_split(tmp_path, "train", 12, 4)
    np.save(tmp_path / "train_maps.npy", np.array([object()] * 4))
    with pytest.raises(ValueError, match=r"not a readable \.npy array"):
        ex.load_warcraft_split(tmp_path, "train", 12, 4)


def test_good_warcraft_files_still_load(tmp_path, warcraft):
    _save_split(tmp_path, *warcraft, split="train")
    maps, weights, _ = ex.load_warcraft_split(tmp_path, "train", 12, 3)
    assert maps.shape == (3, 96, 96, 3) and weights.dtype == np.float32


# ------------------------------------------------------------ progress output


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_progress_bars_only_on_a_terminal():
    assert _train._is_terminal(_Stream(True))
    assert not _train._is_terminal(_Stream(False))
    assert not _train._is_terminal(object())  # no isatty at all


def test_long_strings_repeated_by_aliases_are_bounded():
    text = "a: &a " + "x" * 60_000 + "\nb: [" + ", ".join(["*a"] * 20) + "]\n"
    with pytest.raises(_yaml.YAMLLimitError, match="1,048,576 characters"):
        _yaml.load_yaml(text)
    fewer = "a: &a " + "x" * 60_000 + "\nb: [" + ", ".join(["*a"] * 10) + "]\n"
    assert len(_yaml.load_yaml(fewer)["b"]) == 10
