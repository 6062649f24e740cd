"""The `perturbed-layers` command (also `python -m perturbed_layers`)."""

import argparse
import pathlib
import sys

from . import _run_folder as files
from ._config import ConfigError, load_config
from ._evaluation import evaluate
from ._train import TrainingDiverged, train

_EPILOG = """\
examples:
  perturbed-layers train configs/quickstart.yaml
  perturbed-layers train configs/pyepo_shortest_path.yaml --out runs/pyepo data.deg=2
  perturbed-layers train configs/pyepo_shortest_path.yaml --out runs/pyepo --resume
  perturbed-layers evaluate runs/pyepo
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
        help="train from a YAML config",
        description="Train from a YAML config. The run folder gets the resolved "
        "config, metrics.jsonl, checkpoint.eqx, curves.png, examples.png and "
        "summary.json.",
        epilog="overrides are key.path=value pairs, values parsed as YAML scalars, "
        "e.g. training.epochs=5 layer.sigma=0.5 optimizer.name=sgd",
    )
    train_parser.add_argument("config", type=pathlib.Path, help="the YAML config file")
    train_parser.add_argument(
        "overrides", nargs="*", metavar="key.path=value", help="config overrides"
    )
    train_parser.add_argument(
        "--out",
        type=pathlib.Path,
        help="run folder (default: runs/<config name>-<timestamp>; with --resume, "
        "the newest runs/<config name>-* folder)",
    )
    train_parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its last checkpoint",
    )
    train_parser.add_argument(
        "--no-progress", action="store_true", help="no progress bar"
    )
    evaluate_parser = commands.add_parser(
        "evaluate",
        help="evaluate a run folder's last checkpoint on its test set",
        description="Rebuild a run's data from its config.yaml, load its "
        "checkpoint.eqx, print the test metrics and write evaluation.json.",
    )
    evaluate_parser.add_argument("run", type=pathlib.Path, help="the run folder")
    return parser


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    out = args.out
    if out is None and args.resume:
        out = files.latest_run_folder(config.name)
        if out is None:
            print(
                f"error: --resume: no runs/{config.name}-* folder with a checkpoint; "
                "pass --out",
                file=sys.stderr,
            )
            return 2
    if out is None:
        out = files.default_run_folder(config.name)
    try:
        train(
            config,
            out,
            resume=args.resume,
            source=str(args.config),
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; continue with: perturbed-layers train {args.config} "
            f"{' '.join(args.overrides)} --out {out} --resume".replace("  ", " "),
            file=sys.stderr,
        )
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status (0 on success)."""
    parser = _parser()
    # Overrides may come after options (`train C.yaml --out D a.b=1`): argparse leaves
    # those to parse_known_args' extras.
    args, extra = parser.parse_known_args(argv)
    unknown = [
        item for item in extra if item.startswith("-") or args.command != "train"
    ]
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    try:
        if args.command == "train":
            return _train(args)
        evaluate(args.run)
        return 0
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except (FileExistsError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
