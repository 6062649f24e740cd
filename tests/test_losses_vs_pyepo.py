"""Our decision-focused losses against PyEPO 2.2.7's JAX front end (`pyepo.func.jax`)
on the same inputs: PyEPO's 5×5 shortest path (Gurobi), a batch of true costs from
`pyepo.data.shortestpath.genData` with a pinned seed, and predicted costs drawn from
them with a pinned seed.

Exact methods (SPO+, DBB, NID, NCE, CMAP, the three LTR losses) agree to 1e-5
relative (float32 on both sides). Monte-Carlo methods (PFYL, DPO + regret, I-MLE) draw
different noise on each side, so they are compared in expectation: each side's
estimate is repeated over `REPEATS` independent keys, and every coordinate of the two
means must agree within `Z` standard errors of their difference (estimated from the
spread over the repeats). With `Z = 5`
and a few hundred coordinates, a correct implementation fails with probability below
1e-3 (the keys are pinned, so the outcome is fixed anyway); each of these tests also
checks that twice our estimate, or its opposite, would fail, so the tolerance is not
vacuous.

PyEPO reduces over the batch (`reduction="mean"` by default, the DBB / NID / DPO /
I-MLE layers return solutions); ours return per-instance values. The conventions
where PyEPO and ours differ on purpose are noted at each test.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import perturbed_layers as pl

pytestmark = pytest.mark.slow

pytest.importorskip("pyepo")
pytest.importorskip("gurobipy")

GRID = 5
N_ARCS = 2 * GRID * (GRID - 1)
BATCH = 8  # instances compared
POOL_SEED_SIZE = 32  # training instances whose true solutions seed the pool
DATA_SEED = 135
RTOL = 1e-5  # exact methods, float32 on both sides
Z = 6.0  # standard errors allowed for Monte-Carlo methods
REPEATS = 16  # independent keys per Monte-Carlo estimate and side


@functools.cache
def _pyepo():
    """PyEPO's JAX front end and a working Gurobi shortest-path model, or a skip."""
    try:
        import pyepo.func.jax.perturbed  # noqa: F401  (the front end imports lazily)
        from pyepo.func import jax as pj
        from pyepo.model.grb import shortestPathModel

        model = shortestPathModel(grid=(GRID, GRID))
        model._model.Params.Threads = 1
        model.setObj(np.ones(N_ARCS))
        _, obj = model.solve()
    except Exception as e:  # no JAX front end, no licence, ...
        pytest.skip(f"PyEPO's JAX front end or Gurobi not usable: {e!r}")
    if abs(obj - 2 * (GRID - 1)) > 1e-6:
        pytest.skip(f"Gurobi returned a wrong optimum {obj}")
    return pj, model


@pytest.fixture(scope="module")
def pj():
    return _pyepo()[0]


@pytest.fixture(scope="module")
def optmodel():
    return _pyepo()[1]


@pytest.fixture(scope="module")
def data(optmodel):
    """True costs c (genData, pinned seed), predicted costs ĉ = c·U(0.3, 1.7) (pinned),
    PyEPO's (Gurobi's) true solutions w and objectives z, and a PyEPO dataset of other
    instances to seed the solution pools."""
    from pyepo.data.dataset import optDataset
    from pyepo.data.shortestpath import genData

    x, c = genData(
        BATCH + POOL_SEED_SIZE, 5, (GRID, GRID), deg=4, noise_width=0.5, seed=DATA_SEED
    )
    c = np.asarray(c, np.float32)
    rng = np.random.default_rng(0)
    pred = c[:BATCH] * rng.uniform(0.3, 1.7, c[:BATCH].shape).astype(np.float32)
    batch = optDataset(optmodel, x[:BATCH], c[:BATCH])
    pool_data = optDataset(optmodel, x[BATCH:], c[BATCH:])
    return {
        "pred": jnp.asarray(pred),
        "costs": jnp.asarray(c[:BATCH]),
        "w": jnp.asarray(np.asarray(batch.sols, np.float32)),
        "z": jnp.asarray(np.asarray(batch.objs, np.float32)),
        "pool_data": pool_data,
    }


