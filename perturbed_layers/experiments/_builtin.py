"""The built-in configs: the YAML files of the repository's `configs/`, by name.

The repository keeps them in `configs/` (one copy); the wheel ships that folder inside
the package as `perturbed_layers/experiments/configs/` (`force-include` in
`pyproject.toml`), so `perturbed-layers train quickstart` works from an installed wheel
as `perturbed-layers train configs/quickstart.yaml` does in a clone.
"""

import pathlib

from ._config import ConfigError

_PACKAGED = pathlib.Path(__file__).resolve().parent / "configs"  # in a wheel
_CHECKOUT = pathlib.Path(__file__).resolve().parents[2] / "configs"  # in a clone


def configs_folder() -> pathlib.Path | None:
    """Where the built-in configs are: inside the installed package, or else in the
    checkout this package is imported from (an editable install)."""
    for folder in (_PACKAGED, _CHECKOUT):
        if folder.is_dir() and any(folder.glob("*.yaml")):
            return folder
    return None


def builtin_configs() -> dict[str, pathlib.Path]:
    """The built-in configs, name → file, sorted by name."""
    folder = configs_folder()
    paths = sorted(folder.glob("*.yaml")) if folder is not None else []
    return {path.stem: path for path in paths}


def describe_config(path: pathlib.Path, width: int = 100) -> str:
    """The first sentence of a config's opening comment (what it is for), cut to
    `width` characters; '' without a comment."""
    words: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        words += line.lstrip("#").split()
    text = " ".join(words)
    end = text.find(". ")
    text = text[: end + 1] if end >= 0 else text
    return text if len(text) <= width else text[: width - 1] + "…"


def _resolve(
    argument: str | pathlib.Path, builtin: dict[str, pathlib.Path], what: str
) -> pathlib.Path:
    """A file, or else the built-in `what` of that name (with or without `.yaml`)."""
    path = pathlib.Path(argument)
    if path.is_file():
        return path
    name = path.name.removesuffix(".yaml") if path.parent == pathlib.Path() else None
    if name in builtin:
        return builtin[name]
    names = ", ".join(builtin) or "none found (a broken installation?)"
    where = "no such file" if not path.exists() else "not a file"
    raise ConfigError(f"{argument}: {where}, and not a built-in {what}; built-in "
                      f"{what}s: {names}")  # fmt: skip


def resolve_config(argument: str | pathlib.Path) -> pathlib.Path:
    """The config file a command-line argument names: a file, or else a built-in
    config's name (`quickstart`, or `quickstart.yaml`).

    **Raises:** `ConfigError` listing the built-in names if it is neither.
    """
    try:
        return _resolve(argument, builtin_configs(), "config")
    except ConfigError as error:
        raise ConfigError(f"{error} (perturbed-layers configs lists them)") from None


def builtin_comparisons() -> dict[str, pathlib.Path]:
    """The built-in comparison files (`configs/compare/`), name → file."""
    folder = configs_folder()
    paths = sorted((folder / "compare").glob("*.yaml")) if folder is not None else []
    return {path.stem: path for path in paths}


def resolve_comparison(argument: str | pathlib.Path) -> pathlib.Path:
    """The comparison file a command-line argument names: a file, or else a
    built-in comparison's name (`shortest_path`).

    **Raises:** `ConfigError` listing the built-in names if it is neither.
    """
    return _resolve(argument, builtin_comparisons(), "comparison")
