# pyright: reportMissingImports=false
# (PyEPO, PyTorch, Gurobi and scikit-learn are the bench extra's, imported lazily: CI type-
# checks this file without them.)
"""PyEPO itself, trained on a config's task: the peer column of `perturbed-layers compare`.

`train_pyepo(config)` runs PyEPO's own pipeline (its generator, `optDataset`, Gurobi
models, loss modules, `pyepo.metric.regret`) with the config's data, seeds and
hyperparameters, in PyEPO's PyTorch front end (`pyepo.func`, the loop of its notebook
"03 Training and Testing") or its JAX front end (`pyepo.func.jax`, the loop of its
notebook "10 JAX Frontend"), so that its regret and wall time can stand beside ours.
"""

import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import numpy as np

from ._config import Config

FrontEnd = Literal["torch", "jax"]
BatchLoss = Callable[..., Any]  # (cp, c, w, z, rng) -> scalar, torch or JAX arrays


# --------------------------------------------------------------- what maps to PyEPO


def _l1_regret(wp: Any, c: Any, z: Any) -> Any:
    """PyEPO's training loss after a solver layer (DBB, DPO, I-MLE in its notebooks):
    `nn.L1Loss()(⟨c, ŵ⟩, z*)`, the mean |⟨c, ŵ⟩ − z*(c)|: the regret for both model
    senses (a minimiser's regret is ⟨c, ŵ⟩ − z*, a maximiser's z* − ⟨c, ŵ⟩)."""
    return abs((wp * c).sum(-1) - z[:, 0]).mean()


def _perturbed_class(config: Config, family: Any, additive: str) -> Any:
    """PyEPO's additive (Gaussian) or multiplicative (`…Mul`) variant."""
    layer: Any = config.layer
    multiplicative = layer.perturbation == "multiplicative"
    return getattr(family, additive + ("Mul" if multiplicative else ""))


def _regression(family, config, optmodel, train_set, seed) -> BatchLoss:
    del family, config, optmodel, train_set, seed
    return lambda cp, c, w, z, rng: ((cp - c) ** 2).mean()


def _spo_plus(family, config, optmodel, train_set, seed) -> BatchLoss:
    del config, train_set, seed
    spop = family.SPOPlus(optmodel, processes=1)
    return lambda cp, c, w, z, rng: spop(cp, c, w, z)


def _dbb(family, config, optmodel, train_set, seed) -> BatchLoss:
    del train_set, seed
    dbb = family.blackboxOpt(optmodel, lambd=config.loss.lambd, processes=1)
    return lambda cp, c, w, z, rng: _l1_regret(dbb(cp), c, z)


def _regret(family, config, optmodel, train_set, seed) -> BatchLoss:
    del train_set
    layer = config.layer
    dpo = _perturbed_class(config, family, "perturbedOpt")(
        optmodel, n_samples=layer.num_samples, sigma=layer.sigma, processes=1, seed=seed
    )
    return lambda cp, c, w, z, rng: _l1_regret(dpo(cp, **rng), c, z)


def _fenchel_young(family, config, optmodel, train_set, seed) -> BatchLoss:
    del train_set
    layer = config.layer
    pfy = _perturbed_class(config, family, "perturbedFenchelYoung")(
        optmodel, n_samples=layer.num_samples, sigma=layer.sigma, processes=1, seed=seed
    )
    return lambda cp, c, w, z, rng: pfy(cp, w, **rng)


def _imle(family, config, optmodel, train_set, seed) -> BatchLoss:
    del train_set
    loss = config.loss
    # Our Sum-of-Gamma noise is (τ/κ)(Σᵢ Gamma(1/κ, κ/i) − log s); PyEPO's is the
    # same with τ = 1, scaled by sigma: τ folds into sigma.
    common = dict(
        n_samples=loss.num_samples,
        sigma=loss.sigma * loss.tau,
        lambd=loss.lambd,
        processes=1,
    )
    if family.__name__.endswith(".jax"):
        imle = family.implicitMLE(
            optmodel, kappa=loss.k, n_iterations=loss.s, seed=seed, **common
        )
    else:
        from pyepo.func.utils import sumGammaDistribution

        noise = sumGammaDistribution(kappa=loss.k, n_iterations=loss.s, seed=seed)
        imle = family.implicitMLE(optmodel, distribution=noise, **common)
    return lambda cp, c, w, z, rng: _l1_regret(imle(cp, **rng), c, z)


