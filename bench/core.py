"""The contenders on the perturbed argmax, shared by the sections of bench/run.py.

Not a script (`python bench/run.py` is the entry point): it holds

- the contenders (B, n) -> (B, n): ours (`pl.PerturbedArgmax`, per-instance
  estimator), optax `make_perturbed_fun` on the whole (B, n) batch (one instance) and
  vmapped per row with split keys, jaxopt's `make_perturbed_argmax` likewise (when it
  imports and runs with this jax: `jaxopt_status`), and ablation variants of our
  estimator (`forward`, `DESCRIPTIONS`);
- the pinned inputs (θ ~ N(0, 1), cotangent v, keys) and the measures: the exact
  softmax VJP Jᵀv, J = (diag s − s sᵀ)/σ, s = softmax(θ/σ) (the Gumbel-perturbed
  argmax), relative errors and a paired bootstrap interval of their ratio;
- the programs timed (`vg_fn`: value_and_grad of ⟨y_ε(θ), v⟩; `floor_fn`: the
  noise draw alone), compiled once per run (`compiled_vg`) and timed interleaved at
  one (B, n, M) (`time_point`).
"""

import importlib.metadata
from typing import Any

import _common as C

C.setup_path()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

import perturbed_layers as pl  # noqa: E402

SIGMA = 0.5
THETA_SEED, V_SEED, KEYS_SEED, LABEL_SEED, RUN_KEY_SEED = 0, 1, 2024, 3, 7
NUM_ACC_KEYS = 20
MEM_B, MEM_N, MEM_M, MEM_CHUNK = 32, 1000, 100_000, 500
FLOOR_MIN_ELEMS = 10**7

# Compiled programs shared between sections (timing, accuracy, scaling, fy).
_COMPILED: dict[tuple, C.Compiled] = {}


# ------------------------------------------------------------------ contenders


def one_hot_argmax(x):
    """One-hot argmax along the last axis, of an array of any rank (optax's `fun`)."""
    return jax.nn.one_hot(jnp.argmax(x, axis=-1), x.shape[-1], dtype=x.dtype)


def inputs(b: int, n: int):
    """The pinned θ ~ N(0, 1) and cotangent v, both (B, n)."""
    theta = jax.random.normal(jax.random.key(THETA_SEED), (b, n), jnp.float32)
    v = jax.random.normal(jax.random.key(V_SEED), (b, n), jnp.float32)
    return theta, v


def forward(name: str, m: int, chunk: int | None = None):
    """A forward function (theta (B, n), key) -> y (B, n) for contender `name`."""
    if name.startswith("jaxopt"):
        from jaxopt import perturbations

        f = perturbations.make_perturbed_argmax(
            one_hot_argmax, m, SIGMA, perturbations.Gumbel()
        )
        if name == "jaxopt_whole":
            return lambda t, k: f(t, k)
        return lambda t, k: jax.vmap(f)(t, jax.random.split(k, t.shape[0]))
    gumbel = pl.Gumbel()
    if name == "ours":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, chunk_size=chunk
        )
        return lambda t, k: layer(t, key=k)
    if name in ("optax_whole", "optax_vmapped"):
        f = optax.perturbations.make_perturbed_fun(
            one_hot_argmax, m, SIGMA, optax.perturbations.Gumbel()
        )
        if name == "optax_whole":
            return lambda t, k: f(k, t)
        return lambda t, k: jax.vmap(f)(jax.random.split(k, t.shape[0]), t)
    if name == "pl_make_perturbed_fun_whole":
        f = pl.make_perturbed_fun(
            one_hot_argmax,
            m,
            SIGMA,
            optax.perturbations.Gumbel(),
            chunk_size=chunk,
        )
        return lambda t, k: f(k, t)

    # Ablations are estimator options (pl.Estimator), on the same layer.
    ablations = {
        "ours_loo": pl.Estimator(rao_blackwell=False, symmetrise=False),
        "ours_loo_rb": pl.Estimator(symmetrise=False),
        "ours_loo_sym": pl.Estimator(rao_blackwell=False),
        "ours_no_cv": pl.Estimator(control_variate=False),
        "ours_plain": pl.Estimator(
            baseline=False, rao_blackwell=False, symmetrise=False, control_variate=False
        ),
    }
    if name in ablations:
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, estimator=ablations[name]
        )
        return lambda t, k: layer(t, key=k)
    if name == "ours_optax_noise":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=optax.perturbations.Gumbel()
        )
        return lambda t, k: layer(t, key=k)
    if name == "ours_chunked":
        layer = pl.PerturbedArgmax(
            num_samples=m, sigma=SIGMA, noise=gumbel, chunk_size=chunk or m // 4
        )
        return lambda t, k: layer(t, key=k)
    raise ValueError(name)


