"""pl.scipy_milp: optimal against brute-force enumeration, shared and per-instance data,
one host callback for all M × B instances of a perturbed layer, errors; the TSP example."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import run_example
from scipy.optimize import linprog

import perturbed_layers as pl


def brute_force(c, a_ub, b_ub, a_eq, b_eq, upper):
    """min c·x over the integer points of [0, upper]ⁿ satisfying the constraints."""
    best, best_x = np.inf, None
    for x in itertools.product(*(range(int(u) + 1) for u in upper)):
        x = np.array(x, np.float64)
        feasible = np.all(a_ub @ x <= b_ub + 1e-9) and np.allclose(a_eq @ x, b_eq)
        if feasible and c @ x < best - 1e-12:
            best, best_x = c @ x, x
    return best, best_x


def random_problems(seed, num):
    rng = np.random.default_rng(seed)
    n = 5
    upper = np.array([1, 1, 2, 3, 1])
    out = []
    for _ in range(num):
        # Feasible by construction: a random integer point x0 satisfies them.
        x0 = np.array([rng.integers(0, u + 1) for u in upper], np.float64)
        a_ub = rng.integers(0, 4, (3, n)).astype(np.float64)
        b_ub = a_ub @ x0 + rng.integers(0, 3, 3)
        a_eq = np.ones((1, n))
        b_eq = np.array([x0.sum()])
        c = rng.normal(size=n)
        out.append((c, a_ub, b_ub, a_eq, b_eq))
    return out, upper


def test_optimal_against_brute_force_with_per_instance_data():
    problems, upper = random_problems(0, 24)
    solver = pl.scipy_milp(upper=upper)
    costs = np.stack([p[0] for p in problems]).astype(np.float32)
    args = {
        name: jnp.asarray(np.stack([p[i] for p in problems]))
        for i, name in enumerate(["c", "A_ub", "b_ub", "A_eq", "b_eq"])
        if name != "c"
    }
    x = np.asarray(jax.jit(solver)(costs, args))
    assert x.dtype == np.float32
    for k, (c, a_ub, b_ub, a_eq, b_eq) in enumerate(problems):
        best, _ = brute_force(c, a_ub, b_ub, a_eq, b_eq, upper)
        np.testing.assert_array_equal(x[k], np.round(x[k]))  # exact integers
        assert np.all(a_ub @ x[k] <= b_ub + 1e-9) and np.allclose(a_eq @ x[k], b_eq)
        assert c @ x[k] == pytest.approx(best, abs=1e-5)
    # Shared data given to scipy_milp: the same answers.
    c, a_ub, b_ub, a_eq, b_eq = problems[3]
    shared = pl.scipy_milp(A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, upper=upper)
    np.testing.assert_array_equal(np.asarray(shared(costs[3])), x[3])


def test_continuous_variables_match_linprog():
    problems, _ = random_problems(1, 4)
    for c, a_ub, b_ub, a_eq, b_eq in problems:
        solver = pl.scipy_milp(
            A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=b_eq, upper=3.0, integrality=[0] * 5
        )
        x = np.asarray(solver(jnp.asarray(c)))  # float32 costs in, float32 out
        ref = linprog(c, a_ub, b_ub, a_eq, b_eq, bounds=(0, 3))
        assert c @ x == pytest.approx(ref.fun, abs=1e-5)


_CALLS = []


def _counting_milp():
    solver = pl.scipy_milp(upper=1.0)
    fn = solver.fn

    def counted(costs, args=None):
        _CALLS.append(costs.shape)
        return fn(costs, args)

    return pl.host_solver(counted, event_ndim=1)


@pytest.mark.slow
def test_a_perturbed_layer_solves_all_instances_in_one_callback():
    # Knapsack as a MILP (binary x, W x <= C, min −v·x): the same as pl.solvers.knapsack.
    weights = jnp.array([[3.0, 2.0, 2.0, 4.0, 1.5], [1.0, 3.0, 1.0, 1.0, 2.0]])
    capacity = jnp.array([[5.0, 4.0], [8.0, 6.0], [4.0, 9.0]])
    values = jnp.array([[6.0, 5.0, 5.0, 3.0, 2.0]] * 3)
    layer = pl.Perturbed(
        _counting_milp(), objective="min", num_samples=10, sigma=0.5, noise=pl.Normal()
    )
    args = {"A_ub": jnp.broadcast_to(weights, (3, 2, 5)), "b_ub": capacity}
    key = jax.random.key(0)
    _CALLS.clear()
    loss = pl.FenchelYoungLoss(layer)
    y_true = pl.solvers.knapsack(values, weights, capacity)

    @jax.jit
    def step(v):
        grad = jax.grad(lambda u: loss(-u, y_true, args, key=key).sum())(v)
        return layer(-v, args, key=key), grad

    y, grad = step(values)
    assert _CALLS == [(30, 5), (30, 5)]  # one for the layer, one for the loss
    # The loss is in the costs −v, so its gradient in v is −(y_true − y_ε).
    np.testing.assert_allclose(grad, -(y_true - y), atol=1e-5)
    assert float(jnp.max(jnp.abs(grad))) > 0.1
    # Small σ: the optimum of pl.solvers.knapsack (ties may pick another selection).
    tiny = pl.Perturbed(
        pl.scipy_milp(upper=1.0),
        objective="min",
        num_samples=2,
        sigma=1e-5,
        noise=pl.Normal(),
    )
    exact = tiny(-values, args, key=key)
    np.testing.assert_allclose(
        jnp.sum(exact * values, -1), jnp.sum(y_true * values, -1), rtol=1e-6
    )
    assert bool(jnp.all(jnp.einsum("dn,bn->bd", weights, exact) <= capacity))


def test_errors():
    with pytest.raises(ValueError, match="integrality"):
        pl.scipy_milp(integrality=[0, 2])
    with pytest.raises(ValueError, match="A_ub must be"):
        pl.scipy_milp(A_ub=np.ones((2, 3)), b_ub=np.ones(3))
    solver = pl.scipy_milp(A_ub=np.ones((1, 2)), b_ub=np.array([-1.0]))
    with pytest.raises(Exception, match="not solved to optimality"):  # infeasible
        jax.block_until_ready(solver(jnp.ones(2)))
    with pytest.raises(Exception, match="given twice"):
        jax.block_until_ready(solver(jnp.ones(2), {"b_ub": jnp.ones(1)}))
    with pytest.raises(Exception, match="go together"):
        jax.block_until_ready(pl.scipy_milp()(jnp.ones(2), {"A_ub": jnp.ones((1, 2))}))


@pytest.mark.slow
def test_tsp_example(tmp_path_factory):
    result = run_example("perturbed_tsp", tmp_path_factory)
    assert result["tours_valid"]
    assert result["regret_after"] < result["regret_before"]