def layer(num_samples=1, sigma=1.0):
    """Our minimising layer on PyEPO's grid (its arc order), Normal noise."""
    return pl.Perturbed(
        pl.solvers.pyepo_shortest_path,
        objective="min",
        event_ndim=1,
        num_samples=num_samples,
        sigma=sigma,
        noise=pl.Normal(),
    )


def assert_close(ours, theirs, what):
    """Exact methods: 1e-5 relative to the larger entry of PyEPO's side."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    scale = max(float(np.max(np.abs(theirs))), 1e-6)
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * scale, err_msg=what)


def keys(seed):
    """`REPEATS` independent keys."""
    return jax.random.split(jax.random.key(seed), REPEATS)


def agree_in_expectation(ours, theirs, what):
    """`ours`, `theirs`: (REPEATS, ...) independent estimates of the same quantity.
    Their means must agree within Z standard errors of the difference (the standard
    errors from the spread over the repeats; 1e-5 of PyEPO's scale added for the
    coordinates that neither side saw vary); twice our mean and its opposite must not
    (the tolerance has power)."""
    mean_o, mean_t = ours.mean(0), theirs.mean(0)
    se = np.sqrt(ours.var(0, ddof=1) / len(ours) + theirs.var(0, ddof=1) / len(theirs))
    tol = Z * se + RTOL * np.max(np.abs(mean_t))
    excess = np.abs(mean_o - mean_t) - tol
    assert np.all(excess <= 0), (
        f"{what}: ours and PyEPO's differ beyond {Z} standard errors at "
        f"{np.argwhere(excess > 0).tolist()[:5]}: ours {mean_o[excess > 0][:5]}, "
        f"PyEPO {mean_t[excess > 0][:5]}, tolerance {tol[excess > 0][:5]}"
    )
    for wrong in (2 * mean_o, -mean_o):
        assert np.any(np.abs(wrong - mean_t) > tol), f"{what}: tolerance too loose"


# ------------------------------------------------------------------ the solver


def test_our_solver_is_gurobi_on_the_batch(data, optmodel):
    # The exact comparisons below need the same solutions: w*(c), w*(ĉ) and w*(2ĉ − c)
    # from our dynamic programme equal Gurobi's (no ties in these real-valued costs).
    from pyepo.func.jax.utils import _solve_batch

    solve = jax.vmap(pl.solvers.pyepo_shortest_path)
    for costs in (data["costs"], data["pred"], 2 * data["pred"] - data["costs"]):
        gurobi, _ = _solve_batch(costs, optmodel)
        np.testing.assert_array_equal(np.asarray(solve(costs)), np.asarray(gurobi))
    np.testing.assert_array_equal(np.asarray(solve(data["costs"])), data["w"])


# ------------------------------------------------------------------- SPO+


def test_spo_plus_value_and_gradient(data, pj, optmodel):
    pred, c, w, z = data["pred"], data["costs"], data["w"], data["z"]
    # PyEPO returns the batch mean (reduction="mean"); ours the per-instance values.
    spop = pj.SPOPlus(optmodel)
    spop_none = pj.SPOPlus(optmodel, reduction="none")
    ours = pl.SPOPlusLoss(layer())

    def ours_mean(p):
        return ours(p, c, y_true=w).mean()

    value, grad = jax.value_and_grad(ours_mean)(pred)
    t_value, t_grad = jax.value_and_grad(lambda p: spop(p, c, w, z))(pred)
    assert_close(ours(pred, c, y_true=w), spop_none(pred, c, w, z), "SPO+ values")
    assert_close(value, t_value, "SPO+ mean")
    assert_close(grad, t_grad, "SPO+ gradient")
    # Not vacuous: the loss and the gradient are non-zero on most instances.
    assert np.sum(np.any(np.asarray(grad) != 0, axis=1)) >= BATCH // 2
    # Without y_true ours solves w*(c) itself: the same.
    assert_close(ours(pred, c), spop_none(pred, c, w, z), "SPO+ values, w*(c) solved")


# ------------------------------------------------- DBB and NID (solutions out)


def test_dbb_forward_and_backward(data, pj, optmodel):
    pred = data["pred"]
    lambd = 10.0
    # The same incoming cotangent on both sides: a random one, big enough that
    # ĉ + λg moves most instances' solutions.
    g = jax.random.normal(jax.random.key(1), pred.shape) * 0.1
    dbb = pj.blackboxOpt(optmodel, lambd=lambd)
    ours = pl.BlackboxDifferentiation(layer(), lambd=lambd)
    y, vjp = jax.vjp(ours, pred)
    t_y, t_vjp = jax.vjp(dbb, pred)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(t_y))
    (grad,), (t_grad,) = vjp(g), t_vjp(g)
    # PyEPO divides by λ + 1e-8 (its _EPS): 1e-9 relative at λ = 10.
    assert_close(grad, t_grad, "DBB backward")
    assert np.sum(np.any(np.asarray(grad) != 0, axis=1)) >= BATCH // 2


def test_nid_forward_and_backward(data, pj, optmodel):
    pred = data["pred"]
    g = jax.random.normal(jax.random.key(2), pred.shape)
    y, vjp = jax.vjp(pl.NegativeIdentity(layer()), pred)
    t_y, t_vjp = jax.vjp(pj.negativeIdentity(optmodel), pred)
    np.testing.assert_array_equal(np.asarray(y), np.asarray(t_y))
    assert_close(vjp(g)[0], t_vjp(g)[0], "NID backward (−g for costs)")


# --------------------------------------------------- losses over a solution pool


def pools(data, pj_loss, optmodel):
    """PyEPO's pool loss (mean and "none" reductions) and our pool, seeded alike
    with the pool dataset's true solutions."""
    mean = pj_loss(optmodel, dataset=data["pool_data"])
    none = pj_loss(optmodel, dataset=data["pool_data"], reduction="none")
    ours = pl.SolutionPool.from_solutions(
        jnp.asarray(np.asarray(data["pool_data"].sols, np.float32)), capacity=128
    )
    return mean, none, ours


