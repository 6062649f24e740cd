#!/usr/bin/env python
"""Every benchmark of issue 6 in one run: perturbed_layers against its peers.

Sections (`--only NAME ...` picks some):

- `accuracy`: relative error of the VJP of the perturbed argmax against the exact
  softmax Jacobian, B=32, n=10, σ=0.5, Gumbel, M ∈ {100, 1000}, mean over 20 keys;
  ours vs optax (whole batch / vmapped per row) and jaxopt (whole / vmapped); also
  ablation variants of our estimator (information only, in no target; --quick: the
  chunked one at M=1000), and checks that chunked and unchunked, and
  pl.make_perturbed_fun and optax, give the same gradients from the same samples.
- `timing`: forward+gradient wall time over B ∈ {1, 32, 256}, n ∈ {10, 100, 1000},
  M ∈ {100, 1000} (a subset with --quick), and the noise-draw floor (B·n·M Gumbel
  values alone) where B·n·M ≥ 10⁷.
- `memory`: peak memory of jit(grad) at M = 100,000, B = 32, n = 1000: ours with
  chunk_size=500 run in a subprocess (peak RSS, or device peak on an accelerator),
  and XLA's compiled memory analysis of every contender.
- `fy`: the Fenchel–Young loss step against the layer's forward+gradient.
- `shortest_path`: solves per second on 12×12 grids (32 × M=10 instances per call)
  against SciPy's Dijkstra looping over instances, and how both grow with the side.
- `pyepo`: PyEPO's 5×5 shortest path with its perturbedFenchelYoung (Gurobi) against
  ours, seconds per epoch and test normalised regret (bench/pyepo_compare.py).
- `scaling`: time against M and against B, log-log, ours, optax and jaxopt.

Contenders are timed interleaved (every repetition times each once, in a rotated
order); results are medians with min and max, and ratios are medians of per-repetition
(paired) ratios. Output: bench/results/<date>-<device>[-quick].json, a Markdown table
of target / measured / met (.md beside it) and PNG plots (log-log scaling curves).
Compiled programs are cached on disk (JAX's persistent compilation cache, see
--compile-cache) so a second run skips most compile time; run time is unaffected.

Layout: this file reads the command line, sets the compilation cache and runs the
sections; each section is one module (accuracy.py, timing.py, fy.py, scaling.py,
memory.py, shortest_path.py, pyepo_compare.py) on the timing harness of _common.py
and the contenders of core.py; targets.py computes the table of targets and
report.py writes the Markdown report and the plots.

Usage: python bench/run.py [--quick] [--only NAME ...] [--out DIR] [--readme]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Section names (for --only), in the order they run.
SECTIONS = (
    "accuracy",
    "timing",
    "fy",
    "scaling",
    "memory",
    "shortest_path",
    "pyepo",
)
DEFAULT_CACHE = Path.home() / ".cache" / "perturbed_layers" / "bench-jax"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick", action="store_true", help="a subset, < 5 minutes on 2 cores"
    )
    p.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        default=None,
        metavar="NAME",
        help=f"sections to run, of {', '.join(SECTIONS)}",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent / "results",
        help="output directory (default bench/results)",
    )
    p.add_argument("--repeats", type=int, default=None, help="timing repetitions")
    p.add_argument(
        "--pyepo-epochs", type=int, default=None, help="default 3 (quick) / 20"
    )
    p.add_argument(
        "--readme", action="store_true", help="put the table into bench/README.md"
    )
    p.add_argument(
        "--compile-cache",
        default=None,
        metavar="DIR",
        help=f"JAX persistent compilation cache (default {DEFAULT_CACHE})",
    )
    p.add_argument(
        "--no-compile-cache", action="store_true", help="compile everything afresh"
    )
    p.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def configure_compile_cache(args: argparse.Namespace) -> str | None:
    """Set JAX's persistent compilation cache through the environment, before jax is
    imported (the memory section's subprocess inherits it)."""
    if args.no_compile_cache:
        return None
    os.environ.setdefault(
        "JAX_COMPILATION_CACHE_DIR", args.compile_cache or str(DEFAULT_CACHE)
    )
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
    return os.environ["JAX_COMPILATION_CACHE_DIR"]


def sections(args: argparse.Namespace, repeats: int) -> dict[str, Callable[[], Any]]:
    """Each section's run, by name. A section's module is imported when it runs: jax
    must not be imported before the compilation cache is set, and a section whose
    peer does not import (SciPy, PyEPO, the experiments extra) fails alone."""

    def section(module: str, fn: str, *a: Any, **kw: Any) -> Callable[[], Any]:
        return lambda: getattr(importlib.import_module(module), fn)(*a, **kw)

    import _common as C

    return {
        "accuracy": section("accuracy", "run", args.quick),
        "timing": section("timing", "run", args.quick, repeats),
        "fy": section("fy", "run", repeats),
        "scaling": section("scaling", "run", args.quick, repeats),
        "memory": section("memory", "run", args.quick),
        "shortest_path": section("shortest_path", "section", args.quick, repeats),
        "pyepo": section(
            "pyepo_compare",
            "run",
            quick=args.quick,
            epochs=args.pyepo_epochs,
            variants=not args.quick,
            log_fn=C.log,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cache_dir = configure_compile_cache(args)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _common as C

    C.setup_path()
    import core

    if args.mem_child is not None:
        import memory

        memory.child(json.loads(args.mem_child))
        return

    import report
    import targets

    names = args.only or list(SECTIONS)
    repeats = args.repeats or (3 if args.quick else 5)
    tag = C.device_tag()
    stem = (
        f"{C.today()}-{tag}"
        + ("-quick" if args.quick else "")
        + ("-partial" if args.only else "")
    )
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    res: dict[str, Any] = {
        "benchmark": "bench/run.py (issue 6)",
        "date": C.today(),
        "started": C.now_iso(),
        "device_tag": tag,
        "quick": args.quick,
        "partial": bool(args.only),
        "sections": names,
        "argv": sys.argv[1:] if argv is None else argv,
        "env": C.env_info(),
        "versions": C.versions(),
        "git": C.git_state(),
        "compile_cache": cache_dir,
        "load_avg_start": C.load_avg(),
        "jaxopt": core.jaxopt_status(),
        "targets_spec": targets.SPEC,
    }
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"

    def save() -> None:
        res["targets"] = targets.targets_table(res, SECTIONS)
        res["load_avg_end"] = C.load_avg()
        res["elapsed_s"] = time.perf_counter() - C.T0
        C.write_json(json_path, res)

    C.log(
        f"device {tag} ({res['env']['device']}), sections {names}, "
        f"compile cache {cache_dir}"
    )
    if not res["jaxopt"]["ok"]:
        C.log(f"jaxopt: {res['jaxopt']['reason']}")

    runs = sections(args, repeats)
    for name in (name for name in SECTIONS if name in names):
        C.log(f"== {name}")
        t0 = time.perf_counter()
        try:
            res[name] = runs[name]()
        except Exception as e:  # one failing section must not lose the others
            traceback.print_exc()
            res[name] = {"error": f"{type(e).__name__}: {e}"}
        res.setdefault("section_seconds", {})[name] = time.perf_counter() - t0
        save()

    pngs = report.write_plots(res, out_dir, stem)
    res["plots"] = pngs
    save()
    md = report.render(res, pngs)
    md_path.write_text(md)
    if args.readme and report.update_readme(md, md_path.name):
        C.log("updated bench/README.md")
    C.log(f"done in {res['elapsed_s']:.0f} s; wrote {json_path}, {md_path}")
    print()
    print(report.render_targets(res["targets"]))


if __name__ == "__main__":
    main()
