"""The timing harness every benchmark in bench/ shares: interleaved timing, compiled
programs, memory (in a subprocess), the run's metadata, and table formatting.

Conventions:
- Contenders are timed *interleaved*: every repetition times each contender once, in
  a rotated order, so that machine noise (other processes, thermal state) hits them
  alike. Summaries are medians with min and max over repetitions.
- Compiled functions are built ahead of time (`jax.jit(f).lower(...).compile()`), so
  compile time and XLA's memory analysis are recorded apart from run time.
"""

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "bench" / "results"
# Start of the run, for the elapsed time in `log` lines.
T0 = time.perf_counter()


def setup_path() -> None:
    """Make the package importable from the repository without installing it."""
    root = str(REPO_ROOT)
    if root not in sys.path:
        sys.path.insert(0, root)


def log(msg: str) -> None:
    """A progress line: wall-clock time and seconds since the run started."""
    print(
        f"[{time.strftime('%H:%M:%S')} +{time.perf_counter() - T0:5.0f}s] {msg}",
        flush=True,
    )


# ------------------------------------------------------------------ statistics


def summarize(samples: Sequence[float]) -> dict[str, Any]:
    """Median, min, max, mean and the raw samples."""
    xs = [float(x) for x in samples]
    return {
        "median": statistics.median(xs),
        "min": min(xs),
        "max": max(xs),
        "mean": statistics.fmean(xs),
        "n": len(xs),
        "samples": xs,
    }


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Summary of the per-repetition ratios a_r / b_r (interleaved, hence paired)."""
    return summarize([x / y for x, y in zip(a, b, strict=True)])


# ---------------------------------------------------------------------- timing


def block(x: Any) -> Any:
    import jax

    return jax.block_until_ready(x)


def time_interleaved(
    fns: Mapping[str, Callable[[], Any]],
    *,
    repeats: int,
    min_sample_s: float = 0.1,
    budget_s: float | None = None,
    min_repeats: int = 3,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Time zero-argument callables (each returning JAX arrays), interleaved.

    Each contender is warmed up (one call; a second one if the first is short, used to
    calibrate). A sample is the mean time of `inner` back-to-back calls, `inner` chosen
    so that a sample lasts at least `min_sample_s`. Every repetition takes one sample
    of each contender, the order rotated by one each time. If `budget_s` is given the
    number of repetitions is cut (not below `min_repeats`) to fit that estimate.

    Returns {"repeats", "per_contender": {name: wall-clock summary in seconds per
    call, plus inner, warm_s and cpu_s (process CPU time per call, all threads: less
    sensitive than wall time to other tenants of a shared machine)}}.
    """
    names = list(fns)
    warm: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        block(fns[name]())
        first = time.perf_counter() - t0
        if first < 0.5:
            t0 = time.perf_counter()
            block(fns[name]())
            first = time.perf_counter() - t0
        warm[name] = first
    inner = {n: max(1, math.ceil(min_sample_s / max(warm[n], 1e-9))) for n in names}
    est_round = sum(inner[n] * warm[n] for n in names)
    if budget_s is not None and est_round > 0:
        fit = int(budget_s // est_round)
        repeats = max(min(repeats, min_repeats), min(repeats, fit))
    samples: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            fn, k = fns[name], inner[name]
            c0, t0 = time.process_time(), time.perf_counter()
            outs = [fn() for _ in range(k)]
            block(outs)
            samples[name].append((time.perf_counter() - t0) / k)
            cpu[name].append((time.process_time() - c0) / k)
            del outs
        if log is not None:
            done = ", ".join(f"{n}={samples[n][-1] * 1e3:.2f}ms" for n in names)
            log(f"    rep {r + 1}/{repeats}: {done}")
    return {
        "repeats": repeats,
        "per_contender": {
            n: {
                **summarize(samples[n]),
                "inner": inner[n],
                "warm_s": warm[n],
                "cpu_s": summarize(cpu[n]),
            }
            for n in names
        },
    }


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of `repeats` calls of `fn` one after another (each call
    waits for its result): for contenders timed alone, without interleaving."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


class Compiled(NamedTuple):
    """A compiled contender, ready to time: `fn(*args)`."""

    fn: Callable[..., Any]
    args: tuple
    compile_s: float
    memory_analysis: dict[str, Any]


def time_contenders(
    contenders: Mapping[str, Compiled],
    *,
    repeats: int,
    budget_s: float | None = None,
    min_sample_s: float = 0.1,
    mem_limit: float = float("inf"),
    reference: str = "ours",
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Interleaved timing of compiled contenders, with paired ratios to `reference`.

    A contender whose compiled memory (XLA analysis) exceeds `mem_limit` bytes is not
    run; its entry says why. Returns {"repeats", "contenders": {name: compile_s,
    memory_analysis, time_s (see `time_interleaved`) or skipped}, "ratios":
    {"<reference>/<name>": {"wall", "cpu"}}}.
    """
    fns: dict[str, Callable[[], Any]] = {}
    info: dict[str, dict[str, Any]] = {}
    for name, c in contenders.items():
        info[name] = {"compile_s": c.compile_s, "memory_analysis": c.memory_analysis}
        total = c.memory_analysis.get("total_bytes", 0)
        if total > mem_limit:
            info[name]["skipped"] = f"compiled memory {fmt_bytes(total)} > limit"
            continue
        fns[name] = lambda c=c: c.fn(*c.args)
    t = time_interleaved(
        fns, repeats=repeats, budget_s=budget_s, min_sample_s=min_sample_s, log=log
    )
    per = t["per_contender"]
    for name, s in per.items():
        info[name]["time_s"] = s
    ratios: dict[str, Any] = {}
    if reference in per:
        ref = per[reference]
        for name, s in per.items():
            if name != reference:
                ratios[f"{reference}/{name}"] = {
                    "wall": paired_ratio(ref["samples"], s["samples"]),
                    "cpu": paired_ratio(ref["cpu_s"]["samples"], s["cpu_s"]["samples"]),
                }
    return {"repeats": t["repeats"], "contenders": info, "ratios": ratios}


def compile_aot(fn: Callable, *args: Any) -> tuple[Any, float, dict[str, Any]]:
    """jit + lower + compile; returns (compiled, compile seconds, memory analysis)."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    seconds = time.perf_counter() - t0
    return compiled, seconds, memory_analysis(compiled)


def memory_analysis(compiled: Any) -> dict[str, Any]:
    """XLA's compiled memory analysis, in bytes, with total = temp + argument + output."""
    stats = compiled.memory_analysis()
    if stats is None:
        return {"available": False}
    out: dict[str, Any] = {"available": True}
    for field in (
        "temp_size_in_bytes",
        "argument_size_in_bytes",
        "output_size_in_bytes",
        "alias_size_in_bytes",
        "generated_code_size_in_bytes",
    ):
        value = getattr(stats, field, None)
        if value is not None:
            out[field] = int(value)
    out["total_bytes"] = sum(
        out.get(f, 0)
        for f in (
            "temp_size_in_bytes",
            "argument_size_in_bytes",
            "output_size_in_bytes",
        )
    )
    return out


# ---------------------------------------------------------------------- memory


def rss_bytes() -> int:
    """Current resident set size of this process (VmRSS)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmRSS not found in /proc/self/status")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (ru_maxrss, KiB on Linux).

    Caveat: on Linux a child started by fork+exec inherits its parent's peak as a
    floor of ru_maxrss, so in a subprocess this can report the parent's RSS; see
    `hwm_bytes`.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def hwm_bytes() -> int:
    """Peak resident set size of this process's own address space (VmHWM).

    Unlike ru_maxrss it is reset by exec, so a subprocess sees only its own peak.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


GIB = 2**30
MIB = 2**20

CHILD_TAG = "MEMJSON:"


def report_child(result: Mapping[str, Any]) -> None:
    """In a child started by `run_child`: hand the result back to the parent."""
    print(CHILD_TAG + json.dumps(result), flush=True)


def run_child(
    script: Path, spec: Mapping[str, Any], timeout: float, flag: str = "--mem-child"
) -> dict[str, Any]:
    """Run `script flag JSON(spec)` in a fresh process and return what it reported.

    A fresh process so that its peak RSS is its own (see `hwm_bytes`). On a timeout or
    a crash the result is `spec` with an "error" (and the tail of stderr).
    """
    cmd = [sys.executable, str(script), flag, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, env=os.environ.copy()
        )
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timeout after {timeout:.0f} s"}
    wall = time.perf_counter() - t0
    for line in proc.stdout.splitlines():
        if line.startswith(CHILD_TAG):
            return {**json.loads(line[len(CHILD_TAG) :]), "child_wall_s": wall}
    return {
        **spec,
        "error": f"exit code {proc.returncode}",
        "stderr_tail": proc.stderr[-3000:],
    }


# -------------------------------------------------------------------- metadata


def env_info() -> dict[str, Any]:
    import equinox
    import jax
    import jaxlib
    import numpy
    import optax

    cpu_model = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu_model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_total = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_total = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    dev = jax.devices()[0]
    return {
        "device": {
            "platform": dev.platform,
            "device_kind": getattr(dev, "device_kind", None),
            "num_devices": jax.device_count(),
            "cpu_model": cpu_model,
            "cpu_count": os.cpu_count(),
            "mem_total_bytes": mem_total,
        },
        "versions": {
            "python": platform.python_version(),
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "equinox": equinox.__version__,
            "optax": optax.__version__,
            "numpy": numpy.__version__,
        },
        "xla_flags": os.environ.get("XLA_FLAGS"),
        "prng_impl": str(jax.config.jax_default_prng_impl),
        # The estimator's size thresholds for this platform (pl.Thresholds).
        "thresholds": _thresholds(),
    }


VERSIONED = (
    "perturbed_layers",
    "jax",
    "jaxlib",
    "equinox",
    "optax",
    "jaxopt",
    "numpy",
    "scipy",
    "matplotlib",
    "torch",
    "pyepo",
    "gurobipy",
    "scikit-learn",
    "pathos",
    "jaxtyping",
    "ml_dtypes",
)


def versions() -> dict[str, str | None]:
    """Python's version and every benchmarked package's (None: not installed), and
    the Gurobi solver's if gurobipy imports."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for dist in VERSIONED:
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            out[dist] = None
    try:
        import gurobipy

        out["gurobi_solver"] = ".".join(map(str, gurobipy.gurobi.version()))
    except Exception:
        pass
    return out


def git_state() -> dict[str, Any]:
    """The commit benchmarked and how many files differ from it."""

    def git(*a):
        p = subprocess.run(["git", *a], capture_output=True, text=True, cwd=REPO_ROOT)
        return p.stdout.strip() if p.returncode == 0 else None

    status = git("status", "--porcelain")
    return {
        "commit": git("rev-parse", "HEAD"),
        "modified_files": None if status is None else len(status.splitlines()),
    }


def device_tag() -> str:
    """`cpu`, or e.g. `gpu-nvidia-a100-sxm4-40gb`: the device part of file names."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "cpu"
    kind = "".join(ch if ch.isalnum() else "-" for ch in str(dev.device_kind).lower())
    return f"{dev.platform}-{kind.strip('-')}"


def _thresholds() -> dict[str, Any]:
    from perturbed_layers._estimator._options import platform_thresholds

    return {k: float(x) for k, x in platform_thresholds()._asdict().items()}


def today() -> str:
    return _dt.date.today().isoformat()


def now_iso() -> str:
    return _dt.datetime.now().isoformat(timespec="seconds")


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=str)
        f.write("\n")


# ------------------------------------------------------------------- reporting


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join("---" for _ in header) + " |",
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fmt_time(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds * 1e6:.1f} µs"


def fmt_summary(s: Mapping[str, Any], fmt: Callable[[float], str] = fmt_time) -> str:
    """'median [min, max]'."""
    return f"{fmt(s['median'])} [{fmt(s['min'])}, {fmt(s['max'])}]"


def fmt_bytes(n: float) -> str:
    if n >= GIB:
        return f"{n / GIB:.2f} GiB"
    return f"{n / MIB:.1f} MiB"