def sorted_rows(x):
    x = np.asarray(x)
    return x[np.lexsort(x.T[::-1])]


POOL_CASES = {
    # name: (PyEPO class name, our constructor, target key)
    "nce": ("NCE", pl.NCELoss, "w"),
    "cmap": ("CMAP", pl.CMAPLoss, "w"),
    "ltr_pointwise": ("pointwiseLearningToRank", pl.PointwiseLTRLoss, "costs"),
    "ltr_pairwise": ("pairwiseLearningToRank", pl.PairwiseLTRLoss, "costs"),
    # PyEPO's listwise has no temperature: it is ours at τ = 1. PyEPO clips the true
    # distribution at 1e-8 (ours does not): at most 1e-8·Σ|log p| apart, within 1e-5.
    "ltr_listwise": ("listwiseLearningToRank", pl.ListwiseLTRLoss, "costs"),
}


@pytest.mark.parametrize("name", list(POOL_CASES))
def test_pool_losses_same_pool(name, data, pj, optmodel):
    pj_name, cls, target_key = POOL_CASES[name]
    pred, target = data["pred"], data[target_key]
    mean, none, pool = pools(data, getattr(pj, pj_name), optmodel)
    # Both refresh the pool with w*(ĉ) of every instance (solve_ratio 1) before the
    # loss, PyEPO eagerly (its pool cannot be traced), ours in `value_and_pool`.
    # PyEPO's first call refreshes its pool; the "none" module refreshes its own.
    t_value, t_grad = jax.value_and_grad(lambda p: mean(p, target))(pred)
    t_values = none(pred, target)
    loss = cls(layer(), solve_ratio=1.0)

    def ours_mean(p):
        values, new_pool = loss.value_and_pool(p, target, pool)
        return values.mean(), (values, new_pool)

    (value, (values, new_pool)), grad = jax.value_and_grad(ours_mean, has_aux=True)(
        pred
    )
    stored = np.asarray(new_pool.solutions)[np.asarray(new_pool.valid)]
    np.testing.assert_array_equal(sorted_rows(stored), sorted_rows(mean.solpool))
    assert len(stored) > len(sorted_rows(np.unique(data["w"], axis=0)))
    assert_close(values, t_values, f"{name} values")
    assert_close(value, t_value, f"{name} mean")
    assert_close(grad, t_grad, f"{name} gradient")
    assert np.any(np.asarray(grad) != 0)


