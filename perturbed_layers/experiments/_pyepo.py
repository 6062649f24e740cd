"""PyEPO's shortest-path benchmark on an m × m grid: generator, split, task, metric.

The generator is PyEPO's `pyepo.data.shortestpath.genData`, reproduced draw for draw:
with `rnd = np.random.RandomState(seed)`, B = rnd.binomial(1, 0.5, (d, p)) first, then
x = rnd.normal(0, 1, (n, p)), then ε = rnd.uniform(1 − ē, 1 + ē, (n, d)), and

    c = (((x Bᵀ)/√p + 3)^deg + 1) / 3.5^deg ⊙ ε,   as float32,

with d = 2 m (m − 1) arcs in PyEPO's order (`pl.solvers.pyepo_grid_arcs`), source node
0 and sink node m² − 1. The split reproduces scikit-learn's
`train_test_split(x, c, test_size=n_test, random_state=seed)` without importing
scikit-learn: that function draws one `np.random.RandomState(seed).permutation(n)`
(its `ShuffleSplit`) and takes the first `n_test` indices for the test set and the
next `n − n_test` for the training set.

Metric: the normalised regret Σᵢ (cᵢᵀ w*(ĉᵢ) − z*(cᵢ)) / Σᵢ |z*(cᵢ)| over the test set
(PyEPO's `pyepo.metric.regret`), with w*(ĉ) the exact shortest path for the predicted
costs and z*(c) the optimal cost for the true ones.

**References:** Tang & Khalil, *PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
Library*, 2022; Elmachtoub & Grigas, *Smart "Predict, then Optimize"*, 2022.
"""

import functools
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from pydantic import Field, model_validator

import perturbed_layers as pl

from ._options import DataOptions, FiniteFloat, PerturbedLayerOptions, PositiveInt
from ._tasks import AbstractRegretTask, AbstractTask, Batch, Dataset


def pyepo_shortest_path_data(
    num_data: int,
    num_features: int,
    grid: tuple[int, int] = (5, 5),
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 135,
) -> tuple[np.ndarray, np.ndarray]:
    """PyEPO's `genData` for the shortest path: features and arc costs.

    **Arguments:** as PyEPO's (`num_data` n, `num_features` p, `grid`, `deg`,
    `noise_width` ē, `seed`), with PyEPO's defaults.

    **Returns:** `x` of shape `(n, p)` (float64, as PyEPO) and `c` of shape `(n, d)`
    (float32), `d = (grid[0] − 1) grid[1] + (grid[1] − 1) grid[0]`.

    ```python
    from perturbed_layers.experiments import pyepo_shortest_path_data

    x, c = pyepo_shortest_path_data(2000, 5, (5, 5), deg=4, noise_width=0.5, seed=42)
    x.shape, c.shape  # (2000, 5), (2000, 40)
    ```
    """
    if isinstance(deg, bool) or not isinstance(deg, int) or deg <= 0:
        raise ValueError(f"deg must be a positive int, got {deg!r}")
    rnd = np.random.RandomState(seed)
    n, p = num_data, num_features
    d = (grid[0] - 1) * grid[1] + (grid[1] - 1) * grid[0]
    b = rnd.binomial(1, 0.5, (d, p))
    x = rnd.normal(0, 1, (n, p))
    c = (x @ b.T / np.sqrt(p) + 3) ** deg + 1
    c /= 3.5**deg
    c *= rnd.uniform(1 - noise_width, 1 + noise_width, (n, d))
    return x, c.astype(np.float32)