DESCRIPTIONS = {
    "ours": "pl.PerturbedArgmax (leave-one-out + Rao-Blackwellised score + "
    "symmetrised + score control variate), per instance",
    "optax_whole": "optax make_perturbed_fun on the whole (B, n) batch (one instance)",
    "optax_vmapped": "optax make_perturbed_fun vmapped over rows, split keys",
    "ours_loo": "pl.Estimator(rao_blackwell=False, symmetrise=False): "
    "leave-one-out baseline only",
    "ours_loo_rb": "pl.Estimator(symmetrise=False): "
    "leave-one-out + Rao-Blackwellised score",
    "ours_loo_sym": "pl.Estimator(rao_blackwell=False): "
    "leave-one-out + symmetrised + score control variate",
    "ours_no_cv": "pl.Estimator(control_variate=False): "
    "everything but the score control variate",
    "ours_plain": "pl.Estimator(all off): the plain score-function estimator "
    "(what optax and jaxopt compute), per instance",
    "ours_optax_noise": "pl.PerturbedArgmax(noise=optax.perturbations.Gumbel()): "
    "foreign noise, projected score instead of Rao-Blackwell",
    "ours_chunked": "pl.PerturbedArgmax(chunk_size=M/4): same samples as 'ours'",
    "pl_make_perturbed_fun_whole": "pl.make_perturbed_fun, whole batch, optax noise: "
    "same samples as optax_whole",
    "jaxopt_whole": "jaxopt.perturbations.make_perturbed_argmax on the whole (B, n) "
    "batch (one instance)",
    "jaxopt_vmapped": "jaxopt make_perturbed_argmax vmapped over rows, split keys",
    "floor": "jax.random.gumbel(key, (M·B·n,)) alone, reshaped: the noise-draw floor",
}

_JAXOPT: dict[str, Any] = {}


def jaxopt_status() -> dict[str, Any]:
    """Whether jaxopt installs, imports and differentiates with this jax."""
    if _JAXOPT:
        return _JAXOPT
    try:
        version = importlib.metadata.version("jaxopt")
    except importlib.metadata.PackageNotFoundError:
        _JAXOPT.update(ok=False, reason="not installed (pip install jaxopt)")
        return _JAXOPT
    try:
        from jaxopt import perturbations

        f = perturbations.make_perturbed_argmax(
            one_hot_argmax, 10, SIGMA, perturbations.Gumbel()
        )
        t = jnp.zeros((2, 3))
        g = jax.grad(lambda t: jnp.sum(f(t, jax.random.key(0)) * t))(t)
        if not bool(jnp.all(jnp.isfinite(g))):
            raise FloatingPointError("non-finite gradient")
        _JAXOPT.update(ok=True, version=version)
    except Exception as e:
        _JAXOPT.update(
            ok=False,
            version=version,
            reason=f"does not import/run with jax {jax.__version__}: "
            f"{type(e).__name__}: {e}",
        )
    return _JAXOPT


def with_jaxopt(names: list[str]) -> list[str]:
    """`names` without jaxopt's contenders when jaxopt does not run."""
    ok = jaxopt_status()["ok"]
    return [n for n in names if ok or not n.startswith("jaxopt")]


def exact_vjp(theta, v) -> np.ndarray:
    """Jᵀv with J = (diag s − s sᵀ)/σ per row (symmetric), in float64."""
    t = np.asarray(theta, np.float64) / SIGMA
    s = np.exp(t - t.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    vv = np.asarray(v, np.float64)
    return (s * vv - s * np.sum(s * vv, -1, keepdims=True)) / SIGMA


def rel_err(est, exact: np.ndarray) -> float:
    e = np.asarray(est, np.float64)
    return float(np.linalg.norm(e - exact) / np.linalg.norm(exact))


def bootstrap_ratio_ci(a, b, draws: int = 2000, seed: int = 0) -> list[float]:
    """95% paired bootstrap interval of mean(a)/mean(b) over the keys."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(draws, len(a)))
    ratios = a[idx].mean(1) / b[idx].mean(1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


# ------------------------------------------------------------ timed programs


def vg_fn(fwd):
    """jit-able value_and_grad of θ ↦ ⟨y_ε(θ), v⟩; its gradient is vᵀ ∂y_ε/∂θ."""
    return jax.value_and_grad(lambda t, vv, k: jnp.sum(fwd(t, k) * vv))


def floor_fn(b: int, n: int, m: int):
    """The noise-draw floor: key -> the B·n·M Gumbel values alone, drawn the fastest
    way we know (one flat vector: XLA:CPU fills a 1-D array ~4x faster than a 3-D
    one of the same values)."""
    return lambda k: jax.random.gumbel(k, (m * b * n,), jnp.float32).reshape(m, b, n)


def compiled_vg(name: str, b: int, n: int, m: int) -> C.Compiled:
    """jit(value_and_grad(θ ↦ ⟨y_ε(θ), v⟩)) for a contender, compiled once per run.

    Its gradient is the VJP vᵀ ∂y_ε/∂θ, so the accuracy section uses it too."""
    key = ("vg", name, b, n, m)
    if key not in _COMPILED:
        theta, v = inputs(b, n)
        if name == "floor":
            fn, args = floor_fn(b, n, m), (jax.random.key(7),)
        else:
            fn = vg_fn(forward(name, m))
            args = (theta, v, jax.random.key(RUN_KEY_SEED))
        compiled, seconds, ma = C.compile_aot(fn, *args)
        _COMPILED[key] = C.Compiled(compiled, args, seconds, ma)
    return _COMPILED[key]


def compiled_if_any(name: str, b: int, n: int, m: int) -> C.Compiled | None:
    """The program `compiled_vg` made earlier in this run, or None."""
    return _COMPILED.get(("vg", name, b, n, m))


def time_point(
    b: int,
    n: int,
    m: int,
    names: list[str],
    *,
    repeats: int,
    budget_s: float | None = None,
    min_sample_s: float = 0.1,
    mem_limit: float = 10 * C.GIB,
) -> dict[str, Any]:
    """Interleaved timing of the contenders at one (B, n, M); paired ratios."""
    t = C.time_contenders(
        {name: compiled_vg(name, b, n, m) for name in names},
        repeats=repeats,
        budget_s=budget_s,
        min_sample_s=min_sample_s,
        mem_limit=mem_limit,
    )
    return {"B": b, "n": n, "M": m, "elements": b * n * m, **t}