# ------------------------------------------------------- Monte-Carlo methods


SIGMA = 0.5
MC_BATCH = 4  # instances in the Monte-Carlo comparisons
PYEPO_SAMPLES = 200  # per instance and key, PyEPO's side (Gurobi, ~0.1 ms a solve)
OUR_SAMPLES = 1000  # per instance and key, ours


def test_perturbed_fenchel_young_gradient_and_value(data, pj, optmodel):
    pred, w = data["pred"][:MC_BATCH], data["w"][:MC_BATCH]
    # reduction="none": per-instance values, so the gradient of their sum is ours.
    pfy = pj.perturbedFenchelYoung(
        optmodel, n_samples=PYEPO_SAMPLES, sigma=SIGMA, reduction="none"
    )
    ours = pl.FenchelYoungLoss(layer(OUR_SAMPLES, SIGMA))

    def values_and_grad(loss):
        values, vjp = jax.vjp(loss, pred)
        return values, vjp(jnp.ones_like(values))[0]

    theirs = jax.jit(lambda key: values_and_grad(lambda p: pfy(p, w, key=key)))
    our = eqx.filter_jit(lambda key: values_and_grad(lambda p: ours(p, w, key=key)))
    t = [theirs(k) for k in keys(3)]
    o = [our(k) for k in keys(4)]
    # The gradient, w*(c) − E[w*(ĉ + σZ)] on both sides (PyEPO perturbs ĉ + σZ, ours
    # ĉ − σZ for costs: the same law for Normal noise).
    agree_in_expectation(
        np.stack([g for _, g in o]), np.stack([g for _, g in t]), "PFYL gradient"
    )
    # The value: PyEPO issue 46 (2024) reported that PyEPO's PFY "loss" was not the
    # Fenchel–Young value. In 2.2.7 both front ends return ⟨ĉ, w⟩ − E[min_w' ⟨ĉ +
    # σZ, w'⟩], which is ours: the Fenchel–Young loss F_ε(ĉ) + Ω_ε(w) − ⟨ĉ, w⟩ in
    # the minimiser's signs without Ω_ε(w), a constant in ĉ that neither side can
    # compute for a polytope (no closed form). So they agree in expectation:
    values_o = np.stack([v for v, _ in o])
    agree_in_expectation(values_o, np.stack([v for v, _ in t]), "PFYL value")
    # ... and ours is the Fenchel–Young value up to that constant: non-negative in
    # expectation (Jensen: E[min ⟨ĉ + σZ, w'⟩] ≤ min ⟨ĉ, w'⟩ ≤ ⟨ĉ, w⟩), and its
    # derivative along any direction is its gradient (with the noise held fixed the
    # estimate is piecewise linear in ĉ, so central differences are exact off kinks).
    assert np.all(values_o.mean(0) > 0)
    with jax.enable_x64(True):  # h small enough to cross no kink of 4000 samples
        p64, w64, key = pred.astype(jnp.float64), w.astype(jnp.float64), keys(7)[0]
        direction = jax.random.normal(jax.random.key(8), pred.shape, jnp.float64)
        value_at = eqx.filter_jit(lambda p: ours(p, w64, key=key).sum())
        h = 1e-6
        slope = (value_at(p64 + h * direction) - value_at(p64 - h * direction)) / (
            2 * h
        )
        grad = jax.grad(value_at)(p64)
        np.testing.assert_allclose(slope, jnp.sum(grad * direction), rtol=1e-7)


