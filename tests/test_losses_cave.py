"""CaVE against its definition: the cone projection against scipy's NNLS, the loss on
the simplex written out (a 1-D problem), finite differences, the signs for max and
min, the binding normals and the loss against PyEPO on its 5×5 shortest path."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize as so
from helpers import argmax_layer

import perturbed_layers as pl
from perturbed_layers._losses._cave import _project_on_cone


def nnls_projection(s, g):
    """The projection of s on cone{Gᵀλ : λ ≥ 0} by scipy's NNLS (padding rows dropped),
    s itself without rows (PyEPO's convention)."""
    g = g[np.abs(g).sum(axis=1) > 1e-7]
    if len(g) == 0:
        return s
    lam, _ = so.nnls(g.T, s, maxiter=10_000)
    return g.T @ lam


def cosine_loss(s, p):
    return 1 - s @ p / (np.linalg.norm(s) * np.linalg.norm(p))


def simplex_normals(k, n):
    """Binding normals of the vertex e_k of {w ≥ 0, Σw = 1}: ±1 and −e_j, j ≠ k, with
    two rows of padding."""
    rows = [np.ones(n), -np.ones(n)] + [-np.eye(n)[j] for j in range(n) if j != k]
    return np.concatenate([np.array(rows), np.zeros((2, n))])


def simplex_projection(s, k):
    """Written out: cone = {t·1 − Σ_{j≠k} μ_j e_j}; the residual s − p has entries
    s_k − t at k and max(s_j − t, 0) elsewhere, t minimising their squared norm
    (a 1-D convex problem)."""
    others = np.delete(s, k)

    def f(t):
        return (s[k] - t) ** 2 + np.sum(np.maximum(others - t, 0) ** 2)

    t = so.minimize_scalar(
        f, bounds=(s.min() - 1, s.max() + 1), method="bounded", options={"xatol": 1e-12}
    ).x
    residual = np.maximum(s - t, 0)
    residual[k] = s[k] - t
    return s - residual


@pytest.mark.slow
def test_projection_is_scipys_nnls():
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        for m, n in ((3, 5), (8, 5), (12, 6)):
            g = rng.normal(size=(20, m, n))
            g[:, -1] = 0  # padding
            g[:, 1] = -g[:, 0]  # an equality: ± the same row
            s = rng.normal(size=(20, n))
            ours = jax.vmap(_project_on_cone, in_axes=(0, 0, None))(
                jnp.asarray(s), jnp.asarray(g), 2000
            )
            ref = np.stack([nnls_projection(s[i], g[i]) for i in range(20)])
            np.testing.assert_allclose(ours, ref, atol=1e-7)
        # No rows at all: s itself.
        none = _project_on_cone(jnp.asarray(s[0]), jnp.zeros((4, s.shape[1])), 10)
        np.testing.assert_array_equal(none, s[0])


@pytest.mark.slow
def test_cave_argmax_closed_form_and_gradient():
    # A maximising layer: s = θ̂ must lie in the cone {θ_k ≥ θ_j} of the true vertex.
    rng = np.random.default_rng(1)
    theta_hat = rng.normal(size=(6, 4))
    truth = rng.integers(0, 4, size=6)
    normals = np.stack([simplex_normals(k, 4) for k in truth])
    with jax.enable_x64(True):
        loss = pl.CaVELoss(argmax_layer())
        value = loss(jnp.asarray(theta_hat), jnp.asarray(normals))
        grad = jax.grad(lambda t: loss(t, jnp.asarray(normals)).sum())(
            jnp.asarray(theta_hat)
        )
        assert value.shape == (6,)
        for i in range(6):
            s = theta_hat[i]
            p = simplex_projection(s, truth[i])
            np.testing.assert_allclose(value[i], cosine_loss(s, p), atol=1e-8)
            # ∂/∂s of 1 − <s, p>/(|s||p|) with p fixed.
            ns, np_ = np.linalg.norm(s), np.linalg.norm(p)
            expected = -(p / (ns * np_) - (s @ p) * s / (ns**3 * np_))
            np.testing.assert_allclose(grad[i], expected, atol=1e-7)
        optimal = np.argmax(theta_hat, -1) == truth
        assert np.all(np.asarray(value)[optimal] < 1e-10)
        assert np.all(np.asarray(value)[~optimal] > 1e-3) and np.any(~optimal)


@pytest.mark.slow
def test_cave_gradient_is_finite_differences():
    # The projection is held fixed in the derivative, yet that is the full derivative:
    # <s, P(s)> = |P(s)|² (Moreau), so cos = |P(s)|/|s| and P(s)ᵀDP(s) = P(s)ᵀ.
    rng = np.random.default_rng(2)
    with jax.enable_x64(True):
        g = jnp.asarray(rng.normal(size=(5, 6, 4)))
        pred = jnp.asarray(rng.normal(size=(5, 4)))
        loss = pl.CaVELoss(argmax_layer(), num_iterations=3000)
        grad = jax.grad(lambda p: loss(p, g).sum())(pred)
        eps = 1e-6
        fd = np.zeros(pred.shape)
        for j in range(4):
            e = jnp.zeros_like(pred).at[:, j].set(eps)
            fd[:, j] = (loss(pred + e, g) - loss(pred - e, g)) / (2 * eps)
        np.testing.assert_allclose(grad, fd, atol=1e-6)
        assert np.abs(fd).max() > 1e-2


@pytest.mark.slow
def test_cave_minimisation_mirrors_maximisation_and_lp_normals():
    # min ⟨c, w⟩ on the simplex as a pl.PerturbedLinearProgram: its binding normals
    # come from pl.binding_normals, and the loss is the argmax's on −ĉ.
    rng = np.random.default_rng(3)
    layer = pl.PerturbedLinearProgram(
        A_eq=jnp.ones((1, 4)),
        b_eq=jnp.ones(1),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
    )
    costs = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    pred = jnp.asarray(rng.normal(size=(2, 3, 4)), jnp.float32)
    y_true = jax.vmap(jax.vmap(layer.solve))(costs)
    normals = pl.binding_normals(layer, y_true)
    assert normals.shape == (2, 3, 2 + 4, 4)
    loss = pl.CaVELoss(layer)
    value = loss(pred, normals)
    assert value.shape == (2, 3)
    k = np.argmax(np.asarray(y_true), -1)
    flat = np.asarray(pred).reshape(6, 4)
    for i, kk in enumerate(k.reshape(-1)):
        s = -flat[i].astype(np.float64)
        expected = cosine_loss(s, simplex_projection(s, kk))
        np.testing.assert_allclose(value.reshape(-1)[i], expected, atol=1e-5)
    # The same numbers through the argmax layer on −ĉ with hand-written normals.
    hand = jnp.asarray(np.stack([simplex_normals(kk, 4) for kk in k.reshape(-1)]))
    mirrored = pl.CaVELoss(argmax_layer())(-pred.reshape(6, 4), hand)
    np.testing.assert_allclose(mirrored, value.reshape(-1), atol=1e-5)
    # Wrong signs do not match: the argmax loss on +ĉ is another number.
    wrong = pl.CaVELoss(argmax_layer())(pred.reshape(6, 4), hand)
    assert not np.allclose(wrong, value.reshape(-1), atol=1e-3)
    # At the true costs the loss is 0.
    np.testing.assert_allclose(loss(costs, normals), 0.0, atol=1e-5)


def test_binding_normals_of_a_box_and_inequalities():
    layer = pl.PerturbedLinearProgram(
        A_ub=jnp.array([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]]),
        b_ub=jnp.array([1.0, 5.0]),
        upper=jnp.array([1.0, 2.0, 3.0]),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
    )
    y = jnp.array([1.0, 0.0, 3.0])
    rows = np.asarray(pl.binding_normals(layer, y))
    expected = np.zeros((2 + 3 + 3, 3))
    expected[0] = [1, 1, 0]  # 1 + 0 = 1 binds; 0 + 3 < 5 does not
    expected[2 + 1] = [0, -1, 0]  # y1 at its lower bound 0
    expected[5 + 0] = [1, 0, 0]  # y0 at its upper bound 1
    expected[5 + 2] = [0, 0, 1]  # y2 at its upper bound 3
    np.testing.assert_array_equal(rows, expected)


