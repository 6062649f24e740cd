"""Experiment configs: a typed schema, YAML files and `key.path=value` overrides.

A config has one group per concern, each naming an entry of a registry and giving its
options:

```yaml
data: {name: pyepo_shortest_path, deg: 4}     # DATASETS
model: {name: linear}                        # MODELS
layer: {name: pyepo_shortest_path, num_samples: 3, sigma: 1.0}   # LAYERS (+ NOISES)
loss: {name: fenchel_young}                  # LOSSES
optimizer: {name: adam, learning_rate: 1.0e-2}                   # OPTIMIZERS
training: {epochs: 20, batch_size: 32, seed: 0}
mesh: {data: auto, samples: 1}               # optional: devices (see _parallel.py)
distributed: {initialize: auto}              # optional: jax.distributed
```

**Why pydantic (v2).** The schema is plain, type-checked Python: one model class per
registry entry, holding its options' types, defaults, constraints (`gt=0`) and
documentation together, next to the `build` method that uses them. The registries
*are* the schema: each group is a union of its registry's classes discriminated by
`name`, generated from the registry dicts when a config is loaded, so adding an entry to
a registry is enough to use it from YAML. Strict mode refuses `"4"` for an int or
`true` for a float, `extra="forbid"` refuses misspelt keys, and every error carries its
location, which becomes the dotted key path in our messages. OmegaConf's structured
configs would give merging and interpolation, which we do not need, but not unions of
option classes chosen by a field, nor value constraints; hand-written checks would
drift from the code.

**Errors.** Everything is checked before anything is built or trained: unknown keys,
wrong types, missing required values, unknown registry names (answered with the valid
ones), bad overrides, and a layer that does not fit the dataset. A `ConfigError` lists
each problem as `FILE: dotted.key: message`.

**YAML.** Files are data, read by a bounded safe loader (`_yaml.py`: size, depth and
alias expansion bounded, duplicate keys refused, UTF-8 only, YAML 1.2 floats such as
`1e-2`); override values are parsed by the same loader as YAML scalars (`3`, `0.5`,
`1.5e3`, `true`, `null`, `adam`). Values quoted in error messages are cut short.
"""

import copy
import pathlib
import re
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
)

from ._options import (
    DataOptions,
    LayerOptions,
    LossOptions,
    ModelOptions,
    OptimizerOptions,
    Options,
    PositiveInt,
    describe,
)
from ._parallel import DistributedOptions, MeshOptions
from ._registry import DATASETS, LAYERS, LOSSES, MODELS, OPTIMIZERS
from ._yaml import MAX_BYTES, YAMLLimitError, decode, load_yaml, short


class ConfigError(ValueError):
    """An invalid config: the message names the file and each bad key's dotted path."""


class TrainingOptions(BaseModel):
    """`training:` the loop's options (not a registry)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    epochs: PositiveInt = Field(description="number of passes over the training set")
    batch_size: PositiveInt = Field(
        description="instances per step (the last partial batch of an epoch is dropped)"
    )
    seed: int = Field(0, description="model initialisation, data order and noise")
    eval_batch_size: PositiveInt = Field(
        250, description="test instances per evaluation call"
    )
    checkpoint_every: PositiveInt = Field(
        1, description="epochs between checkpoints (and always the last)"
    )
    steps_per_call: PositiveInt = Field(
        1,
        description="training steps per compiled call: above 1, a fori_loop over "
        "the step, which saves dispatch time on small models (PyEPO's linear model: "
        "3x) but slows convolutions on XLA:CPU (the quickstart's conv net: 6x)",
    )


class Config(BaseModel):
    """A resolved experiment config. Build one with `load_config` or `config_from_dict`
    (which validate each group against its registry entry)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    name: str = Field(
        description="run name, the run folder's prefix (default: the config file's "
        "stem); a name, not a path"
    )
    data: DataOptions
    model: ModelOptions
    layer: LayerOptions
    loss: LossOptions
    optimizer: OptimizerOptions
    training: TrainingOptions
    mesh: MeshOptions = MeshOptions()
    distributed: DistributedOptions = DistributedOptions()

    @field_validator("name")
    @classmethod
    def _a_name(cls, name: str) -> str:
        # The run folder is runs/<name>-<timestamp>: a path here would put it
        # anywhere (name=/abs/path, name=../x).
        if not _NAME.fullmatch(name):
            raise ValueError(
                f"a run name is a name, not a path: 1 to 100 letters, digits, '_', "
                f"'-', '.' or '+', starting with a letter, digit or '_'; got "
                f"{short(name)} (set name: in the config or override name=...)"
            )
        return name


