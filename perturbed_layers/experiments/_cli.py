"""The `perturbed-layers` command (also `python -m perturbed_layers`)."""

import argparse
import pathlib
import sys

from . import _run_guard as guard
from ._builtin import (
    builtin_configs,
    describe_config,
    resolve_comparison,
    resolve_config,
)
from ._compare import compare, describe_cells, load_comparison
from ._config import ConfigError, load_config
from ._evaluation import evaluate
from ._run_folder import RunFileError
from ._train import TrainingDiverged, train

_EPILOG = """\
examples:
  perturbed-layers configs                       # the built-in configs
  perturbed-layers configs quickstart > my.yaml  # one of them, to start from
  perturbed-layers train quickstart              # a built-in config, by name
  perturbed-layers train my.yaml --out runs/mine training.epochs=5
  perturbed-layers train my.yaml --out runs/mine --resume
  perturbed-layers compare shortest_path training.epochs=5   # methods x settings
  perturbed-layers evaluate runs/mine
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perturbed-layers",
        description="Train and evaluate models through perturbed optimizers with "
        "Fenchel-Young losses, from YAML configs.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train_parser = commands.add_parser(
        "train",
        help="train from a YAML config (a file, or a built-in config's name)",
        description="Train from a YAML config. The run folder gets run.json, the "
        "resolved config.yaml, metrics.jsonl, checkpoint.eqx, curves.png, "
        "examples.png and summary.json.",
        epilog="overrides are key.path=value pairs, values parsed as YAML scalars, "
        "e.g. training.epochs=5 layer.sigma=0.5 optimizer.name=sgd",
    )
    train_parser.add_argument(
        "config",
        help="the YAML config: a file, or the name of a built-in config "
        "(perturbed-layers configs lists them)",
    )
    train_parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="config overrides"
    )
    train_parser.add_argument(
        "--out",
        type=pathlib.Path,
        help="run folder: new or empty, or a run to --resume (default: "
        "runs/<name>-<timestamp>; with --resume, the newest run of that name)",
    )
    train_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run from its last checkpoint, with its own config",
    )
    train_parser.add_argument(
        "--allow-change",
        action="append",
        default=[],
        metavar="KEY",
        help="with --resume: let this key differ from the run's config (repeatable; "
        f"only {', '.join(guard.SAFE_CHANGES)}); recorded in run.json",
    )
    train_parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar"
    )
    configs_parser = commands.add_parser(
        "configs",
        help="list the built-in configs, or print one",
        description="Without a name, list the built-in configs; with one, print it "
        "(to start a new config from: perturbed-layers configs quickstart > my.yaml).",
    )
    configs_parser.add_argument("name", nargs="?", help="a built-in config's name")
    compare_parser = commands.add_parser(
        "compare",
        help="train a grid of methods x settings x seeds and tabulate the results",
        description="Run a comparison file (e.g. configs/compare/shortest_path.yaml): "
        "every method on every setting and seed, each a training run under "
        "OUT/runs/, then OUT/table.md, table.csv and regret.png.",
    )
    compare_parser.add_argument(
        "comparison", help="the comparison file, or a built-in one's name"
    )
    compare_parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value",
        help="overrides of every run's config, e.g. training.epochs=5",
    )  # fmt: skip
    compare_parser.add_argument(
        "--out", type=pathlib.Path,
        help="the comparison folder (default: runs/<name>-<timestamp>)",
    )  # fmt: skip
    compare_parser.add_argument(
        "--resume", action="store_true",
        help="skip the runs already done in --out, finish the others",
    )  # fmt: skip
    compare_parser.add_argument(
        "--pyepo", action="store_true",
        help="also run the file's pyepo: subset with PyEPO itself (needs the bench "
        "extra: PyEPO, PyTorch, Gurobi)",
    )  # fmt: skip
    evaluate_parser = commands.add_parser(
        "evaluate",
        help="evaluate a run folder's last checkpoint on its test set",
        description="Rebuild a run's data from its config.yaml, load its "
        "checkpoint.eqx, print the test metrics and write evaluation.json.",
    )
    evaluate_parser.add_argument("run", type=pathlib.Path, help="the run folder")
    return parser


def _configs(name: str | None) -> int:
    configs = builtin_configs()
    if name is None:
        width = max(map(len, configs), default=0)
        for config, path in configs.items():
            print(f"{config:<{width}}  {describe_config(path)}")
        print(
            "\nrun one: perturbed-layers train NAME; copy one: perturbed-layers "
            "configs NAME > my.yaml"
        )
        return 0
    if name.removesuffix(".yaml") not in configs:
        raise ConfigError(
            f"{name}: not a built-in config; built-in configs: {', '.join(configs)}"
        )
    sys.stdout.write(configs[name.removesuffix(".yaml")].read_text(encoding="utf-8"))
    return 0


def _train(args: argparse.Namespace) -> int:
    path = resolve_config(args.config)
    config = load_config(path, args.overrides)
    out = args.out
    if args.allow_change and not args.resume:
        raise guard.RunFolderError("--allow-change applies to --resume only")
    if out is None and args.resume:
        runs = guard.runs_of(config.name)
        if not runs:
            raise guard.RunFolderError(
                f"--resume: no run of {config.name!r} in runs/ (runs/{config.name}-"
                "<timestamp>); pass --out"
            )
        out = runs[-1]
        print(
            f"--resume: the newest of {len(runs)} run(s) of {config.name!r}: {out}",
            file=sys.stderr,
        )
    if out is None:
        out = guard.default_run_folder(config.name)
    return _interruptible(
        lambda: train(config, out, resume=args.resume, allow_changes=args.allow_change,
                      source=str(path), progress=not args.no_progress),
        f"train {args.config}", args.overrides, out,
    )  # fmt: skip


def _interruptible(run, command: str, overrides: list[str], out) -> int:
    """Run; on Ctrl-C, say how to resume and return 130."""
    try:
        run()
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: perturbed-layers {command} "
            f"{' '.join(overrides)} --out {out} --resume".replace("  ", " "),
            file=sys.stderr,
        )
        return 130
    return 0


def _compare(args: argparse.Namespace) -> int:
    path = resolve_comparison(args.comparison)
    comparison = load_comparison(path)
    out = args.out
    if out is None and args.resume:
        raise guard.RunFolderError("--resume: pass --out, the comparison's folder")
    if out is None:
        out = guard.default_run_folder(comparison.name)
    print(
        f"{path}: {describe_cells(comparison, pyepo=args.pyepo)}; folder {out}",
        file=sys.stderr,
    )
    return _interruptible(
        lambda: compare(path, out, overrides=args.overrides, resume=args.resume,
                        pyepo=args.pyepo),
        f"compare {args.comparison}", args.overrides, out,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success)."""
    parser = _parser()
    # Overrides may come after options (`train C.yaml --out D a.b=1`): argparse leaves
    # those to parse_known_args' extras.
    args, extra = parser.parse_known_args(argv)
    unknown = [
        item
        for item in extra
        if item.startswith("-") or args.command not in ("train", "compare")
    ]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "configs":
            return _configs(args.name)
        if args.command == "compare":
            return _compare(args)
        evaluate(args.run)
        return 0
    except (ConfigError, guard.RunFolderError, RunFileError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. a disk that fills up, a folder made read-only
        where = f"{error.filename}: " if error.filename else ""
        print(f"error: {where}{error.strerror or error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ImportError as error:  # compare --pyepo without the bench extra
        print(f"error: {error}", file=sys.stderr)
        return 2