def _nce(family, config, optmodel, train_set, seed) -> BatchLoss:
    del seed
    nce = family.NCE(
        optmodel, processes=1, solve_ratio=config.loss.solve_ratio, dataset=train_set
    )
    return lambda cp, c, w, z, rng: nce(cp, w)


# config.loss.name -> the PyEPO loss, built as
# (pyepo.func or pyepo.func.jax, config, optmodel, training optDataset, seed).
_LOSSES: dict[str, Callable[..., BatchLoss]] = {
    "regression": _regression,
    "spo_plus": _spo_plus,
    "dbb": _dbb,
    "regret": _regret,
    "fenchel_young": _fenchel_young,
    "imle": _imle,
    "nce": _nce,
}
# Losses whose PyEPO module draws noise (the JAX front end takes a key= for them).
_RANDOM = frozenset({"regret", "fenchel_young", "imle"})
_DATA = ("pyepo_shortest_path", "pyepo_knapsack")
_OPTIMIZERS = ("adam", "adamw")


def _check(config: Config) -> None:
    """Refuse, before anything is imported or built, what PyEPO cannot reproduce.

    **Raises:** `ValueError` naming the config key, the value and what is supported.
    """

    def refuse(key: str, value: Any, supported: str) -> None:
        raise ValueError(
            f"train_pyepo: {key}: {value!r} has no PyEPO counterpart here; "
            f"supported: {supported}"
        )

    # The base option classes do not declare their entries' options: read as Any.
    model: Any = config.model
    layer: Any = config.layer
    loss: Any = config.loss
    optimizer: Any = config.optimizer
    if config.data.name not in _DATA:
        refuse("data.name", config.data.name, ", ".join(map(repr, _DATA)))
    if model.name != "linear":
        refuse("model.name", model.name, "'linear' (torch.nn.Linear)")
    if model.output != "identity":
        refuse("model.output", model.output, "'identity'")
    if model.normalize:
        refuse("model.normalize", True, "false")
    if loss.name not in _LOSSES:
        refuse("loss.name", loss.name, ", ".join(map(repr, _LOSSES)))
    if loss.name == "regression" and loss.target != "costs":
        refuse("loss.target", loss.target, "'costs' (two-stage MSE)")
    if loss.name in ("regret", "fenchel_young") and layer.noise != "normal":
        refuse("layer.noise", layer.noise, "'normal'")
    if optimizer.name not in _OPTIMIZERS:
        refuse("optimizer.name", optimizer.name, ", ".join(map(repr, _OPTIMIZERS)))
    if optimizer.schedule != "constant":
        refuse("optimizer.schedule", optimizer.schedule, "'constant'")


# ------------------------------------------------------------------- data and model


def _pyepo_data(config: Config) -> tuple[Any, tuple[Any, ...]]:
    """PyEPO's Gurobi model and its genData + train_test_split, as the config sets
    them: `(optmodel, (x_train, x_test, c_train, c_test))`."""
    import pyepo
    from pyepo.model.grb import knapsackModel, shortestPathModel
    from sklearn.model_selection import train_test_split

    data: Any = config.data
    if data.name == "pyepo_shortest_path":
        grid = (data.grid, data.grid)
        x, c = pyepo.data.shortestpath.genData(
            data.num_data,
            data.num_features,
            grid,
            data.deg,
            data.noise_width,
            data.seed,
        )
        optmodel = shortestPathModel(grid=grid)
    else:
        weights, x, c = pyepo.data.knapsack.genData(
            data.num_data,
            data.num_features,
            data.num_items,
            data.dim,
            data.deg,
            data.noise_width,
            data.seed,
        )
        capacity = np.broadcast_to(np.asarray(data.capacity, np.float64), (data.dim,))
        optmodel = knapsackModel(weights, list(capacity))
    # One thread, no log: PyEPO's best and steadiest case on a shared machine.
    optmodel._model.Params.Threads = 1
    optmodel._model.Params.OutputFlag = 0
    split = train_test_split(
        x, c, test_size=data.test_size, random_state=data.split_seed
    )
    return optmodel, tuple(split)