def sklearn_train_test_split(
    num_data: int, test_size: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices of scikit-learn's `train_test_split(..., test_size=k,
    random_state=s)` for an integer `k`: `perm = RandomState(s).permutation(n)`, test
    `perm[:k]`, train `perm[k:]` (scikit-learn's `ShuffleSplit`, reproduced)."""
    if not 0 < test_size < num_data:
        raise ValueError(f"test_size must be in (0, {num_data}), got {test_size}")
    permutation = np.random.RandomState(random_state).permutation(num_data)
    return permutation[test_size:], permutation[:test_size]


class AbstractPyEPOData(DataOptions):
    """The options every PyEPO generator takes (each task gives its own defaults) and
    the train/test split of PyEPO's notebooks (`train_test_split` reproduced)."""

    num_data: PositiveInt
    num_features: PositiveInt
    deg: PositiveInt
    noise_width: float
    seed: int
    test_size: PositiveInt
    split_seed: int

    @model_validator(mode="after")
    def _check_split(self) -> "AbstractPyEPOData":
        if self.test_size >= self.num_data:
            raise ValueError(
                f"test_size ({self.test_size}) must be smaller than num_data "
                f"({self.num_data})"
            )
        return self

    def split(self) -> tuple[np.ndarray, np.ndarray]:
        """Train and test indices."""
        return sklearn_train_test_split(self.num_data, self.test_size, self.split_seed)


class PyEPOTask(AbstractRegretTask):
    """Shortest path on PyEPO's m × m grid DAG; θ are predicted arc costs."""

    grid: int = eqx.field(static=True)

    objective: ClassVar[str] = "min"
    layers: ClassVar[tuple[str, ...]] = ("pyepo_shortest_path",)

    def solver(self, arc_costs: Float[Array, "*batch d"]) -> Float[Array, "*batch d"]:
        return pl.solvers.pyepo_shortest_path(arc_costs, self.grid)

    def linear_program(self) -> pl.PerturbedLinearProgram:
        """The same problem as a linear program (for losses that read constraints,
        CaVE): flow conservation at the m² nodes, one unit from node 0 to node
        m² − 1, 0 ≤ w ≤ 1 on each arc."""
        arcs = pl.solvers.pyepo_grid_arcs(self.grid)
        nodes = self.grid * self.grid
        incidence = np.zeros((nodes, len(arcs)), np.float32)
        for j, (tail, head) in enumerate(arcs):
            incidence[tail, j], incidence[head, j] = 1.0, -1.0
        supply = np.zeros(nodes, np.float32)
        supply[0], supply[-1] = 1.0, -1.0
        return pl.PerturbedLinearProgram(
            A_eq=jnp.asarray(incidence),
            b_eq=jnp.asarray(supply),
            upper=jnp.ones(len(arcs), jnp.float32),
            num_samples=1,
            sigma=1.0,
            noise=pl.Normal(),
        )

    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        return np.asarray(jnp.mean(train.costs, axis=0)), "mean training arc costs"

    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        arcs = pl.solvers.pyepo_grid_arcs(self.grid)
        costs, y_true = np.asarray(test.costs), np.asarray(test.y)
        count = min(8, len(costs))
        axes = fig.subplots(2, (count + 1) // 2, squeeze=False).ravel()
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i >= count:
                continue
            for a, (tail, head) in enumerate(arcs):
                (r0, c0), (r1, c1) = divmod(tail, self.grid), divmod(head, self.grid)
                width = 1 + 6 * costs[i, a] / costs[i].max()
                ax.plot([c0, c1], [r0, r1], color="0.75", lw=width, zorder=1)
                if y_true[i, a] > 0.5:
                    ax.plot([c0, c1], [r0, r1], color="tab:green", lw=5, zorder=2)
                if y_pred[i, a] > 0.5:
                    ax.plot([c0, c1], [r0, r1], "--", color="tab:red", lw=2, zorder=3)
            ax.invert_yaxis()
            regret = float(costs[i] @ y_pred[i] - costs[i] @ y_true[i])
            ax.set_title(f"test {i}: regret {regret:.3f}", fontsize=9)
        fig.suptitle(
            "Test instances: true shortest path (green), predicted (red dashed); "
            "grey width ∝ true arc cost"
        )


class PyEPOShortestPath(AbstractPyEPOData):
    """`data: {name: pyepo_shortest_path, ...}`: PyEPO's generated shortest paths.

    Defaults are those of PyEPO's notebook "03 Training and Testing": 2000 points, 5
    features, a 5 × 5 grid, degree 4, noise half-width 0.5, seed 42, and a 1000-point
    test set drawn like `train_test_split(test_size=1000, random_state=42)`.
    """

    layers: ClassVar[tuple[str, ...]] = PyEPOTask.layers

    name: Literal["pyepo_shortest_path"]
    num_data: PositiveInt = Field(2000, description="points generated (train + test)")
    num_features: PositiveInt = Field(5, description="p, features per point")
    grid: int = Field(5, ge=2, description="m, the side of the m × m grid")
    deg: PositiveInt = Field(4, description="degree of the polynomial feature → cost")
    noise_width: FiniteFloat = Field(
        0.5, ge=0, lt=1, description="ē, half-width of the multiplicative noise"
    )
    seed: int = Field(42, description="the generator's RandomState seed")
    test_size: PositiveInt = Field(1000, description="points in the test set")
    split_seed: int = Field(42, description="train_test_split's random_state")

    def build(self) -> Dataset:
        x, c = pyepo_shortest_path_data(
            self.num_data,
            self.num_features,
            (self.grid, self.grid),
            self.deg,
            self.noise_width,
            self.seed,
        )
        train, test = self.split()
        task = PyEPOTask(self.grid)
        costs = jnp.asarray(c)
        y = task.solver(costs)  # exact optimal paths for the true costs
        x = jnp.asarray(x, jnp.float32)

        def split(idx: np.ndarray) -> Batch:
            return Batch(x[idx], y[idx], costs[idx])

        description = (
            f"PyEPO shortest path {self.grid}x{self.grid}: {len(train)} train / "
            f"{len(test)} test, p={self.num_features}, deg={self.deg}, "
            f"noise half-width {self.noise_width}, seed {self.seed}"
        )
        return Dataset(split(train), split(test), task, description)


@functools.cache
def _pyepo_solver(m: int) -> functools.partial:
    # The solver is a static field of the layer, and a partial equals only itself:
    # one per grid size, so that every run on that grid reuses the compiled step.
    return functools.partial(pl.solvers.pyepo_shortest_path, m=m)


class PyEPOLayer(PerturbedLayerOptions):
    """`layer: {name: pyepo_shortest_path, ...}`: perturbed shortest path on PyEPO's
    grid (arc costs in, arc indicator out, minimised)."""

    name: Literal["pyepo_shortest_path"]

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, PyEPOTask)
        return pl.Perturbed(
            _pyepo_solver(task.grid),
            objective="min",
            event_ndim=1,
            # Every source-sink path has 2(m - 1) arcs, so adding a constant to all
            # arc costs never changes the solution.
            shift_invariant=True,
            **self.common(sample_axis),
        )
