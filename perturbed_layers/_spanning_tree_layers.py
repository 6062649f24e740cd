"""Perturbed minimum spanning trees, over the edges of an undirected graph."""

import math
from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._layer_data import as_optional_array, problem_data
from ._perturbed import AbstractPerturbed
from .solvers import spanning_tree


def num_nodes(num_edges: int) -> int:
    """n such that n(n − 1)/2 == num_edges, or a ValueError."""
    n = (1 + math.isqrt(1 + 8 * num_edges)) // 2
    if n * (n - 1) // 2 != num_edges:
        raise ValueError(
            "theta must hold one weight per edge of a complete graph, n(n - 1)/2 "
            f"entries (the upper triangle, row by row); got {num_edges}, which is not "
            "n(n - 1)/2 for any n"
        )
    return n


class PerturbedSpanningTree(AbstractPerturbed):
    r"""Perturbed minimum spanning tree: y_ε(θ) = E[y*(θ + σZ)], with

    $$y^*(\theta) = \arg\min_{y \in \mathcal{T}} \langle y, \theta \rangle,$$

    $\mathcal{T}$ the edge indicators of the spanning trees of an undirected graph on
    `n` nodes, solved exactly by `pl.solvers.spanning_tree` (Prim's, all M×B perturbed
    instances in one device loop). θ are edge **weights** (costs,
    `objective="min"`), one per edge: shape `(*batch, E)`, `E = n(n − 1)/2`, the
    upper triangle `{i < j}` of the weight matrix row by row (the order of
    `scipy.spatial.distance.pdist` and of PyEPO's graphs: `jnp.triu_indices(n, 1)`
    maps them to and from a matrix). y_ε(θ)ₑ is the probability that edge `e` is in
    the tree under the noise; it sums to `n − 1`.

    **Why edges, not a matrix.** The solver needs symmetric weights. Perturbing an
    `n × n` matrix entrywise breaks the symmetry, and symmetrising it afterwards,
    (W + Wᵀ)/2, would give each edge the noise σ(Z_ij + Z_ji)/2: a Normal of scale
    σ/√2, and for Gumbel noise no longer a Gumbel. With one entry per edge, each edge
    gets exactly σZₑ, of the chosen distribution, and ⟨y, θ⟩ is the tree's weight, so
    the Fenchel–Young gradient is y_true − y_ε(θ) (additive noise). Every spanning
    tree has `n − 1` edges, so y* is invariant to adding a constant to θ
    (`shift_invariant`).

    **Missing edges.** `+inf` in θ marks an edge that is not in the graph; it stays
    `+inf` under either perturbation (`allows_inf`: only NaN makes an instance NaN).
    Or give the graph as data: `edges`, a bool `(E,)` mask of the edges that exist,
    as a field (shared by the batch) or as `args={"edges": (*batch, E)}` (per
    instance), one way only. A graph left disconnected is an error at run time.

    **Arguments:** those of `pl.Perturbed` (`num_samples`, `sigma`, `noise`,
    `perturbation`, `chunk_size`, `sample_axis`, `estimator`, `inference`), and

    - `edges`: a bool `(E,)` mask of the edges of the graph, or `None` (the complete
        graph, unless given in `args`).

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    # 4 nodes, edges 01 02 03 12 13 23: a cheap path 0-1-2-3 and costly chords.
    theta = jnp.array([1.0, 3.0, 3.0, 1.0, 3.0, 1.2])
    layer = pl.PerturbedSpanningTree(num_samples=200, sigma=0.5, noise=pl.Normal())
    y = layer(theta, key=jax.random.key(0))  # ≈ [1, 0, 0, 1, 0, 1], sums to 3

    # Only a 4-cycle 0-1-2-3-0 (edges 01, 03, 12, 23), given as data:
    cycle = jnp.array([True, False, True, True, False, True])
    layer = pl.PerturbedSpanningTree(
        edges=cycle, num_samples=200, sigma=0.5, noise=pl.Normal()
    )
    y = layer(theta, key=jax.random.key(0))  # drops one of the four edges
    tree = pl.PerturbedSpanningTree(
        edges=cycle, num_samples=1, sigma=1.0, noise=pl.Normal(), inference=True
    )(theta)
    loss = pl.FenchelYoungLoss(layer)(theta, tree, key=jax.random.key(1))
    ```

    **References:** Berthet et al., NeurIPS 2020; Prim, *Shortest connection
    networks and some generalizations*, Bell Syst. Tech. J. 1957 (the solver).
    """

    edges: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "min"
    shift_invariant: ClassVar[bool] = True
    allows_inf: ClassVar[bool] = True  # +inf marks a missing edge

    def __check_init__(self):
        if self.edges is not None and self.edges.dtype != jnp.bool_:
            raise TypeError(
                f"edges must be a bool mask of the graph's edges, got {self.edges.dtype}"
            )

    def solve(self, theta: Float[Array, " E"], args: Any = None) -> Float[Array, " E"]:
        edges = problem_data(self, args, ("edges",))["edges"]
        n = num_nodes(theta.shape[-1])
        if edges is not None:
            if edges.shape != theta.shape or edges.dtype != jnp.bool_:
                raise ValueError(
                    f"edges must be a bool mask of theta's shape {theta.shape} per "
                    f"instance, got {edges.dtype}{list(edges.shape)}"
                )
            theta = jnp.where(edges, theta, jnp.inf)
        # A NaN instance is solved on the complete graph; the engine makes it NaN.
        theta = jnp.where(jnp.any(jnp.isnan(theta)), 0, theta)
        rows, cols = jnp.triu_indices(n, 1)
        upper = jnp.zeros((n, n), theta.dtype).at[rows, cols].set(theta)
        # The diagonal (0) is ignored by the solver; +inf stays +inf.
        return spanning_tree(upper + upper.T)[rows, cols]
