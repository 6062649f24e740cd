"""PyEPO's travelling-salesman benchmark: generator, exact solver, task, metric.

The generator is PyEPO's `pyepo.data.tsp.genData`, reproduced draw for draw: with
`rnd = np.random.RandomState(seed)` and m nodes, the coordinates first (⌊m/2⌋ nodes
rnd.uniform(−2, 2), then the other ⌈m/2⌉ rnd.normal(0, 1), both of shape (·, 2)),
then B = rnd.binomial(1, 0.5, (E, p)) ⊙ rnd.uniform(−2, 2, (E, p)) for the
E = m (m − 1) / 2 edges, then x = rnd.normal(0, 1, (n, p)), then
ε = rnd.uniform(1 − ē, 1 + ē, (n, E)), and the edge costs

    c = round(dist + ((x Bᵀ)/√p + 3)^deg / 3^(deg − 1) ⊙ ε, 4 decimals),   as float32,

with `dist` the Euclidean distances of the coordinates, edges in the order of
`scipy.spatial.distance.pdist` (i < j, row-major: (0, 1), (0, 2), …, (m − 2, m − 1)).
`genData` returns x and c only; the coordinates are the stream's first draw, so
`pyepo_tsp_coordinates` redraws them (for the figures).

The problem **minimises** the total cost of a tour: y*(c) = argmin ⟨c, y⟩ over the
0/1 edge vectors of Hamiltonian cycles. `tsp_solver` solves it exactly on the host:
HiGHS (`scipy.optimize.milp`, relative gap 0) on the Dantzig–Fulkerson–Johnson
formulation, degree 2 at every node, with the subtour cuts Σ_{i<j ∈ S} y_ij ≤ |S| − 1
added for every connected component S of the solution and the MILP solved again
until the solution is one cycle. On PyEPO's 20 nodes (100 instances of its generator,
deg 4, one thread, a shared 2-core CPU) that is about 2 MILP solves and 15 ms per
instance, against 3.6 ms for PyEPO's Gurobi `tspDFJModel` (lazy cuts inside one
branch and bound) and 72 ms for its `tspGGModel`, with the same optima; the
Miller–Tucker–Zemlin formulation takes ~0.5 s per instance with HiGHS. No on-device
solver: Held–Karp is 2²⁰ · 20² steps per 20-node instance.

Metric: the normalised regret Σᵢ (⟨cᵢ, y*(θᵢ)⟩ − z*(cᵢ)) / Σᵢ |z*(cᵢ)| over the test
set (PyEPO's `pyepo.metric.regret`).

**References:** Tang & Khalil, *PyEPO: A PyTorch-based End-to-End Predict-then-Optimize
Library*, Math. Prog. Comp. 2023; Dantzig, Fulkerson & Johnson, *Solution of a
Large-Scale Traveling-Salesman Problem*, Oper. Res. 1954.
"""

import functools
from typing import Any, ClassVar, Literal

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float
from pydantic import Field
from scipy import optimize, sparse
from scipy.sparse import csgraph
from scipy.spatial import distance

import perturbed_layers as pl

from ._options import NonNegativeFloat, PerturbedLayerOptions, PositiveInt
from ._pyepo import AbstractPyEPOData
from ._tasks import AbstractRegretTask, AbstractTask, Batch, Dataset


