#!/usr/bin/env python
"""PyEPO's 5×5 shortest path with a perturbed Fenchel–Young loss: ours against PyEPO.

Both sides train the same linear model 5 → 40 (the same initial weights, copied from
`torch.nn.Linear`'s default initialisation) with Adam (lr 1e-2) on the same batches of
32 (one shared permutation of the training set per epoch, the last batch of 8 kept, as
PyTorch's `DataLoader(shuffle=True)` does), with the perturbed FY loss at σ = 1 and
M ∈ {1, 3, 10} samples:

- PyEPO: `pyepo.func.perturbedFenchelYoung(shortestPathModel(grid=(5, 5)),
  n_samples=M, sigma=1.0, processes=1)` (Gurobi solves every perturbed instance on
  the host, one after another), `torch.optim.Adam`; PyTorch and Gurobi pinned to one
  thread each (with their defaults, 2 threads each on this machine, PyEPO's epochs
  were 2–8× slower and erratic whenever another process used a core: pinned is
  PyEPO's best case here, so the ratio is conservative).
- ours: `pl.FenchelYoungLoss(pl.Perturbed(pl.solvers.pyepo_shortest_path,
  objective="min", event_ndim=1, num_samples=M, sigma=1.0, noise=pl.Normal()))`
  (through the experiments registry's `fenchel_young` entry), `optax.adam`, trained
  by the experiments CLI's own step (`perturbed_layers.experiments.train_step`, and
  `train_steps` for several steps per compiled call) as the CLI runs this problem's
  config (`training.steps_per_call: 10` in configs/pyepo_shortest_path.yaml): 10
  steps per call, in a loop inside the call, then the last batch of 8 (5 dispatches
  per epoch instead of 32). With `--variants` (run.py's full run) also `ours_scan`:
  the epoch's full batches in one call, for information.

Data: PyEPO's `genData(2000, 5, (5, 5), deg=4, noise_width=0.5, seed=42)` split
1000/1000 with scikit-learn's `train_test_split(test_size=1000, random_state=42)`,
as in PyEPO's notebook "03 Training and Testing". When `perturbed_layers.experiments`
is importable, its reimplementation of the generator and split is checked against
PyEPO's, bit for bit, and the result recorded.

Time: seconds per training epoch (the true optimal paths are precomputed on both
sides, outside the epoch; ours is compiled before the first epoch, for both batch
shapes, and the compile time recorded apart). Epochs are interleaved (PyEPO epoch e,
ours epoch e, the order alternating), so the ratio PyEPO / ours is paired per epoch;
reported as median [min, max]. Regret: PyEPO's normalised regret on the 1000 test
instances (`pyepo.metric.SPOError`, Gurobi) of each trained model, cross-checked
with our exact JAX solver.

Target (issue 6): ours ≥ 20× faster per epoch at the same regret (± 0.5 points).

Usage: python bench/pyepo_compare.py [--quick] [--epochs N] [--ms 1,3,10] [--variants]
       [--out F]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import sys
import time
from pathlib import Path
from typing import Any

import _common as C

C.setup_path()

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from training import Trainer  # noqa: E402

import perturbed_layers as pl  # noqa: E402

NUM_DATA, NUM_FEATURES, GRID, DEG, NOISE_WIDTH, DATA_SEED = 2000, 5, 5, 4, 0.5, 42
TEST_SIZE, SPLIT_SEED = 1000, 42
BATCH, LR, SIGMA = 32, 1e-2, 1.0
MS = (1, 3, 10)
# Steps per compiled call on our side: what configs/pyepo_shortest_path.yaml sets
# (`training.steps_per_call`).
STEPS_PER_CALL = 10
SPEEDUP_TARGET, REGRET_TOLERANCE_POINTS = 20.0, 0.5


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def pyepo_available() -> tuple[bool, str]:
    """(available, reason if not): PyEPO, PyTorch and a working Gurobi licence."""
    try:
        import torch  # noqa: F401
    except Exception as e:  # pragma: no cover - depends on the machine
        return False, f"PyTorch does not import: {type(e).__name__}: {e}"
    try:
        import pyepo  # noqa: F401
        from pyepo.model.grb import shortestPathModel
    except Exception as e:
        return False, f"PyEPO does not import: {type(e).__name__}: {e}"
    try:
        import gurobipy  # noqa: F401

        model = shortestPathModel(grid=(GRID, GRID))
        model.setObj(np.ones(2 * GRID * (GRID - 1)))
        _, obj = model.solve()
        if abs(obj - 2 * (GRID - 1)) > 1e-6:
            return False, f"Gurobi returned a wrong optimum {obj}"
    except Exception as e:
        return False, f"Gurobi does not solve: {type(e).__name__}: {e}"
    return True, ""


# ------------------------------------------------------------------------- data


def load_data() -> dict[str, Any]:
    """x/c train/test, from PyEPO's genData if present, else our reimplementation."""
    info: dict[str, Any] = {
        "generator": f"genData({NUM_DATA}, {NUM_FEATURES}, ({GRID}, {GRID}), "
        f"deg={DEG}, noise_width={NOISE_WIDTH}, seed={DATA_SEED})",
        "split": f"train_test_split(test_size={TEST_SIZE}, random_state={SPLIT_SEED})",
    }
    ours = None
    try:
        from perturbed_layers.experiments import (
            pyepo_shortest_path_data,
            sklearn_train_test_split,
        )

        x2, c2 = pyepo_shortest_path_data(
            NUM_DATA, NUM_FEATURES, (GRID, GRID), DEG, NOISE_WIDTH, DATA_SEED
        )
        tr, te = sklearn_train_test_split(NUM_DATA, TEST_SIZE, SPLIT_SEED)
        ours = (x2[tr], x2[te], c2[tr], c2[te])
    except Exception as e:
        info["experiments_data"] = f"not usable: {type(e).__name__}: {e}"
    try:
        from pyepo.data.shortestpath import genData
        from sklearn.model_selection import train_test_split

        x, c = genData(
            NUM_DATA,
            NUM_FEATURES,
            (GRID, GRID),
            deg=DEG,
            noise_width=NOISE_WIDTH,
            seed=DATA_SEED,
        )
        data = tuple(
            train_test_split(x, c, test_size=TEST_SIZE, random_state=SPLIT_SEED)
        )
        info["source"] = "pyepo.data.shortestpath.genData + sklearn train_test_split"
        if ours is not None:
            same = all(np.array_equal(a, b) for a, b in zip(data, ours, strict=True))
            info["experiments_data"] = (
                "perturbed_layers.experiments.pyepo_shortest_path_data + "
                "sklearn_train_test_split: "
                + ("bit-identical to PyEPO's" if same else "DIFFERS from PyEPO's")
            )
    except Exception as e:
        if ours is None:
            raise RuntimeError("neither PyEPO nor perturbed_layers.experiments") from e
        data = ours
        info["source"] = "perturbed_layers.experiments (PyEPO not importable)"
    x_tr, x_te, c_tr, c_te = data
    return {
        "x_train": np.asarray(x_tr, np.float32),
        "x_test": np.asarray(x_te, np.float32),
        "c_train": np.asarray(c_tr, np.float32),
        "c_test": np.asarray(c_te, np.float32),
        "info": info,
    }