_NAME = re.compile(r"\w[\w.+-]{0,99}")


def registries() -> dict[str, Mapping[str, type[Options]]]:
    """The registry of each config group, by group name."""
    return {
        "data": DATASETS,
        "model": MODELS,
        "layer": LAYERS,
        "loss": LOSSES,
        "optimizer": OPTIMIZERS,
    }


_SCHEMAS: dict[tuple, type[Config]] = {}


def config_schema() -> type[Config]:
    """`Config` with each group a union of its registry's entries, chosen by `name`
    (built once per state of the registries, so equal configs have the same class)."""
    state = tuple((group, tuple(r.items())) for group, r in registries().items())
    if state not in _SCHEMAS:
        fields: dict[str, Any] = {}
        for group, registry in registries().items():
            union = typing.Union[tuple(registry.values())]  # noqa: UP007 (run time)
            fields[group] = (Annotated[union, Field(discriminator="name")], ...)
        _SCHEMAS[state] = create_model("Config", __base__=Config, **fields)
    return _SCHEMAS[state]


# ------------------------------------------------------------------ overrides


def apply_overrides(
    raw: dict, overrides: Iterable[str], source: str
) -> tuple[dict, dict[str, str]]:
    """Apply `key.path=value` overrides to a raw config (a copy is returned), and
    the dotted path each override set."""
    raw = copy.deepcopy(raw)  # plain, bounded data (load_yaml)
    applied: dict[str, str] = {}
    for text in overrides:
        key, sep, value_text = text.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(part.isidentifier() for part in parts):
            raise ConfigError(
                f"{source}: bad override {short(text)}: expected key.path=value, e.g. "
                "training.epochs=5"
            )
        try:
            value = load_yaml(value_text)
        except (yaml.YAMLError, YAMLLimitError) as error:
            raise ConfigError(
                f"{source}: {key}: bad override {short(text)}: value is not YAML "
                f"({_first_line(error)})"
            ) from None
        if isinstance(value, dict | list):
            raise ConfigError(
                f"{source}: {key}: bad override {short(text)}: the value must be a "
                "YAML scalar (a number, a string, true/false or null)"
            )
        raw = set_key(
            raw,
            key.strip(),
            value,
            f"{source}: {key}: bad override {short(text)}",
            copy_raw=False,
        )
        applied[key.strip()] = text
    return raw, applied


def set_key(
    raw: dict, key: str, value: Any, where: str, *, copy_raw: bool = True
) -> dict:
    """`raw` (a copy, unless `copy_raw=False`) with the dotted `key` set to `value`,
    creating groups on the way.

    **Raises:** `ConfigError` prefixed by `where` if a key on the way holds a value
    rather than a group of keys.
    """
    if copy_raw:
        raw = copy.deepcopy(raw)  # plain, bounded data (load_yaml)
    parts = key.split(".")
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            inside = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{where}: {inside} is {short(child)}, not a group of keys"
            )
        node = child
    node[parts[-1]] = value
    return raw


# --------------------------------------------------------------------- errors


def _locate(loc: Sequence[Any], raw: Any) -> list[str]:
    """The key path of a pydantic error location, without the union tags."""
    path: list[str] = []
    node = raw
    for part in loc:
        if isinstance(node, dict) and part in node:
            path.append(str(part))
            node = node[part]
        elif isinstance(node, dict) and node.get("name") == part:
            continue  # the tag pydantic adds for a discriminated union
        elif isinstance(node, dict) or node is _ABSENT:
            path.append(str(part))  # a key that is missing or not allowed
            node = _ABSENT
        else:
            break  # below a value: the member tags of a union (`int | "auto"`)
    return path


_ABSENT = object()


def _valid_keys(path: list[str], raw: dict) -> list[str]:
    """The keys allowed where an unknown key `path` was found."""
    if len(path) == 1:
        return list(Config.model_fields)
    group = path[0]
    plain = {
        "training": TrainingOptions,
        "mesh": MeshOptions,
        "distributed": DistributedOptions,
    }
    if group in plain:
        return list(plain[group].model_fields)
    entry = registries().get(group, {}).get(str(raw.get(group, {}).get("name")))
    return list(entry.model_fields) if entry is not None else []


