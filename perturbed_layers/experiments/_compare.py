"""`perturbed-layers compare`: a grid of methods × settings × seeds on one problem.

A comparison file names a training config (`base`) and says what varies:

```yaml
name: compare_shortest_path
base: pyepo_shortest_path          # a built-in config, or a file next to this one
overrides: {training.epochs: 10}   # applied to every cell
settings:                          # every combination of these values
  data.deg: [1, 2, 4, 6]
  data.num_data: [1100, 2000]      # 100 and 1000 training points (1000 test)
seeds: [0, 1, 2]                   # each cell once per seed ...
seed_keys: [data.seed, training.seed]   # ... written to these keys
methods:                           # each method: overrides of the base config
  two_stage: {loss.name: regression}
  spo_plus: {loss.name: spo_plus}
pyepo:                             # optional: PyEPO itself on a subset (--pyepo)
  methods: [spo_plus]
  settings: {data.deg: [4], data.num_data: [2000]}
  seeds: [0]
  front_ends: [torch]
```

Every cell's config is built and validated before the first one trains, so a bad key
fails at once, naming this file, the method or setting and the key. Each cell trains
as `perturbed-layers train` would, into its own run folder under `OUT/runs/`, and
appends one line to `OUT/results.jsonl` (method, setting, seed, the task's headline
metric, seconds); cells already there are skipped on `--resume`, and a cell cut short
resumes from its checkpoint. The table (`table.md`) and the figure (`regret.png`) are
made from `results.jsonl` (`_compare_report.py`).

PyEPO's side (`_pyepo_peer.train_pyepo`: PyEPO's own training loop and Gurobi on the
same data, seeds and hyperparameters) runs only with `--pyepo`, on the `pyepo:` subset.
"""

import itertools
import json
import pathlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from . import _run_folder as files, _run_guard as guard
from ._builtin import resolve_config
from ._config import (
    Config,
    ConfigError,
    config_from_dict,
    read_yaml,
    set_key,
)
from ._train import train
from ._yaml import short

Scalar = str | int | float | bool | None

COMPARE = "comparison.json"
RESULTS = "results.jsonl"


