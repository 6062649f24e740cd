"""linear_program against SciPy's linprog (HiGHS)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment, linprog

from perturbed_layers.solvers import linear_program


def random_lp(rng, n, m, p):
    """Feasible (x0 satisfies it) and bounded (box or positive A_ub rows) LPs."""
    x0 = rng.uniform(0.0, 2.0, n)
    a_ub = rng.normal(0.0, 1.0, (m, n))
    a_ub[0] = np.abs(a_ub[0]) + 0.1  # with x >= lower, bounds the feasible set
    b_ub = a_ub @ x0 + rng.uniform(0.0, 1.0, m)
    a_eq = rng.normal(0.0, 1.0, (p, n))
    b_eq = a_eq @ x0
    c = rng.normal(0.0, 1.0, n)
    lower = rng.uniform(-1.0, 0.0, n)
    upper = np.where(rng.random(n) < 0.5, x0 + rng.uniform(0.0, 2.0, n), np.inf)
    return c, a_ub, b_ub, a_eq, b_eq, lower, upper


@pytest.mark.parametrize(
    "n, m, p", [(1, 1, 0), (3, 2, 1), (8, 5, 2), (20, 10, 0), (30, 20, 5)]
)
def test_matches_highs(n, m, p):
    rng = np.random.default_rng(100 * n + 10 * m + p)
    count = 48
    lps = [random_lp(rng, n, m, p) for _ in range(count)]
    c, a_ub, b_ub, a_eq, b_eq, lower, upper = (
        np.stack(x) for x in zip(*lps, strict=True)
    )
    with jax.enable_x64(True):
        xs = np.asarray(
            linear_program(
                jnp.asarray(c),
                a_ub,
                b_ub,
                a_eq,
                b_eq,
                jnp.asarray(lower),
                jnp.asarray(upper),
            )
        )
        assert xs.dtype == np.float64
    for k in range(count):
        ref = linprog(
            c[k],
            A_ub=a_ub[k],
            b_ub=b_ub[k],
            A_eq=a_eq[k] if p else None,
            b_eq=b_eq[k] if p else None,
            bounds=list(zip(lower[k], upper[k], strict=True)),
            method="highs",
        )
        assert ref.status == 0
        x = xs[k]
        assert c[k] @ x == pytest.approx(ref.fun, rel=1e-7, abs=1e-7)
        assert np.all(a_ub[k] @ x <= b_ub[k] + 1e-8)
        np.testing.assert_allclose(a_eq[k] @ x, b_eq[k], atol=1e-8)
        assert np.all(x >= lower[k] - 1e-9) and np.all(x <= upper[k] + 1e-9)


def test_float32_pyepo_like():
    rng = np.random.default_rng(2)
    c = -rng.uniform(0, 1, (64, 20)).astype(np.float32)
    a = rng.uniform(0, 1, (64, 10, 20)).astype(np.float32)
    b = rng.uniform(1, 5, (64, 10)).astype(np.float32)
    xs = np.asarray(linear_program(c, a, b))
    assert xs.dtype == np.float32
    for k in range(64):
        ref = linprog(c[k], A_ub=a[k], b_ub=b[k], method="highs")
        assert c[k] @ xs[k] == pytest.approx(ref.fun, rel=1e-4)
        assert np.all(a[k] @ xs[k] <= b[k] + 1e-4) and np.all(xs[k] >= -1e-6)


def test_assignment_lp_is_integral():
    # The assignment polytope is totally unimodular: its vertices are permutations.
    n = 6
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(20, n, n))
    a_eq = np.concatenate(
        [np.kron(np.eye(n), np.ones(n)), np.kron(np.ones(n), np.eye(n))]
    )
    with jax.enable_x64(True):
        xs = np.asarray(
            linear_program(
                jnp.asarray(-scores.reshape(20, n * n)),
                np.zeros((0, n * n)),
                np.zeros(0),
                a_eq,
                np.ones(2 * n),
                upper=1.0,
            )
        )
    for s, x in zip(scores, xs, strict=True):
        np.testing.assert_allclose(x, np.round(x), atol=1e-9)
        rows, cols = linear_sum_assignment(s, maximize=True)
        assert s.ravel() @ x == pytest.approx(s[rows, cols].sum(), rel=1e-10)


@pytest.mark.slow
def test_degenerate_and_small():
    x = linear_program(
        jnp.array([-1.0, -1.0]),
        jnp.array([[1.0, 2.0], [3.0, 1.0]]),
        jnp.array([4.0, 6.0]),
    )
    np.testing.assert_allclose(x, [1.6, 1.2], rtol=1e-6)
    # Degenerate vertex: three constraints through (1, 1) in the plane.
    a = jnp.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    x = linear_program(jnp.array([-1.0, -2.0]), a, jnp.array([1.0, 1.0, 2.0]))
    np.testing.assert_allclose(x, [1.0, 1.0], rtol=1e-6)
    # No constraints: the lower bound, or the upper one for negative costs.
    x = linear_program(
        jnp.array([1.0, -1.0]), jnp.zeros((0, 2)), jnp.zeros(0), lower=-1.0, upper=3.0
    )
    np.testing.assert_allclose(x, [-1.0, 3.0])


@pytest.mark.slow
def test_batch_broadcast_jit_vmap_agree():
    rng = np.random.default_rng(5)
    c = jnp.asarray(-rng.uniform(0, 1, (2, 3, 6)), jnp.float32)
    a = jnp.asarray(rng.uniform(0, 1, (4, 6)), jnp.float32)
    b = jnp.ones(4)
    plain = linear_program(c, a, b)
    assert plain.shape == (2, 3, 6)
    one = [linear_program(c[i, j], a, b) for i in range(2) for j in range(3)]
    np.testing.assert_allclose(plain.reshape(6, 6), np.stack(one), rtol=1e-6)
    nested = jax.jit(jax.vmap(jax.vmap(lambda ci: linear_program(ci, a, b))))
    np.testing.assert_allclose(nested(c), plain, rtol=1e-6)


def test_argument_errors():
    c = jnp.ones(3)
    with pytest.raises(ValueError, match="A_ub"):
        linear_program(c, jnp.ones((2, 4)), jnp.ones(2))
    with pytest.raises(ValueError, match="b_ub"):
        linear_program(c, jnp.ones((2, 3)), jnp.ones(3))
    with pytest.raises(ValueError, match="A_eq and b_eq"):
        linear_program(c, jnp.ones((2, 3)), jnp.ones(2), A_eq=jnp.ones((1, 3)))
    with pytest.raises(TypeError, match="c"):
        linear_program(jnp.ones(3, jnp.int32), jnp.ones((2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="broadcast"):
        linear_program(jnp.ones((2, 3)), jnp.ones((3, 2, 3)), jnp.ones(2))
    with pytest.raises(ValueError, match="max_iterations"):
        linear_program(c, jnp.ones((2, 3)), jnp.ones(2), max_iterations=0)


def test_runtime_errors_under_jit():
    solve = jax.jit(linear_program)
    c = jnp.array([1.0, 1.0])
    a = jnp.array([[1.0, 1.0]])
    with pytest.raises(Exception, match="infeasible"):  # x + y <= -1, x, y >= 0
        solve(c, a, jnp.array([-1.0])).block_until_ready()
    with pytest.raises(Exception, match="unbounded"):  # min -x - y, x + y >= 1
        solve(-c, -a, jnp.array([-1.0])).block_until_ready()
    with pytest.raises(Exception, match="finite"):
        solve(c.at[0].set(jnp.nan), a, jnp.array([1.0])).block_until_ready()
    with pytest.raises(Exception, match="max_iterations"):
        linear_program(-c, a, jnp.array([1.0]), max_iterations=1).block_until_ready()
    np.testing.assert_allclose(solve(-c, a, jnp.array([2.0])), [2.0, 0.0])