def _coordinates(rnd: np.random.RandomState, m: int) -> np.ndarray:
    return np.concatenate(
        (rnd.uniform(-2, 2, (m // 2, 2)), rnd.normal(0, 1, (m - m // 2, 2)))
    )


def pyepo_tsp_coordinates(num_nodes: int, seed: int = 135) -> np.ndarray:
    """The node coordinates (shape `(m, 2)`, float64) that `pyepo_tsp_data` with this
    `num_nodes` and `seed` draws first (and PyEPO's `genData` does not return)."""
    return _coordinates(np.random.RandomState(seed), num_nodes)


def pyepo_tsp_data(
    num_data: int,
    num_features: int,
    num_nodes: int,
    deg: int = 1,
    noise_width: float = 0.0,
    seed: int = 135,
) -> tuple[np.ndarray, np.ndarray]:
    """PyEPO's `genData` for the travelling salesman: features and edge costs.

    **Arguments:** as PyEPO's (`num_data` n, `num_features` p, `num_nodes` m, `deg`,
    `noise_width` ē, `seed`), with PyEPO's defaults.

    **Returns:** `x` of shape `(n, p)` (float64) and `c` of shape `(n, m (m − 1) / 2)`
    (float32, four decimals), edges in `pdist` order, as PyEPO returns them.

    ```python
    from perturbed_layers.experiments import pyepo_tsp_data

    x, c = pyepo_tsp_data(1100, 10, 20, deg=4, noise_width=0.5)
    x.shape, c.shape  # (1100, 10), (1100, 190)
    ```
    """
    if isinstance(deg, bool) or not isinstance(deg, int) or deg <= 0:
        raise ValueError(f"deg must be a positive int, got {deg!r}")
    if not np.isfinite(noise_width) or noise_width < 0:
        raise ValueError(f"noise_width must be finite and >= 0, got {noise_width!r}")
    if num_nodes < 3:
        raise ValueError(f"num_nodes must be at least 3 for a tour, got {num_nodes}")
    rnd = np.random.RandomState(seed)
    n, p, m = num_data, num_features, num_nodes
    e = m * (m - 1) // 2
    dist = distance.pdist(_coordinates(rnd, m), "euclidean")
    b = rnd.binomial(1, 0.5, (e, p)) * rnd.uniform(-2, 2, (e, p))
    x = rnd.normal(0, 1, (n, p))
    # PyEPO's float64 operations in PyEPO's order, so that the rounding sees the same
    # numbers.
    feature_cost = ((x @ b.T / np.sqrt(p) + 3) ** deg) / 3 ** (deg - 1)
    c = dist + feature_cost * rnd.uniform(1 - noise_width, 1 + noise_width, (n, e))
    return x, np.around(c, decimals=4).astype(np.float32)


@functools.cache
def tsp_edges(num_nodes: int) -> np.ndarray:
    """The `(m (m − 1) / 2, 2)` edges (i, j), i < j, in `pdist` order."""
    i, j = np.triu_indices(num_nodes, k=1)
    return np.stack([i, j], axis=1)


def _solve_one(
    costs: np.ndarray, edges: np.ndarray, degree: sparse.csr_array
) -> np.ndarray:
    m, e = int(edges.max()) + 1, len(edges)
    degree_two = optimize.LinearConstraint(degree, 2, 2)
    cuts: list[np.ndarray] = []
    sizes: list[int] = []
    while True:
        constraints = [degree_two]
        if cuts:
            rows = sparse.csr_array(np.stack(cuts))
            upper = np.array(sizes) - 1.0
            constraints.append(
                optimize.LinearConstraint(rows, -np.inf, upper)  # pyright: ignore[reportArgumentType]
            )
        res = optimize.milp(
            costs,
            constraints=constraints,
            integrality=np.ones(e),
            bounds=optimize.Bounds(0, 1),
            options={"mip_rel_gap": 0.0},
        )
        if res.status != 0 or res.x is None:
            raise ValueError(f"tsp_solver: HiGHS status {res.status}: {res.message}")
        y = np.round(res.x)
        chosen = edges[y > 0.5]
        graph = sparse.coo_array(
            (np.ones(len(chosen)), (chosen[:, 0], chosen[:, 1])), shape=(m, m)
        )
        count, label = csgraph.connected_components(graph, directed=False)
        if count == 1:
            return y
        # Every component S is a subtour: Σ_{i<j ∈ S} y_ij ≤ |S| − 1 forbids it. The
        # cuts are kept for this instance's next solves only: sharing them across
        # instances measured slower (a subtour of one instance is rarely another's).
        for k in range(count):
            inside = (label[edges[:, 0]] == k) & (label[edges[:, 1]] == k)
            cuts.append(inside.astype(np.float64))
            sizes.append(int(np.sum(label == k)))


def _solve_tsp_batch(costs: np.ndarray, *, num_nodes: int) -> np.ndarray:
    """Exact minimum-cost tours, one per row of `costs` (shape `(N, E)`)."""
    edges = tsp_edges(num_nodes)
    e = len(edges)
    if costs.shape[-1] != e:
        raise ValueError(
            f"tsp_solver({num_nodes}) takes {e} edge costs, got {costs.shape[-1]}"
        )
    if not np.all(np.isfinite(costs)):
        raise ValueError("tsp_solver needs finite edge costs")
    rows = np.concatenate([edges[:, 0], edges[:, 1]])
    columns = np.tile(np.arange(e), 2)
    degree = sparse.csr_array((np.ones(2 * e), (rows, columns)), shape=(num_nodes, e))
    out = np.empty(costs.shape, costs.dtype)
    for k, c in enumerate(costs):
        out[k] = _solve_one(c.astype(np.float64), edges, degree)
    return out


@functools.cache
def tsp_solver(num_nodes: int) -> pl.HostSolver:
    """The exact solver of `num_nodes`-node tours: edge costs `(*batch, E)` in (pdist
    order, minimised), the tour's 0/1 edge vector out, on the host (see the module's
    docstring). One per size, so that layers over it compare equal and share
    compiled steps."""
    if num_nodes < 3:
        raise ValueError(f"num_nodes must be at least 3 for a tour, got {num_nodes}")
    return pl.host_solver(
        functools.partial(_solve_tsp_batch, num_nodes=num_nodes), event_ndim=1
    )


class TSPTask(AbstractRegretTask):
    """Symmetric travelling salesman on m nodes; θ are predicted edge costs (pdist
    order, minimised), `coordinates` the nodes' positions (for the figures only)."""

    num_nodes: int = eqx.field(static=True)
    coordinates: Float[Array, "m 2"]

    objective: ClassVar[str] = "min"
    layers: ClassVar[tuple[str, ...]] = ("tsp",)

    def solver(self, edge_costs: Float[Array, "*batch E"]) -> Float[Array, "*batch E"]:
        return tsp_solver(self.num_nodes)(edge_costs)

    def trivial_theta(self, train: Batch) -> tuple[np.ndarray, str]:
        return np.asarray(jnp.mean(train.costs, axis=0)), "mean training edge costs"

    def draw(
        self, fig: Any, test: Batch, theta: np.ndarray, y_pred: np.ndarray
    ) -> None:
        del theta
        edges = tsp_edges(self.num_nodes)
        xy = np.asarray(self.coordinates)
        costs, y_true = np.asarray(test.costs), np.asarray(test.y)
        count = min(8, len(y_pred))
        axes = fig.subplots(2, (count + 1) // 2, squeeze=False).ravel()
        for i, ax in enumerate(axes):
            ax.set_axis_off()
            if i >= count:
                continue
            for e, (a, b) in enumerate(edges):
                if y_true[i, e] > 0.5:
                    ax.plot(*xy[[a, b]].T, color="tab:green", lw=5, zorder=1)
                if y_pred[i, e] > 0.5:
                    ax.plot(*xy[[a, b]].T, "--", color="tab:red", lw=2, zorder=2)
            ax.scatter(*xy.T, s=12, color="black", zorder=3)
            ax.set_aspect("equal")
            regret = float(costs[i] @ y_pred[i] - costs[i] @ y_true[i])
            ax.set_title(f"test {i}: regret {regret:.2f}", fontsize=9)
        fig.suptitle(
            "Test instances: optimal tour for the true edge costs (green), for the "
            "predicted ones (red dashed); nodes at the generator's coordinates"
        )


class PyEPOTSP(AbstractPyEPOData):
    """`data: {name: pyepo_tsp, ...}`: PyEPO's generated travelling salesmen.

    Defaults are PyEPO's TSP setting (its paper's experiments and its notebook "Test -
    Travelling Salesman": 20 nodes, 10 features, degree 4, and the split
    `train_test_split(test_size=1000, random_state=246)`), with 100 training points
    (1100 generated), noise half-width 0.5 and `genData`'s default seed 135.
    """

    layers: ClassVar[tuple[str, ...]] = TSPTask.layers

    name: Literal["pyepo_tsp"]
    num_data: PositiveInt = Field(1100, description="points generated (train + test)")
    num_features: PositiveInt = Field(10, description="p, features per point")
    num_nodes: int = Field(20, ge=3, description="m, nodes of the tour")
    deg: PositiveInt = Field(4, description="degree of the polynomial feature → cost")
    noise_width: NonNegativeFloat = Field(
        0.5, description="ē, half-width of the multiplicative noise"
    )
    seed: int = Field(135, description="the generator's RandomState seed")
    test_size: PositiveInt = Field(1000, description="points in the test set")
    split_seed: int = Field(246, description="train_test_split's random_state")

    def build(self) -> Dataset:
        x, c = pyepo_tsp_data(
            self.num_data,
            self.num_features,
            self.num_nodes,
            self.deg,
            self.noise_width,
            self.seed,
        )
        train, test = self.split()
        coordinates = pyepo_tsp_coordinates(self.num_nodes, self.seed)
        task = TSPTask(self.num_nodes, jnp.asarray(coordinates, jnp.float32))
        costs = jnp.asarray(c)
        y = task.solver(costs)  # exact optimal tours for the true costs
        x = jnp.asarray(x, jnp.float32)

        def split(idx: np.ndarray) -> Batch:
            return Batch(x[idx], y[idx], costs[idx])

        description = (
            f"PyEPO travelling salesman, {self.num_nodes} nodes: {len(train)} train / "
            f"{len(test)} test, p={self.num_features}, deg={self.deg}, noise "
            f"half-width {self.noise_width}, seed {self.seed}"
        )
        return Dataset(split(train), split(test), task, description)


class TSPLayer(PerturbedLayerOptions):
    """`layer: {name: tsp, ...}`: a perturbed exact TSP solver (edge costs in, the
    tour's 0/1 edge vector out, minimised), on the host: every step solves
    `num_samples` × batch tours of ~15 ms each (20 nodes)."""

    name: Literal["tsp"]

    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed:
        assert isinstance(task, TSPTask)
        return pl.Perturbed(
            tsp_solver(task.num_nodes),
            objective="min",
            event_ndim=1,
            # Every tour has m edges, so adding a constant to all edge costs never
            # changes the solution.
            shift_invariant=True,
            **self.common(sample_axis),
        )