def test_cave_inside_jit_and_nan_instance_only():
    rng = np.random.default_rng(4)
    g = jnp.asarray(rng.normal(size=(3, 5, 4)), jnp.float32)
    pred = jnp.asarray(rng.normal(size=(3, 4)), jnp.float32)
    loss = pl.CaVELoss(argmax_layer())
    value, grad = jax.jit(jax.value_and_grad(lambda p: loss(p, g).sum()))(pred)
    np.testing.assert_allclose(value, loss(pred, g).sum(), rtol=1e-6)
    assert np.all(np.isfinite(grad))
    nan = loss(pred.at[1, 0].set(jnp.nan), g)
    assert np.isnan(nan[1]) and np.all(np.isfinite(nan[jnp.array([0, 2])]))


def test_cave_bad_input():
    loss = pl.CaVELoss(argmax_layer())
    with pytest.raises(ValueError, match="normals"):
        loss(jnp.ones((2, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="normals"):
        loss(jnp.ones((2, 4)), jnp.ones((3, 5, 4)))
    with pytest.raises(ValueError, match="normals"):
        loss(jnp.ones((2, 4)), jnp.ones((2, 5, 3)))
    with pytest.raises(TypeError, match="pred"):
        loss(jnp.ones((2, 4), jnp.int32), jnp.ones((2, 5, 4)))
    with pytest.raises(ValueError, match="num_iterations"):
        pl.CaVELoss(argmax_layer(), num_iterations=0)
    with pytest.raises(ValueError, match="objective"):
        pl.CaVELoss(pl.Perturbed(jnp.sort, num_samples=1, sigma=1.0, noise=pl.Normal()))
    with pytest.raises(TypeError, match="PerturbedLinearProgram"):
        pl.binding_normals(argmax_layer(), jnp.ones(4))  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="tol"):
        lp = pl.PerturbedLinearProgram(num_samples=1, sigma=1.0, noise=pl.Normal())
        pl.binding_normals(lp, jnp.ones(4), tol=-1.0)


def _pyepo_grid_lp():
    """PyEPO's 5×5 shortest path (Gurobi) and the same problem as our LP layer: flow
    conservation at the 25 nodes over `pl.solvers.pyepo_grid_arcs(5)`, 0 ≤ w ≤ 1."""
    grb = pytest.importorskip("pyepo.model.grb")
    try:
        optmodel = grb.shortestPathModel(grid=(5, 5))
    except Exception as e:  # no Gurobi licence
        pytest.skip(f"PyEPO's Gurobi model is not usable: {e}")
    optmodel._model.Params.Threads = 1
    arcs = pl.solvers.pyepo_grid_arcs(5)
    incidence = np.zeros((25, len(arcs)))
    for j, (u, v) in enumerate(arcs):
        incidence[u, j], incidence[v, j] = 1.0, -1.0
    supply = np.zeros(25)
    supply[0], supply[24] = 1.0, -1.0
    layer = pl.PerturbedLinearProgram(
        A_eq=jnp.asarray(incidence),
        b_eq=jnp.asarray(supply),
        upper=jnp.ones(len(arcs)),
        num_samples=1,
        sigma=1.0,
        noise=pl.Normal(),
    )
    return optmodel, layer


@pytest.mark.slow
def test_cave_is_pyepos_on_the_shortest_path():
    # Same cones (PyEPO's normals from optDatasetConstrs, ours from binding_normals
    # on the LP), same loss: against PyEPO's formula with scipy's NNLS (1e-5, float32
    # rounding) and against pyepo.func.jax.CaVE with Clarabel run to convergence
    # (max_iter=100; Clarabel's tolerance 1e-8 relative: agreement to 1e-4).
    dataset = pytest.importorskip("pyepo.data.dataset")
    optmodel, layer = _pyepo_grid_lp()
    rng = np.random.default_rng(5)
    costs = rng.uniform(0.5, 2.0, (12, 40))
    data = dataset.optDatasetConstrs(optmodel, rng.normal(size=(12, 5)), costs)
    theirs_rows = [np.asarray(t) for t in data.ctrs]
    y_true = np.asarray(data.sols)
    # Our LP solver finds the same paths, and binding_normals the same rows (PyEPO's
    # order differs; compare them as sets).
    ours_y = jax.vmap(layer.solve)(jnp.asarray(costs, jnp.float32))
    np.testing.assert_allclose(ours_y, y_true, atol=1e-5)
    ours_normals = np.asarray(
        pl.binding_normals(layer, jnp.asarray(y_true, jnp.float32))
    )
    for mine, theirs in zip(ours_normals, theirs_rows, strict=True):
        mine = mine[np.abs(mine).sum(1) > 0]
        as_set = lambda r: sorted(map(tuple, np.round(r, 6)))  # noqa: E731
        assert as_set(mine) == as_set(theirs)
    m = max(len(t) for t in theirs_rows)
    padded = np.zeros((12, m, 40), np.float32)
    for i, t in enumerate(theirs_rows):
        padded[i, : len(t)] = t
    pred = rng.uniform(0.5, 2.0, (12, 40)).astype(np.float32)
    ours = pl.CaVELoss(layer)(jnp.asarray(pred), jnp.asarray(ours_normals))
    formula = [
        cosine_loss(-p, nnls_projection(-p.astype(np.float64), t))
        for p, t in zip(pred, theirs_rows, strict=True)
    ]
    np.testing.assert_allclose(ours, formula, atol=1e-5)
    assert np.max(formula) > 1e-3  # not all at the trivial 0
    pytest.importorskip("clarabel")
    from pyepo.func import jax as pj

    cave = pj.CaVE(optmodel, max_iter=100, reduction="none")
    theirs = cave(jnp.asarray(pred), jnp.asarray(padded))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    theirs_grad = jax.grad(lambda p: cave(p, jnp.asarray(padded)).sum())(
        jnp.asarray(pred)
    )
    ours_grad = jax.grad(
        lambda p: pl.CaVELoss(layer)(p, jnp.asarray(ours_normals)).sum()
    )(jnp.asarray(pred))
    np.testing.assert_allclose(ours_grad, theirs_grad, atol=1e-4)
