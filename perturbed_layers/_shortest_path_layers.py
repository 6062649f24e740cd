"""Perturbed shortest paths: on grids with vertex costs, and on dense graphs.

Both minimise ⟨y, costs⟩ (`objective="min"`), so with `pl.FenchelYoungLoss` the
gradient in the costs is y_true − y_ε(costs) (additive perturbation), or
y_true − E[y*(c̃) ⊙ exp(σZ − σ²/2)] with the multiplicative one, c̃ = c ⊙ exp(σZ − σ²/2).

Additive noise can make a cost non-positive; on an undirected grid that is a negative
cycle and the shortest path is undefined, so the grid solver stops with a clear error
(`eqx.error_if`) rather than return a wrong path. Use `perturbation="multiplicative"`
(InferOpt's default for Warcraft maps; it keeps positive costs positive) or a σ small
against the costs.
"""

from typing import Any, ClassVar

import equinox as eqx
from jaxtyping import Array, Float

from ._perturbed import AbstractPerturbed, as_int, check_int, no_args
from .solvers import grid_shortest_path, shortest_path


class PerturbedShortestPath(AbstractPerturbed):
    r"""Perturbed shortest path on a grid of vertex costs, top-left to bottom-right.

    `costs` of shape `(*batch, H, W)` → `y_ε(costs) = E[y*(costs + σZ)]` (or the
    multiplicative form), `y*` the 0/1 mask of the cells of a minimum-cost path, the
    cost of a path being the sum of its cells' costs, both ends included
    (`pl.solvers.grid_shortest_path`). All M×B perturbed instances are solved in one
    call on the device.

    **Arguments:** those of `pl.Perturbed` (`num_samples`, `sigma`, `noise`,
    `perturbation`, `chunk_size`, `inference`), and

    - `connectivity`: 8 (king moves, Warcraft) or 4.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    layer = pl.PerturbedShortestPath(
        num_samples=10, sigma=0.5, noise=pl.Normal(), perturbation="multiplicative"
    )
    costs = jnp.ones((2, 12, 12))
    y = layer(costs, key=jax.random.key(0))  # (2, 12, 12), expected path masks
    ```

    **References:** Berthet et al., NeurIPS 2020, §5 (Warcraft maps); Dalle et al.,
    *Learning with Combinatorial Optimization Layers: a Probabilistic Approach*, 2022
    (InferOpt.jl, multiplicative perturbation).
    """

    connectivity: int = eqx.field(
        default=8, static=True, kw_only=True, converter=as_int
    )

    event_ndim: ClassVar[int] = 2
    objective: ClassVar[str] = "min"
    shift_invariant: ClassVar[bool] = False
    allows_inf: ClassVar[bool] = False

    def __check_init__(self):
        check_int("connectivity", self.connectivity)
        if self.connectivity not in (4, 8):
            raise ValueError(f"connectivity must be 4 or 8, got {self.connectivity!r}")

    def solve(
        self, costs: Float[Array, "H W"], args: Any = None
    ) -> Float[Array, "H W"]:
        no_args(self, args)
        return grid_shortest_path(costs, self.connectivity)


class PerturbedGraphShortestPath(AbstractPerturbed):
    r"""Perturbed shortest path from `source` to `target` in a graph of dense weights.

    `weights` of shape `(*batch, n, n)`, `weights[i, j]` the cost of arc i → j and
    `+inf` where there is no arc, → the expected arc indicator
    y_ε(weights) = E[y*(weights + σZ)] of shape `(*batch, n, n)`
    (`pl.solvers.shortest_path`, Bellman–Ford: negative arc costs are fine without
    negative cycles; a negative cycle or an unreachable target is an error).
    Non-arcs stay `+inf` under either perturbation.

    **Arguments:** those of `pl.Perturbed`, and `source`, `target` (ints in [0, n)).

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    inf = jnp.inf
    weights = jnp.array([[inf, 1.0, 4.0], [inf, inf, 1.0], [inf, inf, inf]])
    layer = pl.PerturbedGraphShortestPath(
        0, 2, num_samples=100, sigma=0.5, noise=pl.Normal()
    )
    y = layer(weights, key=jax.random.key(0))  # mostly on the arcs 0→1→2
    ```
    """

    source: int = eqx.field(static=True, converter=as_int)
    target: int = eqx.field(static=True, converter=as_int)

    event_ndim: ClassVar[int] = 2
    objective: ClassVar[str] = "min"
    shift_invariant: ClassVar[bool] = False
    allows_inf: ClassVar[bool] = True  # +inf marks a missing arc

    def __check_init__(self):
        for name in ("source", "target"):
            check_int(name, getattr(self, name))

    def solve(
        self, weights: Float[Array, "n n"], args: Any = None
    ) -> Float[Array, "n n"]:
        no_args(self, args)
        return shortest_path(weights, self.source, self.target)