def init_weights(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """torch.nn.Linear(5, 40)'s default initialisation (or the same law in NumPy)."""
    try:
        import torch

        torch.manual_seed(seed)
        lin = torch.nn.Linear(NUM_FEATURES, 2 * GRID * (GRID - 1))
        return lin.weight.detach().numpy().copy(), lin.bias.detach().numpy().copy()
    except ImportError:
        rng = np.random.default_rng(seed)
        bound = 1 / np.sqrt(NUM_FEATURES)
        d = 2 * GRID * (GRID - 1)
        w = rng.uniform(-bound, bound, (d, NUM_FEATURES)).astype(np.float32)
        return w, rng.uniform(-bound, bound, d).astype(np.float32)


def epoch_batches(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    perm = rng.permutation(n)
    return [perm[i : i + BATCH] for i in range(0, n, BATCH)]


# ----------------------------------------------------------------------- regret


_exact = jax.jit(lambda c: pl.solvers.pyepo_shortest_path(c, GRID))


def regret_jax(pred: np.ndarray, true: np.ndarray) -> float:
    """Normalised regret Σ(cᵀw*(ĉ) − z*(c)) / Σ|z*(c)| with our exact solver."""
    w_hat = np.asarray(_exact(jnp.asarray(pred)), np.float64)
    w_opt = np.asarray(_exact(jnp.asarray(true)), np.float64)
    t = true.astype(np.float64)
    z = (t * w_opt).sum(1)
    return float(((t * w_hat).sum(1) - z).sum() / (np.abs(z).sum() + 1e-7))


def regret_pyepo(pred: np.ndarray, true: np.ndarray, optmodel) -> float:
    from pyepo.metric import SPOError

    return float(SPOError(pred, true, optmodel))


# ------------------------------------------------------------------------- ours


def linear_model(w: np.ndarray, b: np.ndarray) -> eqx.nn.Linear:
    """The linear model 5 -> 40 with the given weights (PyTorch's initialisation)."""
    model = eqx.nn.Linear(NUM_FEATURES, w.shape[0], key=jax.random.key(0))
    return eqx.tree_at(
        lambda mm: (mm.weight, mm.bias), model, (jnp.asarray(w), jnp.asarray(b))
    )


def ours_layer(m: int) -> pl.Perturbed:
    """Our perturbed shortest path on PyEPO's grid, M samples of σ = SIGMA normal noise
    (both benchmarks' layer)."""
    return pl.Perturbed(
        pl.solvers.pyepo_shortest_path,
        objective="min",
        event_ndim=1,
        num_samples=m,
        sigma=SIGMA,
        noise=pl.Normal(),
    )


def ours_trainer(
    m: int, w: np.ndarray, b: np.ndarray, data, seed: int, steps_per_call: int
) -> Trainer:
    """Our side: the loss the experiments registry builds for
    `loss: {name: fenchel_young}`, trained by the library's own step
    (`training.Trainer`) on PyEPO's batches, `steps_per_call` steps per call."""
    from perturbed_layers.experiments import LOSSES, Batch, PyEPOTask

    layer, task = ours_layer(m), PyEPOTask(grid=GRID)
    loss = LOSSES["fenchel_young"](name="fenchel_young").build(layer, task)
    # The true optimal paths, precomputed once (as PyEPO's optDataset does).
    train = Batch(
        x=data["x_train"],
        y=np.asarray(_exact(jnp.asarray(data["c_train"])), np.float32),
        costs=data["c_train"],
    )
    return Trainer(
        linear_model(w, b),
        loss,
        optax.adam(LR),
        train,
        seed,
        steps_per_call=steps_per_call,
    )


# ------------------------------------------------------------------------ PyEPO


class PyEPOTrainer:
    def __init__(self, m: int, w: np.ndarray, b: np.ndarray, data, optmodel):
        import pyepo
        import torch

        self.torch = torch
        self.model = torch.nn.Linear(NUM_FEATURES, w.shape[0])
        with torch.no_grad():
            self.model.weight.copy_(torch.from_numpy(w))
            self.model.bias.copy_(torch.from_numpy(b))
        self.opt = torch.optim.Adam(self.model.parameters(), lr=LR)
        self.loss = pyepo.func.perturbedFenchelYoung(
            optmodel, n_samples=m, sigma=SIGMA, processes=1
        )
        dataset = pyepo.data.dataset.optDataset(
            optmodel, data["x_train"], data["c_train"]
        )
        self.x, self.sols = dataset.feats, dataset.sols

    def epoch(self, batches: list[np.ndarray]) -> float:
        torch = self.torch
        self.model.train()
        t0 = time.perf_counter()
        for idx in batches:
            t_idx = torch.from_numpy(idx)
            x, w = self.x[t_idx], self.sols[t_idx]
            cp = self.model(x)
            loss = self.loss(cp, w)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
        return time.perf_counter() - t0

    def predict(self, x: np.ndarray) -> np.ndarray:
        torch = self.torch
        self.model.eval()
        with torch.no_grad():
            return self.model(torch.from_numpy(x)).numpy()


# ------------------------------------------------------------------------- main


def versions() -> dict[str, Any]:
    out = {d: _version(d) for d in ("torch", "pyepo", "gurobipy", "scikit-learn")}
    try:
        import gurobipy

        out["gurobi_solver"] = ".".join(map(str, gurobipy.gurobi.version()))
    except Exception:
        pass
    return out


def run(
    *,
    quick: bool = False,
    epochs: int | None = None,
    ms: tuple[int, ...] = MS,
    seed: int = 42,
    variants: bool = False,
    log_fn=None,
) -> dict[str, Any]:
    """Train both sides for each M, interleaved by epoch; return the results dict."""
    log = log_fn or _log
    epochs = epochs or (3 if quick else 20)
    data = load_data()
    ok, reason = pyepo_available()
    res: dict[str, Any] = {
        "benchmark": "bench/pyepo_compare.py",
        "setup": {
            "data": data["info"],
            "model": f"linear {NUM_FEATURES} -> {2 * GRID * (GRID - 1)}, "
            "torch.nn.Linear default init copied to both sides",
            "optimizer": f"Adam lr={LR}",
            "batch": BATCH,
            "sigma": SIGMA,
            "epochs": epochs,
            "Ms": list(ms),
            "pyepo": "perturbedFenchelYoung(shortestPathModel(grid=(5, 5)), "
            "n_samples=M, sigma=1.0, processes=1)",
            "ours": "FenchelYoungLoss(Perturbed(pyepo_shortest_path, objective='min', "
            "event_ndim=1, num_samples=M, sigma=1.0, noise=Normal())) built by the "
            "experiments registry (loss: fenchel_young), optax.adam, the "
            "experiments CLI's own step (perturbed_layers.experiments.train_step / "
            f"train_steps), {STEPS_PER_CALL} steps per call as the CLI runs "
            "configs/pyepo_shortest_path.yaml (training.steps_per_call: 10), then "
            "the last batch; batches paired with PyEPO's (the last one of 8 kept)",
            "variants": "(with variants=True, information only) ours_scan: the "
            "epoch's full batches in one compiled call (train_steps), then the last "
            "batch: the same steps with 2 dispatches per epoch instead of 32",
            "threads": "PyEPO side pinned to one thread (torch.set_num_threads(1), "
            "Gurobi Threads=1): with the defaults (2 torch threads, Gurobi automatic) "
            "its epochs were 2-8x slower and erratic whenever another process used a "
            "core; pinned is PyEPO's best here, so the ratio is conservative",
            "timing": "seconds per epoch (1000 training instances), epochs "
            "interleaved PyEPO/ours, paired ratio per epoch",
            "regret": "normalised regret on the 1000 test instances, "
            "pyepo.metric.SPOError (Gurobi); cross-checked with our JAX solver",
        },
        "versions": versions(),
        "pyepo_available": ok,
        "by_M": {},
    }
    if not ok:
        res["skipped"] = reason
        log(f"PyEPO side skipped: {reason}")
    optmodel = None
    if ok:
        import torch
        from pyepo.model.grb import shortestPathModel

        res["setup"]["torch_threads_default"] = torch.get_num_threads()
        torch.set_num_threads(1)
        optmodel = shortestPathModel(grid=(GRID, GRID))
        optmodel._model.Params.Threads = 1
    w0, b0 = init_weights(seed)
    n_train = len(data["x_train"])
    for m in ms:
        trainers: dict[str, Any] = {}
        compile_s: dict[str, float] = {}
        if ok:
            trainers["pyepo"] = PyEPOTrainer(m, w0, b0, data, optmodel)
        trainers["ours"] = ours_trainer(m, w0, b0, data, seed, STEPS_PER_CALL)
        if variants:
            trainers["ours_scan"] = ours_trainer(m, w0, b0, data, seed, n_train)
        shapes = epoch_batches(np.random.default_rng(seed), n_train)
        for name, tr in trainers.items():
            if name != "pyepo":
                compile_s[name] = tr.compile(shapes)
        rng = np.random.default_rng(seed)
        times: dict[str, list[float]] = {name: [] for name in trainers}
        names = list(trainers)
        for e in range(epochs):
            batches = epoch_batches(rng, n_train)
            shift = e % len(names)
            for name in names[shift:] + names[:shift]:
                times[name].append(trainers[name].epoch(batches))
        entry: dict[str, Any] = {}
        for name, tr in trainers.items():
            pred = tr.predict(data["x_test"])
            entry[name] = {
                "epoch_s": C.summarize(times[name]),
                "regret_jax": regret_jax(pred, data["c_test"]),
            }
            if name in compile_s:
                entry[name]["compile_s"] = compile_s[name]
            if ok:
                entry[name]["regret"] = regret_pyepo(pred, data["c_test"], optmodel)
        msg = f"  M={m}: " + "; ".join(
            f"{name} {C.fmt_summary(x['epoch_s'])}/epoch, regret "
            f"{100 * x.get('regret', x['regret_jax']):.2f}%"
            for name, x in entry.items()
        )
        if ok:
            for name in trainers:
                if name == "pyepo":
                    continue
                ratio = C.paired_ratio(times["pyepo"], times[name])
                diff = 100 * (entry[name]["regret"] - entry["pyepo"]["regret"])
                entry[name]["speedup_pyepo_over_this"] = ratio
                entry[name]["regret_diff_points"] = diff
                entry[name]["met"] = bool(
                    ratio["median"] >= SPEEDUP_TARGET
                    and abs(diff) <= REGRET_TOLERANCE_POINTS
                )
                msg += f"; PyEPO/{name} {ratio['median']:.1f}× (Δ {diff:+.2f} pt)"
            entry["speedup_pyepo_over_ours"] = entry["ours"]["speedup_pyepo_over_this"]
            entry["regret_diff_points"] = entry["ours"]["regret_diff_points"]
            entry["met"] = entry["ours"]["met"]
        log(msg)
        res["by_M"][str(m)] = entry
    return res


def render(res: dict[str, Any]) -> str:
    rows = []
    for m, e in res["by_M"].items():
        t = e.get("pyepo")
        for name in ("ours", "ours_scan"):
            o = e.get(name)
            if o is None:
                continue
            r = o.get("speedup_pyepo_over_this")
            rows.append(
                [
                    m,
                    name,
                    C.fmt_summary(t["epoch_s"]) if t else "skipped",
                    C.fmt_summary(o["epoch_s"]),
                    f"{r['median']:.1f}× [{r['min']:.1f}, {r['max']:.1f}]"
                    if r
                    else "-",
                    f"{100 * t['regret']:.2f}%" if t else "-",
                    f"{100 * o.get('regret', o['regret_jax']):.2f}%",
                    f"{o['regret_diff_points']:+.2f}"
                    if "regret_diff_points" in o
                    else "-",
                    f"{o['compile_s']:.1f} s",
                ]
            )
    head = [
        "M",
        "contender",
        "PyEPO s/epoch",
        "contender s/epoch",
        "PyEPO/contender",
        "PyEPO regret",
        "contender regret",
        "Δ regret (points)",
        "compile",
    ]
    text = C.markdown_table(head, rows)
    if res.get("skipped"):
        text += f"\n\nPyEPO side skipped: {res['skipped']}"
    return text


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 epochs instead of 20")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--ms", default=",".join(map(str, MS)))
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--variants",
        action="store_true",
        help="also train ours with the epoch in one compiled call (fewer dispatches)",
    )
    p.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = p.parse_args()
    res = run(
        quick=args.quick,
        epochs=args.epochs,
        ms=tuple(int(s) for s in args.ms.split(",")),
        seed=args.seed,
        variants=args.variants,
    )
    res["env"] = C.env_info()
    out = args.out or C.RESULTS_DIR / (
        f"pyepo_compare-{C.today()}-{res['env']['device']['platform']}"
        f"{'-quick' if args.quick else ''}.json"
    )
    C.write_json(out, res)
    print(render(res))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    sys.exit(main())