def test_perturbed_regret_dpo_gradient(data, pj, optmodel):
    # PyEPO's DPO is a layer (the perturbed expected solution) that its users feed to
    # a task loss; the regret ⟨c, E[w*(ĉ + σZ)]⟩ − z*(c) per instance is ours as
    # pl.RegretLoss around the perturbed layer. Both gradients are score-function
    # estimates of ∇_ĉ E[⟨c, w*(ĉ + σZ)⟩] with a mean baseline.
    pred, c = data["pred"][:MC_BATCH], data["costs"][:MC_BATCH]
    w, z = data["w"][:MC_BATCH], data["z"][:MC_BATCH, 0]
    dpo = pj.perturbedOpt(optmodel, n_samples=PYEPO_SAMPLES, sigma=SIGMA)
    ours = pl.RegretLoss(layer(OUR_SAMPLES, SIGMA))

    @jax.jit
    def theirs(key):
        def regret(p):
            return jnp.sum(dpo(p, key=key) * c, axis=1) - z

        return jax.value_and_grad(lambda p: regret(p).sum())(pred)

    @eqx.filter_jit
    def our(key):
        return jax.value_and_grad(lambda p: ours(p, c, y_true=w, key=key).sum())(pred)

    t = [theirs(k) for k in keys(9)]
    o = [our(k) for k in keys(10)]
    agree_in_expectation(
        np.stack([np.asarray(v) for v, _ in o]),
        np.stack([np.asarray(v) for v, _ in t]),
        "perturbed regret value",
    )
    agree_in_expectation(
        np.stack([g for _, g in o]),
        np.stack([g for _, g in t]),
        "perturbed regret gradient",
    )


class _NegatedSumOfGamma:
    """−ε for ε ~ pl.SumOfGamma(κ, 1, s): PyEPO perturbs ĉ + σε, ours ĉ − σε."""

    def __init__(self, k, s):
        self.noise = pl.SumOfGamma(k, tau=1.0, s=s)

    def sample(self, key, sample_shape=(), dtype=jnp.float32):
        return -self.noise.sample(key, sample_shape, dtype)

    def log_prob(self, z):
        raise NotImplementedError


def test_imle_forward_and_backward(data, pj, optmodel):
    # I-MLE with Sum-of-Gamma noise (κ = 5, 10 terms: PyEPO's defaults), λ = 10, the
    # same cotangent (the regret's, c) on both sides. On purpose, the perturbation
    # differs: ours follows Niepert et al. for costs, p(w) ∝ exp(−⟨c, w⟩/τ), i.e.
    # w*(ĉ − σε), where PyEPO solves w*(ĉ + σε); Sum-of-Gamma noise is skewed, so the
    # two differ in law. With the noise negated on our side they are the same
    # estimator, compared in expectation.
    pred, c = data["pred"][:MC_BATCH], data["costs"][:MC_BATCH]
    kappa, terms, lambd, samples = 5.0, 10, 10.0, 50
    imle = pj.implicitMLE(
        optmodel,
        n_samples=samples,
        sigma=SIGMA,
        lambd=lambd,
        kappa=kappa,
        n_iterations=terms,
    )
    ours = pl.IMLE(
        layer(),
        lambd=lambd,
        noise=_NegatedSumOfGamma(kappa, terms),
        num_samples=samples,
        sigma=SIGMA,
    )

    @jax.jit
    def theirs(key):
        y, vjp = jax.vjp(lambda p: imle(p, key=key), pred)
        return y, vjp(c)[0]

    @eqx.filter_jit
    def our(key):
        y, vjp = jax.vjp(lambda p: ours(p, key=key), pred)
        return y, vjp(c)[0]

    t = [theirs(k) for k in keys(11)]
    o = [our(k) for k in keys(12)]
    for i, what in enumerate(("I-MLE forward", "I-MLE backward")):
        agree_in_expectation(
            np.stack([np.asarray(x[i]) for x in o]),
            np.stack([np.asarray(x[i]) for x in t]),
            what,
        )
