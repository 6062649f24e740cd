"""The command line as a user meets it (issue 14): built-in configs by name, the
`configs` command, and errors that list what exists. Nothing here trains."""

import pathlib

import pytest

from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _builtin

CONFIGS = pathlib.Path(__file__).resolve().parent.parent / "configs"
NAMES = sorted(path.stem for path in CONFIGS.glob("*.yaml"))


def test_configs_lists_every_built_in_config(capsys):
    assert ex.main(["configs"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines()[: len(NAMES)]]
    assert listed == NAMES
    assert "\nquickstart " in out and "The README's main job: learn to read" in out


@pytest.mark.parametrize("name", ["quickstart", "label_ranking.yaml"])
def test_configs_prints_one_to_start_from(capsys, name):
    assert ex.main(["configs", name]) == 0
    assert capsys.readouterr().out == (CONFIGS / name).with_suffix(".yaml").read_text()


def test_an_unknown_name_lists_the_built_in_ones(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ex.main(["configs", "quikstart"]) == 2
    assert f"built-in configs: {', '.join(NAMES)}" in capsys.readouterr().err
    assert ex.main(["train", "quikstart"]) == 2
    err = capsys.readouterr().err
    assert "quikstart: no such file, and not a built-in config" in err
    assert f"built-in configs: {', '.join(NAMES)}" in err
    assert not (tmp_path / "runs").exists()


def test_a_name_resolves_to_the_built_in_file_and_a_file_wins(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert ex.resolve_config("quickstart") == CONFIGS / "quickstart.yaml"
    assert ex.resolve_config("quickstart.yaml") == CONFIGS / "quickstart.yaml"
    (tmp_path / "quickstart.yaml").write_text("mine")
    assert ex.resolve_config("quickstart.yaml") == pathlib.Path("quickstart.yaml")
    with pytest.raises(ex.ConfigError, match="not a built-in config"):
        ex.resolve_config("sub/quickstart")  # a path is a path, not a name
    # The name's config validates, with the name as its run name.
    assert ex.load_config(ex.resolve_config("quickstart")).name == "quickstart"


def test_the_packaged_folder_comes_first(tmp_path, monkeypatch):
    packaged = tmp_path / "configs"
    packaged.mkdir()
    (packaged / "only.yaml").write_text("# Only this one.\ndata: {}\n")
    monkeypatch.setattr(_builtin, "_PACKAGED", packaged)
    assert ex.builtin_configs() == {"only": packaged / "only.yaml"}
    monkeypatch.setattr(_builtin, "_CHECKOUT", tmp_path / "absent")
    monkeypatch.setattr(_builtin, "_PACKAGED", tmp_path / "absent")
    with pytest.raises(ex.ConfigError, match="none found"):
        ex.resolve_config("quickstart")