class _TorchSide:
    """`torch.nn.Linear` trained with `torch.optim` on PyEPO's PyTorch losses."""

    def __init__(self, config: Config, optmodel: Any, train_set: Any, p: int, d: int):
        import pyepo.func
        import torch

        self.torch = torch
        torch.manual_seed(config.training.seed)
        self.model = torch.nn.Linear(p, d)
        opt: Any = config.optimizer
        kwargs = dict(lr=opt.learning_rate)
        if opt.name == "adam":
            kwargs.update(betas=(opt.b1, opt.b2), eps=opt.eps)
            self.optimizer = torch.optim.Adam(self.model.parameters(), **kwargs)
        else:
            kwargs.update(weight_decay=opt.weight_decay)
            self.optimizer = torch.optim.AdamW(self.model.parameters(), **kwargs)
        build = _LOSSES[config.loss.name]
        self.loss = build(pyepo.func, config, optmodel, train_set, config.training.seed)

    def epoch(self, loader: Any) -> None:
        self.model.train()
        for x, c, w, z in loader:
            loss = self.loss(self.model(x), c, w, z, {})
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()

    def predictor(self) -> Any:
        return self.model  # pyepo.metric.regret puts it in eval mode


class _JaxSide:
    """Our `linear` model (an Equinox `Linear`, initialised as in our run) trained with
    the config's optax optimiser on PyEPO's JAX losses, one `jax.jit` step per batch
    (for NCE, whose host-side pool PyEPO refuses under `jax.jit`, the loss's gradient
    in ĉ is eager and the rest compiled)."""

    def __init__(self, config: Config, optmodel: Any, train_set: Any, p: int, d: int):
        import equinox as eqx
        import jax
        import jax.numpy as jnp
        import pyepo.func.jax

        self.jax, self.jnp = jax, jnp
        model_key, self.key = jax.random.split(jax.random.key(config.training.seed))
        self.model = config.model.build((p,), (d,), key=model_key)
        steps = config.training.epochs * -(
            -len(train_set) // config.training.batch_size
        )
        optimizer = config.optimizer.build(steps)
        self.opt_state = optimizer.init(eqx.filter(self.model, eqx.is_inexact_array))
        name = config.loss.name
        loss = _LOSSES[name](
            pyepo.func.jax, config, optmodel, train_set, config.training.seed
        )
        random = name in _RANDOM

        def update(model, opt_state, grads):
            updates, opt_state = optimizer.update(grads, opt_state, model)
            return eqx.apply_updates(model, updates), opt_state

        @eqx.filter_jit
        def step(model, opt_state, x, c, w, z, key):
            def objective(model):
                rng = {"key": key} if random else {}
                return loss(jax.vmap(model)(x), c, w, z, rng)

            return update(model, opt_state, eqx.filter_grad(objective)(model))

        # NCE: PyEPO grows its pool on the host and refuses jax.jit, so only its
        # gradient in the predicted costs runs eagerly; the model's forward pass,
        # backward pass and update stay compiled.
        predict = eqx.filter_jit(lambda model, x: jax.vmap(model)(x))

        @eqx.filter_jit
        def pull_back(model, opt_state, x, cotangent):
            grads = eqx.filter_grad(lambda m: jnp.vdot(jax.vmap(m)(x), cotangent))
            return update(model, opt_state, grads(model))

        def eager_step(model, opt_state, x, c, w, z, key):
            del key
            cotangent = jax.grad(lambda cp: loss(cp, c, w, z, {}))(predict(model, x))
            return pull_back(model, opt_state, x, cotangent)

        self.step = eager_step if name == "nce" else step
        self.count = 0

    def epoch(self, loader: Any) -> None:
        jnp = self.jnp
        for batch in loader:
            x, c, w, z = (jnp.asarray(t.numpy()) for t in batch)
            key = self.jax.random.fold_in(self.key, self.count)
            self.model, self.opt_state = self.step(
                self.model, self.opt_state, x, c, w, z, key
            )
            self.count += 1
        self.jax.block_until_ready(self.model)

    def predictor(self) -> Callable[[np.ndarray], np.ndarray]:
        model = self.model
        return lambda x: np.asarray(self.jax.vmap(model)(self.jnp.asarray(x)))


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """PyTorch on one thread for the run (PyEPO's timing is erratic on a shared
    machine otherwise), restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class _PeerRun:
    """One PyEPO run, built in the order `train_pyepo` times it: data and Gurobi
    labels (`optDataset`), loaders, model, optimiser and loss."""

    def __init__(self, config: Config, front_end: FrontEnd):
        import torch
        from pyepo.data.dataset import optDataset

        self.config = config
        self.optmodel, (x_train, x_test, c_train, c_test) = _pyepo_data(config)
        self.train_set = optDataset(self.optmodel, x_train, c_train)
        self.test_set = optDataset(self.optmodel, x_test, c_test)
        training = config.training
        self.train_loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=training.batch_size,
            shuffle=True,
            generator=torch.Generator().manual_seed(training.seed),
        )
        self.test_loader = torch.utils.data.DataLoader(
            self.test_set, batch_size=training.eval_batch_size, shuffle=False
        )
        p, d = x_train.shape[1], c_train.shape[1]
        side = _TorchSide if front_end == "torch" else _JaxSide
        self.side = side(config, self.optmodel, self.train_set, p, d)

    def train(self) -> None:
        for _ in range(self.config.training.epochs):
            self.side.epoch(self.train_loader)

    def regret(self) -> float:
        """PyEPO's normalised regret on the test split (Gurobi, one process)."""
        from pyepo.metric import regret

        value = regret(self.side.predictor(), self.optmodel, self.test_loader)
        return float(value)  # pyright: ignore[reportArgumentType]


