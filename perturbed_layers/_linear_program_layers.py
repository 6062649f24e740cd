"""Perturbed linear programs (small, dense, solved on the device)."""

from typing import Any, ClassVar

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._layer_data import as_optional_array, finite_or_zero, problem_data
from ._perturbed import AbstractPerturbed, as_optional_int, check_int
from .solvers import linear_program

_DATA = ("A_ub", "b_ub", "A_eq", "b_eq", "lower", "upper")


class PerturbedLinearProgram(AbstractPerturbed):
    r"""Perturbed linear program: y_ε(c) = E[x*(c + σZ)], with

    $$x^*(c) = \arg\min_x c^\top x \quad\text{s.t.}\quad A_{ub} x \le b_{ub},\;
    A_{eq} x = b_{eq},\; \ell \le x \le u,$$

    solved exactly by `pl.solvers.linear_program` (two-phase dense simplex, all M×B
    perturbed instances in one device loop; x* is a vertex). θ = c are **costs**
    (`objective="min"`; for scores pass `−θ`), shape `(*batch, n)`. x* jumps from
    vertex to vertex as c moves; y_ε(c) is a convex combination of vertices, a point
    inside the feasible polytope that moves smoothly with c (Berthet et al., §2). With
    `pl.FenchelYoungLoss` the gradient in c is x_true − y_ε(c) (additive noise).
    The problem must be feasible and bounded for every perturbed c (e.g. a bounded
    polytope); otherwise the solver raises at run time.

    **Problem data, two ways.** Each of `A_ub (m, n)`, `b_ub (m,)`, `A_eq (p, n)`,
    `b_eq (p,)`, `lower (n,)` (default 0), `upper (n,)` (default none; `+inf` per
    entry for none) is either a field (an array shared by the whole batch: traced,
    new values do not recompile) or an entry of `args` with θ's batch axes in front
    (per instance), one way only: given both ways is a `ValueError` naming it, and
    so is `A_ub` without `b_ub` (or `A_eq` without `b_eq`). They may be mixed:
    `A_ub` shared and `b_ub` per instance. No derivative flows into them
    (`lax.stop_gradient`); as float fields they are inexact arrays of the module, so
    an optimiser filtering with `eqx.is_inexact_array` holds them with zero gradients:
    keep them out of the trained pytree (`eqx.partition`) or pass them in `args`.

    **Arguments:** those of `pl.Perturbed` (`num_samples`, `sigma`, `noise`,
    `perturbation`, `chunk_size`, `sample_axis`, `estimator`, `inference`), the data
    above (each default `None`: absent, or from `args`), and

    - `max_iterations`: the most simplex pivots per instance (static; `None` for
        `pl.solvers.linear_program`'s default).

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    # The simplex {x >= 0, x0 + x1 + x2 = 1}: x* is the cheapest corner.
    layer = pl.PerturbedLinearProgram(
        A_eq=jnp.ones((1, 3)), b_eq=jnp.ones(1),
        num_samples=500, sigma=0.5, noise=pl.Normal(),
    )
    c = jnp.array([0.0, 0.3, 2.0])
    x = layer(c, key=jax.random.key(0))  # ≈ [0.64, 0.36, 0.0], sums to 1

    # A box with per-instance upper bounds, in args:
    layer = pl.PerturbedLinearProgram(num_samples=100, sigma=0.5, noise=pl.Normal())
    costs = jnp.array([[-1.0, 1.0], [1.0, -1.0]])
    upper = jnp.array([[2.0, 2.0], [3.0, 1.0]])
    x = layer(costs, {"upper": upper}, key=jax.random.key(0))  # ≈ [[2, 0], [0, 1]]
    ```

    **References:** Berthet et al., NeurIPS 2020 (§2, perturbed LPs); Elmachtoub &
    Grigas, *Smart "Predict, then Optimize"*, Management Science 2022 (learning LP
    costs); Dantzig 1963, Bland 1977 (the solver).
    """

    A_ub: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    b_ub: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    A_eq: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    b_eq: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    lower: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    upper: Array | None = eqx.field(
        default=None, kw_only=True, converter=as_optional_array
    )
    max_iterations: int | None = eqx.field(
        default=None, static=True, kw_only=True, converter=as_optional_int
    )

    event_ndim: ClassVar[int] = 1
    objective: ClassVar[str] = "min"
    shift_invariant: ClassVar[bool] = False
    allows_inf: ClassVar[bool] = False

    def __check_init__(self):
        if self.max_iterations is not None:
            check_int("max_iterations", self.max_iterations, minimum=1)

    def solve(self, theta: Float[Array, " n"], args: Any = None) -> Float[Array, " n"]:
        data = problem_data(self, args, _DATA)
        for mat, vec in (("A_ub", "b_ub"), ("A_eq", "b_eq")):
            if (data[mat] is None) != (data[vec] is None):
                missing = vec if data[vec] is None else mat
                raise ValueError(
                    f"PerturbedLinearProgram: {mat} and {vec} go together; {missing!r} "
                    "is missing (give it as a field or in args)"
                )
        n, dtype = theta.shape[-1], theta.dtype
        cast = {k: None if v is None else v.astype(dtype) for k, v in data.items()}
        a_ub, b_ub = cast["A_ub"], cast["b_ub"]
        if a_ub is None or b_ub is None:
            a_ub, b_ub = jnp.zeros((0, n), dtype), jnp.zeros(0, dtype)
        lower = 0.0 if cast["lower"] is None else cast["lower"]
        return linear_program(
            finite_or_zero(theta),
            a_ub,
            b_ub,
            cast["A_eq"],
            cast["b_eq"],
            lower,
            cast["upper"],
            max_iterations=self.max_iterations,
        )
