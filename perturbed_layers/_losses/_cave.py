"""The cone-aligned vector estimation loss, CaVE (Tang & Khalil, 2024), and the
binding-constraint normals it needs."""

import math
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from .._layer_data import problem_data
from .._linear_program_layers import PerturbedLinearProgram
from .._perturbed import AbstractPerturbed, check_int
from ._common import bad_instances, check_linear_layer, times, unflatten

# Rows of `normals` shorter than this are padding (PyEPO pads with zero rows).
_PAD = 1e-7
# Norms are clamped at this in the cosine, as PyEPO (and torch's cosine_similarity) do.
_NORM_EPS = 1e-8


class CaVELoss(eqx.Module):
    r"""The CaVE loss: the cosine distance between the predicted costs and the normal
    cone of the true optimal vertex.

    A vertex w of {w : a_k·w ≤ b_k} is optimal for the costs c iff −c lies in the cone
    spanned by the normals a_k of the constraints binding at w. CaVE asks the same of
    the predicted costs: with s = −ĉ for a minimising layer (s = θ̂ for a maximising
    one), G the binding normals of w*(c) (rows, `≤` orientation) and
    p = argmin_{x ∈ cone(G)} ‖x − s‖ the projection of s on their cone, per instance

        ℓ(ĉ) = 1 − ⟨s, p⟩ / (‖s‖·‖p‖)  ∈ [0, 2],

    0 iff w*(c) is optimal for ĉ. The projection is held fixed in the derivative (as
    in PyEPO): ∂ℓ/∂s = −(p/‖p‖ − cos·s/‖s‖)/‖s‖. An instance without binding
    normals has ℓ = 0. Norms are clamped at 1e-8, as in PyEPO.

    **The normals are an input.** The layer contract (`solve(θ, args)` and
    `objective`) says nothing of the constraints, so the normals of the binding
    constraints at the true solution are given per instance, as PyEPO's
    `optDatasetConstrs` gives them: `a` for a binding `a·w ≤ b`, `−a` for a binding
    `a·w ≥ b`, both `±a` for an equality, `−e_j` for a variable at its lower bound,
    `+e_j` at its upper bound; zero rows are padding (so instances with different
    counts share one array). For `pl.PerturbedLinearProgram`, whose constraints are
    known, `pl.binding_normals(layer, y_true, args)` computes them; for another solver
    write its constraints as such a linear program (e.g. a shortest path: the flow
    conservation rows and 0 ≤ w ≤ 1). CaVE is meant for (binary) linear programs: for
    a solver that is not an LP over those constraints, the cone means nothing.

    The projection is a nonnegative least-squares problem in the cone's coefficients,
    solved in JAX by accelerated projected gradient (FISTA with adaptive restart,
    step from Gershgorin's bound on λ_max(GGᵀ)) for `num_iterations` steps: jit-compiled with the loss, no
    host call. PyEPO solves it with Clarabel on the host; its default `max_iter=3`
    (the paper's CaVE+) stops the interior-point method early on purpose, a point
    inside the cone that this loss does not reproduce; its CaVE Hybrid (a coin per
    batch between the projection and a heuristic) is not provided either.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        `objective` and instance shape are used.
    - `num_iterations`: projection steps (static, default 500); the tests measure
        its agreement with `scipy.optimize.nnls`.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    # min c·w over the simplex {w ≥ 0, w0 + w1 + w2 = 1}; the true optimum is vertex 0
    layer = pl.PerturbedLinearProgram(
        A_eq=jnp.ones((1, 3)), b_eq=jnp.ones(1),
        num_samples=1, sigma=1.0, noise=pl.Normal(),
    )
    y_true = jnp.array([[1.0, 0.0, 0.0]])
    normals = pl.binding_normals(layer, y_true)  # ±(1, 1, 1), −e1, −e2 (and padding)
    loss = pl.CaVELoss(layer)
    good = loss(jnp.array([[0.0, 1.0, 2.0]]), normals)  # [0.]: vertex 0 is optimal
    bad = loss(jnp.array([[2.0, 1.0, 0.0]]), normals)  # > 0
    grad = jax.grad(lambda c: loss(c, normals).sum())(jnp.array([[2.0, 1.0, 0.0]]))
    ```

    **Reference:** Tang, Khalil, *CaVE: A cone-aligned approach for fast
    predict-then-optimize with binary linear programs*, CPAIOR 2024.
    """

    layer: AbstractPerturbed
    num_iterations: int = eqx.field(default=500, static=True, kw_only=True)

    def __check_init__(self):
        check_linear_layer("CaVELoss", self.layer)
        check_int("num_iterations", self.num_iterations, minimum=1)

    def __call__(
        self,
        pred: Float[Array, "..."],
        normals: Float[Array, "..."],
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "*batch"]:
        """The loss per instance, an array of the batch shape.

        **Arguments:**

        - `pred`: predicted costs (scores for a maximising layer), `(*batch, *event)`.
        - `normals`: the binding-constraint normals of each instance's true solution,
            `(*batch, m, *event)`, zero rows for padding; never differentiated.
        - `args`: not used (the normals carry the constraints); accepted so that every
            loss is called alike.
        - `key`: ignored.
        """
        del key
        flat_p, _, batch = self.layer.split_batch(pred, args, name="pred")
        normals = _check_normals(jnp.asarray(normals), jnp.asarray(pred), batch)
        n = math.prod(flat_p.shape[1:])
        signed = flat_p.reshape(-1, n)
        if self.layer.objective == "min":
            signed = -signed
        g = jax.lax.stop_gradient(normals.reshape(signed.shape[0], -1, n))
        proj = jax.vmap(_project_on_cone, in_axes=(0, 0, None))(
            jax.lax.stop_gradient(signed), g, self.num_iterations
        )
        den = jnp.maximum(jnp.linalg.norm(signed, axis=-1), _NORM_EPS) * jnp.maximum(
            jnp.linalg.norm(proj, axis=-1), _NORM_EPS
        )
        value = 1 - jnp.sum(signed * proj, axis=-1) / den
        value = times(bad_instances(self.layer, flat_p), value)
        return unflatten(value, batch)