def _import_peer(front_end: FrontEnd) -> None:
    """Import PyEPO, PyTorch, scikit-learn and Gurobi, or say how to install them."""
    if front_end not in ("torch", "jax"):
        raise ValueError(f"front_end must be 'torch' or 'jax', got {front_end!r}")
    try:
        import gurobipy  # noqa: F401
        import pyepo  # noqa: F401
        import sklearn  # noqa: F401
        import torch  # noqa: F401
    except ImportError as error:
        raise ImportError(
            f"train_pyepo needs PyEPO, PyTorch, scikit-learn and gurobipy "
            f'({error.name} is missing): pip install -e ".[bench]" (install a CPU '
            "torch first to avoid a CUDA build)"
        ) from error


def train_pyepo(config: Config, *, front_end: FrontEnd = "torch") -> dict[str, float]:
    """Train `config`'s method with PyEPO's own training loop, on the same data.

    **Arguments:**

    - `config`: a validated config (`load_config`) on `pyepo_shortest_path` or
        `pyepo_knapsack` data, with a `linear` model (identity output, not normalised)
        and `adam` or `adamw` (constant learning rate).
    - `front_end`: `"torch"`, PyEPO's PyTorch front end (`pyepo.func`,
        `torch.nn.Linear`, `torch.optim.Adam`/`AdamW`), or `"jax"`, its JAX front
        end (`pyepo.func.jax`, our `linear` model, the config's optax optimiser,
        one `jax.jit` step per batch with an explicit noise key; Gurobi is reached
        through `jax.pure_callback`).

    **Returns:** `{"normalized_regret": …, "train_seconds": …, "wall_seconds": …}`:
    PyEPO's `pyepo.metric.regret` on the test split (Gurobi); the seconds of the
    training epochs alone (for the JAX front end, compilation included, as a PyEPO
    user pays it); and the seconds of the whole run after the imports: data,
    Gurobi labels of both splits (`optDataset`), model building, training and
    evaluation.

    **Raises:** `ValueError` naming the config key of anything PyEPO cannot
    reproduce here (before importing anything); `ImportError` with the install
    command if PyEPO, PyTorch, scikit-learn or gurobipy is missing.

    **The same as our run:** the data (PyEPO's `genData` and scikit-learn's
    `train_test_split`, which ours reproduce bit for bit), the model family, the
    optimiser and its hyperparameters, epochs, batch size, and each loss's
    hyperparameters:

    | `loss.name` | PyEPO | training loss |
    |---|---|---|
    | `regression` (target costs) | none | `MSELoss(ĉ, c)` (two-stage) |
    | `spo_plus` | `SPOPlus` | its value |
    | `dbb` | `blackboxOpt(lambd=loss.lambd)` | mean \\|⟨c, ŵ⟩ − z*\\| |
    | `regret` | `perturbedOpt(n_samples=layer.num_samples, sigma=layer.sigma)` | mean \\|⟨c, ŵ⟩ − z*\\| |
    | `fenchel_young` | `perturbedFenchelYoung(n_samples=layer.num_samples, sigma=layer.sigma)` | its value |
    | `imle` | `implicitMLE(n_samples=loss.num_samples, sigma=loss.sigma·loss.tau, lambd=loss.lambd)`, Sum-of-Gamma κ = `loss.k`, `loss.s` terms | mean \\|⟨c, ŵ⟩ − z*\\| |
    | `nce` | `NCE(solve_ratio=loss.solve_ratio)`, pool seeded with the training solutions | its value |

    `layer.perturbation: multiplicative` selects PyEPO's `…Mul` variants (the same
    θ ⊙ exp(σZ − σ²/2)). Every PyEPO module runs with `processes=1`, Gurobi with
    `Threads=1` and `OutputFlag=0`, PyTorch on one thread (restored after).

    **What differs from our run:**

    - PyEPO's `DataLoader(shuffle=True)` keeps the last partial batch of each
        epoch; our loop drops it. Its batch order comes from a `torch.Generator`
        seeded with `training.seed`, ours from NumPy: different orders.
    - The torch front end initialises `torch.nn.Linear` after
        `torch.manual_seed(training.seed)` (the same uniform law as ours, other
        numbers); the JAX front end starts from our exact initial model.
    - Noise: other draws than ours. The torch front end's modules draw from their
        own generators seeded with `training.seed`; the JAX front end passes
        `fold_in(training key, step)` to PyEPO's own sampling. I-MLE's noise enters
        as ĉ + σε in PyEPO and ĉ − σε in ours.
    - `regression`: PyEPO's `MSELoss` averages over the cost entries, ours sums
        them per instance (a constant factor, which Adam nearly ignores).
    - `dbb`, `regret`, `imle`: PyEPO's L1 loss has the regret's value but, where
        the regret is 0, float rounding picks the sign of its gradient (±c).
    - `nce`: PyEPO's pool grows without bound; ours holds `loss.pool_capacity`
        solutions (`loss.when_full`).
    - Labels and the regret come from Gurobi here, from our exact solvers in ours.

    ```python
    from perturbed_layers.experiments._config import load_config
    from perturbed_layers.experiments._pyepo_peer import train_pyepo

    config = load_config(
        "configs/pyepo_shortest_path.yaml", ["loss.name=spo_plus", "training.epochs=5"]
    )
    train_pyepo(config)  # {"normalized_regret": 0.071..., "train_seconds": ..., ...}
    ```
    """
    _check(config)
    _import_peer(front_end)
    with _one_torch_thread():
        start = time.perf_counter()
        run = _PeerRun(config, front_end)
        trained = time.perf_counter()
        run.train()
        train_seconds = time.perf_counter() - trained
        normalized_regret = run.regret()
        wall_seconds = time.perf_counter() - start
    return {
        "normalized_regret": normalized_regret,
        "train_seconds": train_seconds,
        "wall_seconds": wall_seconds,
    }
