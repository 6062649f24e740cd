"""Host solvers: one callback per call under jit/vmap, hashable, SciPy examples exact."""

import itertools
import pathlib
import subprocess
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from perturbed_layers._host import HostSolver, host_solver
from perturbed_layers._host_examples import (
    scipy_grid_shortest_path,
    scipy_linear_sum_assignment,
)
from perturbed_layers.solvers import grid_shortest_path

RUNTIME_ERRORS = (RuntimeError, ValueError)  # see tests/test_shortest_path_solvers.py
TERRAIN = np.array([0.8, 1.2, 5.3, 7.7, 9.2], np.float32)

CALLS: list[tuple[int, ...]] = []  # shapes seen by `_counting_argmax`, on the host


def _counting_argmax(theta: np.ndarray) -> np.ndarray:
    CALLS.append(theta.shape)
    return np.eye(theta.shape[1], dtype=theta.dtype)[np.argmax(theta, axis=1)]


def _wrong_shape(theta: np.ndarray) -> np.ndarray:
    return theta[:, :-1]


def test_one_host_call_for_every_instance():
    solver = host_solver(_counting_argmax)
    theta = jax.random.normal(jax.random.key(0), (3, 4, 5))
    expected = jax.nn.one_hot(jnp.argmax(theta, axis=-1), 5)
    CALLS.clear()
    np.testing.assert_array_equal(jax.jit(jax.vmap(jax.vmap(solver)))(theta), expected)
    assert CALLS == [(12, 5)]  # nested vmaps flattened into one batch
    CALLS.clear()
    np.testing.assert_array_equal(jax.jit(solver)(theta[1, 2]), expected[1, 2])
    np.testing.assert_array_equal(solver(theta[0, 0]), expected[0, 0])
    assert CALLS == [(1, 5), (1, 5)]
    # vmap over a middle axis, with the output axis moved too.
    out = jax.vmap(jax.vmap(solver), in_axes=1, out_axes=1)(theta)
    np.testing.assert_array_equal(out, expected)
    # event_ndim: extra leading axes are a batch.
    batched = host_solver(_counting_argmax, event_ndim=1)
    CALLS.clear()
    np.testing.assert_array_equal(jax.jit(batched)(theta), expected)
    assert CALLS == [(12, 5)]


def test_hashable_static_field_and_equality():
    solver = host_solver(_counting_argmax)
    assert isinstance(solver, HostSolver)
    assert solver == host_solver(_counting_argmax)
    assert hash(solver) == hash(host_solver(_counting_argmax))
    assert solver != host_solver(_counting_argmax, event_ndim=1)
    assert scipy_grid_shortest_path(8) == scipy_grid_shortest_path(8)
    assert scipy_grid_shortest_path(8) != scipy_grid_shortest_path(4)

    class Layer(eqx.Module):
        solver: HostSolver = eqx.field(static=True)
        scale: jax.Array

        def __call__(self, x):
            return self.solver(self.scale * x)

    layer = Layer(solver, jnp.array(-1.0))
    x = jnp.array([[0.0, 3.0, 1.0], [2.0, 0.0, 1.0]])
    out = eqx.filter_jit(eqx.filter_vmap(layer))(x)
    np.testing.assert_array_equal(out, [[1, 0, 0], [0, 1, 0]])  # argmax of -x