def _message(error: Mapping[str, Any], raw: dict) -> tuple[str, str]:
    path = _locate(error["loc"], raw)
    kind, ctx = error["type"], error.get("ctx") or {}
    registry = registries().get(path[0], {}) if path else {}
    what = next(iter(registry.values())).kind if registry else "entry"
    if kind == "union_tag_invalid":
        return ".".join([*path, "name"]), (
            f"unknown {what} {short(ctx.get('tag'))}; valid names: {describe(registry)}"
        )
    if kind == "union_tag_not_found":
        return ".".join([*path, "name"]), (
            f"missing required value: the {what}'s name, one of {describe(registry)}"
        )
    if kind == "extra_forbidden":
        valid = ", ".join(_valid_keys(path, raw))
        return ".".join(path), f"unknown key (valid keys here: {valid})"
    if kind == "missing":
        return ".".join(path), "missing required value"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind != "value_error":
        message += f" (got {short(error.get('input'))})"
    return ".".join(path) or "<top level>", message


def _via(path: str, applied: Mapping[str, str]) -> str:
    """ " (set by override '...')" if an override set `path` or a key inside it."""
    via = [
        text
        for key, text in applied.items()
        if f"{path}.".startswith(f"{key}.") or key.startswith(f"{path}.")
    ]
    return f" (set by override {short(via[-1])})" if via else ""


def _format(
    error: ValidationError, raw: dict, source: str, applied: Mapping[str, str]
) -> str:
    messages: dict[str, list[str]] = {}  # a value failing each member of a union
    for item in error.errors():
        path, message = _message(item, raw)
        messages.setdefault(path, []).append(message)
    lines = [
        f"{source}: {path}: {'; or: '.join(texts)}{_via(path, applied)}"
        for path, texts in messages.items()
    ]
    return "invalid config:\n  " + "\n  ".join(lines)


# ---------------------------------------------------------------------- load


def config_from_dict(
    raw: Any, source: str = "<config>", overrides: Iterable[str] = ()
) -> Config:
    """Validate a raw config (plain data, e.g. from YAML) after applying overrides.

    **Raises:** `ConfigError` naming `source` and the dotted path of each bad key.
    """
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: a config is a mapping of groups (data, model, layer, loss, "
            f"optimizer, training; optional: mesh, distributed), got "
            f"{type(raw).__name__}"
        )
    raw, applied = apply_overrides(raw, overrides, source)
    raw.setdefault("name", pathlib.Path(source).stem)
    try:
        config = config_schema().model_validate(raw)
    except ValidationError as error:
        raise ConfigError(_format(error, raw, source, applied)) from None
    fits = type(config.data).layers
    if config.layer.name not in fits:
        raise ConfigError(
            f"{source}: layer.name: layer {config.layer.name!r} does not fit dataset "
            f"{config.data.name!r}; use one of {', '.join(map(repr, fits))}"
            + _via("layer.name", applied)
        )
    return config


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())[:300]


def read_yaml(path: str | pathlib.Path) -> Any:
    """The data of a YAML file, read within the bounds of `_yaml.py`.

    **Raises:** `ConfigError` naming the file and the cause (unreadable, too large,
    not UTF-8, not YAML, too deep, aliases expanding too far, a duplicate key).
    """
    source = str(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigError(
            f"{source}: cannot read the config: {error.strerror or error}"
        ) from None
    try:
        return load_yaml(decode(data))
    except YAMLLimitError as error:
        raise ConfigError(f"{source}: {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: not valid YAML: {error}") from None


def load_config(path: str | pathlib.Path, overrides: Iterable[str] = ()) -> Config:
    """Read a YAML config (as data: `read_yaml`), apply overrides, validate.

    The run name defaults to the file's stem.

    ```python
    from perturbed_layers.experiments import load_config

    config = load_config("configs/pyepo_shortest_path.yaml", ["training.epochs=2"])
    config.training.epochs  # 2
    ```
    """
    return config_from_dict(read_yaml(path), str(path), overrides)


def dump_config(config: Config) -> str:
    """The resolved config as YAML (every option, defaults included)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