def _check_normals(normals: Array, pred: Array, batch: tuple[int, ...]) -> Array:
    event = pred.shape[len(batch) :]
    if (
        normals.ndim != pred.ndim + 1
        or normals.shape[: len(batch)] != batch
        or normals.shape[len(batch) + 1 :] != event
    ):
        raise ValueError(
            f"normals must have shape (*batch, m, *event) = {(*batch, 'm', *event)} "
            f"for pred of shape {pred.shape}, got normals.shape={normals.shape}"
        )
    return normals.astype(pred.dtype)


def _project_on_cone(s: Array, g: Array, num_iterations: int) -> Array:
    """The projection of `s` (n,) on cone{Gᵀλ : λ ≥ 0} for the rows of `g` (m, n):
    min_λ≥0 ½‖Gᵀλ − s‖² by FISTA with gradient restart; `s` itself when every row
    is padding (no binding constraint, PyEPO's convention)."""
    q_mat = g @ g.T
    q_vec = g @ s
    # Gershgorin's bound on λ_max(GGᵀ), a safe 1/step (XLA's eigvalsh costs more
    # than all the iterations).
    lipschitz = jnp.max(jnp.sum(jnp.abs(q_mat), axis=-1))
    step = jnp.where(lipschitz > 0, 1 / jnp.where(lipschitz > 0, lipschitz, 1), 0)

    def body(_, carry):
        lam, z, t = carry
        new = jnp.maximum(z - step * (q_mat @ z - q_vec), 0)
        t_new = (1 + jnp.sqrt(1 + 4 * t * t)) / 2
        # Restart the momentum when it points uphill (O'Donoghue & Candès 2015).
        uphill = jnp.dot(z - new, new - lam) > 0
        t_new = jnp.where(uphill, 1.0, t_new)
        momentum = jnp.where(uphill, 0.0, (t - 1) / t_new)
        return new, new + momentum * (new - lam), t_new

    zeros = jnp.zeros(g.shape[0], s.dtype)
    init = (zeros, zeros, jnp.ones((), s.dtype))
    lam, _, _ = jax.lax.fori_loop(0, num_iterations, body, init)
    has_rows = jnp.any(jnp.linalg.norm(g, axis=-1) > _PAD)
    return jnp.where(has_rows, g.T @ lam, s)


def binding_normals(
    layer: PerturbedLinearProgram,
    y: Float[Array, "*batch n"],
    args: Any = None,
    *,
    tol: float = 1e-5,
) -> Float[Array, "*batch m n"]:
    r"""The normals of the constraints of a `pl.PerturbedLinearProgram` that bind at
    `y`, in `≤` orientation, for `pl.CaVELoss`.

    Rows, in this order and always all present (a fixed shape under jit; a row that
    does not bind is zero): `A_ub`'s rows where `A_ub·y ≥ b_ub − tol`; each row of
    `A_eq` and its negation; `−e_j` for each variable with `y_j ≤ lower_j + tol`;
    `+e_j` with `y_j ≥ upper_j − tol` (when `upper` is given). Shape
    `(*batch, m_ub + 2·m_eq + n (+ n), n)`.

    **Arguments:**

    - `layer`: the linear-program layer (its constraints, fields or `args`).
    - `y`: a vertex per instance, e.g. the true solution `layer.solve(c, args)`.
    - `args`: per-instance problem data, as for the layer.
    - `tol`: the slack under which a constraint binds (absolute, default 1e-5).
    """
    if not isinstance(layer, PerturbedLinearProgram):
        raise TypeError(
            "binding_normals: layer must be a pl.PerturbedLinearProgram (whose "
            f"constraints are known), got {type(layer).__name__}"
        )
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a nonnegative number, got {tol!r}")
    y = jnp.asarray(y)
    if y.ndim < 1 or y.shape[-1] < 1:
        raise ValueError(f"y must have shape (*batch, n), got y.shape={y.shape}")
    flat_y, flat_args, batch = layer.split_batch(y, args, name="y")

    def one(yi: Array, ai: Any) -> Array:
        data = problem_data(
            layer, ai, ("A_ub", "b_ub", "A_eq", "b_eq", "lower", "upper")
        )
        n, dtype = yi.shape[-1], yi.dtype
        eye = jnp.eye(n, dtype=dtype)
        rows = []
        if data["A_ub"] is not None:
            a = data["A_ub"].astype(dtype)
            tight = a @ yi >= data["b_ub"].astype(dtype) - tol
            rows.append(jnp.where(tight[:, None], a, 0))
        if data["A_eq"] is not None:
            a = data["A_eq"].astype(dtype)
            rows += [a, -a]
        lower = 0.0 if data["lower"] is None else data["lower"].astype(dtype)
        at_lower = yi <= jnp.broadcast_to(lower, (n,)) + tol
        rows.append(jnp.where(at_lower[:, None], -eye, 0))
        if data["upper"] is not None:
            at_upper = yi >= data["upper"].astype(dtype) - tol
            rows.append(jnp.where(at_upper[:, None], eye, 0))
        return jnp.concatenate(rows, axis=0)

    normals = jax.vmap(one)(jax.lax.stop_gradient(flat_y), flat_args)
    return unflatten(normals, batch)