def test_out_shape_dtype_and_errors():
    def first_index(theta):  # (N, n) -> (N, 1), int32
        return np.argmax(theta, axis=1)[:, None]

    solver = host_solver(first_index, out_shape=(1,), out_dtype=jnp.int32)
    out = jax.vmap(solver)(jnp.array([[0.0, 2.0, 1.0], [3.0, 0.0, 1.0]]))
    assert out.dtype == jnp.int32
    np.testing.assert_array_equal(out, [[1], [0]])
    solver = host_solver(first_index, out_shape=lambda event: (*event[:-1], 1))
    assert solver(jnp.array([0.0, 2.0])).shape == (1,)
    with pytest.raises(RUNTIME_ERRORS, match="returned shape"):
        host_solver(_wrong_shape)(jnp.ones(4)).block_until_ready()
    with pytest.raises(TypeError, match="fn"):
        host_solver(3)  # pyright: ignore[reportArgumentType]
    with pytest.raises(ValueError, match="event_ndim"):
        host_solver(_counting_argmax, event_ndim=-1)
    with pytest.raises(ValueError, match="event_ndim"):
        host_solver(_counting_argmax, event_ndim=2)(jnp.ones(3))


def test_gradient_is_zero():
    solver = host_solver(_counting_argmax)
    grad = jax.grad(lambda t: jnp.sum(solver(t) * t))(jnp.array([0.3, 2.0, -1.0]))
    np.testing.assert_array_equal(grad, [0.0, 1.0, 0.0])  # y(θ) locally constant


@pytest.mark.parametrize("maximize", [True, False])
def test_linear_sum_assignment_brute_force(maximize):
    rng = np.random.default_rng(11)
    matrices = rng.normal(size=(6, 5, 5)).astype(np.float32)
    out = np.asarray(jax.vmap(scipy_linear_sum_assignment(maximize=maximize))(matrices))
    for matrix, p in zip(matrices, out, strict=True):
        np.testing.assert_array_equal(p.sum(0), 1)
        np.testing.assert_array_equal(p.sum(1), 1)
        values = [
            matrix[range(5), perm].sum() for perm in itertools.permutations(range(5))
        ]
        best = max(values) if maximize else min(values)
        assert np.sum(p * matrix) == pytest.approx(best, rel=1e-6, abs=1e-6)


def test_scipy_grid_shortest_path_equals_jax_solver():
    rng = np.random.default_rng(12)
    # Continuous costs: no ties, so the two solvers return the same path.
    uniform = rng.uniform(0.1, 10.0, (2, 5, 14, 11)).astype(np.float32)
    for connectivity in (4, 8):
        host = jax.jit(jax.vmap(jax.vmap(scipy_grid_shortest_path(connectivity))))
        np.testing.assert_array_equal(
            host(uniform), grid_shortest_path(uniform, connectivity)
        )
    # Warcraft terrain: many ties, so compare costs.
    terrain = TERRAIN[rng.integers(0, 5, (10, 12, 12))]
    host = scipy_grid_shortest_path(8)(terrain)
    ours = grid_shortest_path(terrain)
    assert (host[:, 0, 0] == 1).all() and (host[:, -1, -1] == 1).all()
    np.testing.assert_allclose(
        (host * terrain).sum((1, 2)), (ours * terrain).sum((1, 2)), rtol=1e-5
    )


def test_scipy_grid_shortest_path_errors():
    with pytest.raises(ValueError, match="connectivity"):
        scipy_grid_shortest_path(6)
    costs = jnp.ones((3, 3)).at[1, 1].set(-1.0)
    with pytest.raises(RUNTIME_ERRORS, match="strictly positive"):
        jax.jit(scipy_grid_shortest_path(8))(costs).block_until_ready()


def test_scipy_is_imported_lazily():
    code = (
        "import sys\n"
        "import perturbed_layers.solvers, perturbed_layers._host\n"
        "import perturbed_layers._host_examples\n"
        "assert 'scipy' not in sys.modules, 'scipy imported'\n"
    )
    root = pathlib.Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


def test_missing_scipy_says_how_to_install(monkeypatch):
    for name in ("scipy", "scipy.optimize", "scipy.sparse", "scipy.sparse.csgraph"):
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r"pip install perturbed_layers\[host\]"):
        scipy_linear_sum_assignment()
    with pytest.raises(ImportError, match=r"pip install perturbed_layers\[host\]"):
        scipy_grid_shortest_path()