class PyEPOSubset(BaseModel):
    """`pyepo:` the part of the grid that PyEPO itself also runs (with `--pyepo`)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    methods: list[str] = Field(min_length=1)
    settings: dict[str, list[Scalar]] = {}
    seeds: list[int] = Field(min_length=1)
    front_ends: list[Literal["torch", "jax"]] = Field(["torch"], min_length=1)


class Comparison(BaseModel):
    """A comparison file, validated (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    name: str
    base: str = Field(description="a built-in config's name, or a file")
    overrides: dict[str, Scalar] = {}
    settings: dict[str, list[Scalar]] = {}
    seeds: list[int] = Field([0], min_length=1)
    seed_keys: list[str] = ["data.seed", "training.seed"]
    methods: dict[str, dict[str, Scalar]] = Field(min_length=1)
    pyepo: PyEPOSubset | None = None

    @model_validator(mode="after")
    def _subset(self) -> "Comparison":
        keyed = {
            "overrides": list(self.overrides),
            "settings": list(self.settings),
            "seed_keys": self.seed_keys,
            **{f"methods.{m}": list(o) for m, o in self.methods.items()},
        }
        for where, keys in keyed.items():
            for key in keys:
                if not all(part.isidentifier() for part in key.split(".")):
                    raise ValueError(
                        f"{where}: {key!r} is not a config key (group.key, e.g. "
                        "loss.name)"
                    )
        for key, values in self.settings.items():
            if not values:
                raise ValueError(f"settings.{key}: give at least one value")
        if self.pyepo is None:
            return self
        for method in self.pyepo.methods:
            if method not in self.methods:
                raise ValueError(
                    f"pyepo.methods: {method!r} is not one of methods "
                    f"({', '.join(self.methods)})"
                )
        for key, values in self.pyepo.settings.items():
            if key not in self.settings:
                raise ValueError(
                    f"pyepo.settings.{key}: not a key of settings "
                    f"({', '.join(self.settings) or 'none'})"
                )
            extra = [v for v in values if v not in self.settings[key]]
            if extra:
                raise ValueError(
                    f"pyepo.settings.{key}: {extra} not among settings.{key}"
                )
        extra_seeds = [s for s in self.pyepo.seeds if s not in self.seeds]
        if extra_seeds:
            raise ValueError(f"pyepo.seeds: {extra_seeds} not among seeds")
        return self


class Cell(BaseModel):
    """One training run of the grid: which side, method, setting and seed."""

    model_config = ConfigDict(frozen=True)
    side: str
    method: str
    setting: dict[str, Scalar]
    seed: int

    @property
    def key(self) -> str:
        return json.dumps([self.side, self.method, self.setting, self.seed])

    @property
    def folder(self) -> str:
        values = "-".join(f"{k.split('.')[-1]}={v}" for k, v in self.setting.items())
        return f"runs/{self.method}/{values or 'base'}-seed{self.seed}"


def load_comparison(path: str | pathlib.Path) -> Comparison:
    """Read and validate a comparison file (as data, like a config).

    **Raises:** `ConfigError` naming the file and the key.
    """
    raw = read_yaml(path)
    if isinstance(raw, dict):
        raw.setdefault("name", pathlib.Path(path).stem)
    try:
        return Comparison.model_validate(raw)
    except ValidationError as error:
        lines = [
            f"{path}: {'.'.join(map(str, e['loc'])) or '<top level>'}: "
            + str(e["msg"]).removeprefix("Value error, ")
            for e in error.errors()
        ]
        raise ConfigError("invalid comparison:\n  " + "\n  ".join(lines)) from None


def _grid(settings: Mapping[str, list[Scalar]]) -> Iterator[dict[str, Scalar]]:
    keys = list(settings)
    for values in itertools.product(*(settings[k] for k in keys)):
        yield dict(zip(keys, values, strict=True))


def cells(comparison: Comparison, *, pyepo: bool) -> list[Cell]:
    """Every cell: ours over the whole grid, then PyEPO's subset if `pyepo`."""
    out = [
        Cell(side="ours", method=method, setting=setting, seed=seed)
        for method in comparison.methods
        for setting in _grid(comparison.settings)
        for seed in comparison.seeds
    ]
    if pyepo and comparison.pyepo is not None:
        subset = {**comparison.settings, **comparison.pyepo.settings}
        out += [
            Cell(side=f"pyepo-{front_end}", method=method, setting=setting, seed=seed)
            for front_end in comparison.pyepo.front_ends
            for method in comparison.pyepo.methods
            for setting in _grid(subset)
            for seed in comparison.pyepo.seeds
        ]
    return out


def cell_config(
    comparison: Comparison, cell: Cell, base: dict, source: str, overrides: list[str]
) -> Config:
    """The training config of one cell: the base, the comparison's and the command
    line's overrides, the method's, the setting's, then the seed."""
    raw = base
    layers: list[tuple[str, Mapping[str, Scalar]]] = [
        ("overrides", comparison.overrides),
        (f"methods.{cell.method}", comparison.methods[cell.method]),
        ("settings", cell.setting),
        ("seed_keys", dict.fromkeys(comparison.seed_keys, cell.seed)),
    ]
    for where, values in layers:
        for key, value in values.items():
            raw = set_key(raw, key, value, f"{source}: {where}.{key}")
    name = f"{comparison.name}-{cell.method}"
    where = f"{source} [{cell.method}, {_label(cell.setting)}, seed {cell.seed}]"
    return config_from_dict({**raw, "name": name}, where, overrides)


def compare(
    path: str | pathlib.Path,
    out: str | pathlib.Path,
    *,
    overrides: list[str] = (),  # type: ignore[assignment]
    resume: bool = False,
    pyepo: bool = False,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run the comparison in file `path` into the folder `out`; return the results.

    **Arguments:**

    - `path`: the comparison file (see the module docstring).
    - `out`: the comparison folder: new or empty, or with `resume` one of ours.
    - `overrides`: `key.path=value` overrides applied to every cell's config.
    - `resume`: skip the cells already in `out/results.jsonl`, finish the others.
    - `pyepo`: also run the `pyepo:` subset with PyEPO itself (needs the bench extra:
      PyEPO, PyTorch, Gurobi).
    - `log`: where the one-line-per-cell report goes.

    **Raises:** `ConfigError` before anything trains, `RunFolderError` for a folder
    that is not new, empty or (with `resume`) a comparison of the same file.
    """
    from ._compare_report import write_report

    source = str(path)
    comparison = load_comparison(path)
    beside = pathlib.Path(path).parent / comparison.base
    base = read_yaml(beside if beside.is_file() else resolve_config(comparison.base))
    todo = cells(comparison, pyepo=pyepo)
    if pyepo and comparison.pyepo is None:
        raise ConfigError(f"{source}: --pyepo: the file has no pyepo: section")
    configs = {c.key: cell_config(comparison, c, base, source, overrides) for c in todo}
    out = pathlib.Path(out)
    done = _open(out, comparison, list(overrides), resume)
    results = list(done.values())
    runner = None
    for i, cell in enumerate(todo, 1):
        if cell.key in done:
            continue
        config, folder = configs[cell.key], out / cell.folder
        tic = time.perf_counter()
        if cell.side == "ours":
            again = folder.is_dir() and guard.is_run(folder)
            summary = train(
                config, folder, resume=again, source=source, progress=False,
                log=_quiet, plots=False,
            )  # fmt: skip
            headline = next(k for k in summary if k.startswith("test_"))
            epochs, _ = files.read_metrics(folder / files.METRICS)
            metrics = {
                "metric": headline.removeprefix("test_"),
                "value": summary[headline],
                # The first epoch's time includes compiling the step.
                "train_seconds": sum(r.get("train_seconds", 0.0) for r in epochs),
            }
        else:
            if runner is None:
                from ._pyepo_peer import train_pyepo as runner
            front_end = cell.side.removeprefix("pyepo-")
            peer = runner(config, front_end=front_end)  # type: ignore[arg-type]
            metrics = {
                "metric": "normalized_regret",
                "value": peer["normalized_regret"],
                "train_seconds": peer["train_seconds"],
            }
        record = {
            "epoch": i,  # the cell's place in the grid (read_metrics needs it)
            **json.loads(cell.model_dump_json()),
            "n_train": _n_train(config),
            **metrics,
            "wall_seconds": time.perf_counter() - tic,
            "run": cell.folder if cell.side == "ours" else None,
        }
        files.append_metrics(out / RESULTS, record)
        results.append(record)
        log(
            f"[{i}/{len(todo)}] {cell.side} {cell.method} {_label(cell.setting)} "
            f"seed {cell.seed}: {record['metric']} {record['value']:.4f} "
            f"({record['wall_seconds']:.1f} s)"
        )
    write_report(comparison, results, out)
    log(f"table: {out / 'table.md'}; figure: {out / 'regret.png'}")
    return results


def _n_train(config: Config) -> int | None:
    """Training points of a generated dataset (PyEPO's: num_data − test_size)."""
    total, test = (getattr(config.data, k, None) for k in ("num_data", "test_size"))
    return total - test if isinstance(total, int) and isinstance(test, int) else None


def _label(setting: Mapping[str, Scalar]) -> str:
    return " ".join(f"{k.split('.')[-1]}={v}" for k, v in setting.items()) or "base"


def _quiet(message: str) -> None:
    del message


def _open(
    out: pathlib.Path, comparison: Comparison, overrides: list[str], resume: bool
) -> dict[str, dict]:
    """Check the comparison folder; the results already in it, by cell key."""
    spec = json.dumps(
        {"comparison": comparison.model_dump(mode="json"), "overrides": overrides},
        indent=2,
    )
    saved = out / COMPARE
    if out.exists() and not out.is_dir():
        raise guard.RunFolderError(f"--out {out}: is a file, not a folder")
    if resume:
        if not saved.is_file():
            raise guard.RunFolderError(f"--resume: {out} holds no comparison")
        if saved.read_text(encoding="utf-8") != spec:
            raise guard.RunFolderError(
                f"--resume: {out} holds a different comparison ({saved}); the file "
                "changed since: start a new folder"
            )
        records, torn = files.read_metrics(out / RESULTS)
        if torn:
            files.write_metrics(out / RESULTS, records)
        return {
            json.dumps([r["side"], r["method"], r["setting"], r["seed"]]): r
            for r in records
        }
    if out.is_dir() and any(out.iterdir()):
        what = "a comparison: pass --resume" if saved.is_file() else "other files"
        raise guard.RunFolderError(f"--out {out}: the folder holds {what}")
    out.mkdir(parents=True, exist_ok=True)
    files.write_text(saved, spec)
    return {}


def describe_cells(comparison: Comparison, *, pyepo: bool) -> str:
    """How many runs the comparison makes, for the command line."""
    todo = cells(comparison, pyepo=pyepo)
    ours = sum(c.side == "ours" for c in todo)
    return (
        f"{len(comparison.methods)} methods x "
        f"{len(list(_grid(comparison.settings)))} settings x "
        f"{len(comparison.seeds)} seeds = {ours} runs"
        + (f", and {len(todo) - ours} with PyEPO" if len(todo) > ours else "")
        + f" ({short(comparison.base)})"
    )
