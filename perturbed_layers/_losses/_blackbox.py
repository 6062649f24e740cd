"""Exact solvers with surrogate backward passes: blackbox differentiation (DBB,
Vlastelica et al. 2020) and the negative identity (NID, Sahoo et al. 2023)."""

from typing import Any

import equinox as eqx
from jaxtyping import Array, Float

from .._custom_types import Key
from .._perturbed import AbstractPerturbed
from ._common import (
    bad_instances,
    check_linear_layer,
    check_positive,
    solve,
    times,
    unflatten,
)


def _exact(layer: AbstractPerturbed, theta: Array, args: Any) -> Array:
    return times(bad_instances(layer, theta), solve(layer, theta, args))


# DBB's backward re-solves at θ shifted along the cotangent g: it is not linear in g,
# so it cannot be a JVP (which JAX would transpose); it is a custom VJP, and forward
# mode through it is refused by JAX.
@eqx.filter_custom_vjp
def _blackbox(theta: Array, layer: AbstractPerturbed, args: Any, lambd: float):
    return _exact(layer, theta, args)


@_blackbox.def_fwd
def _blackbox_fwd(perturbed, theta, layer, args, lambd):
    del perturbed
    y = _exact(layer, theta, args)
    return y, y


@_blackbox.def_bwd
def _blackbox_bwd(y, g, perturbed, theta, layer, args, lambd):
    del perturbed
    # Costs: (w*(ĉ + λg) − w*(ĉ))/λ, the gradient of the interpolation
    # f_λ(ĉ) = (min⟨ĉ + λg, w⟩ − min⟨ĉ, w⟩)/λ. Scores: −(y*(θ − λg) − y*(θ))/λ, that
    # of (max⟨θ, y⟩ − max⟨θ − λg, y⟩)/λ. Both tend to ⟨g, w*⟩ as λ → 0.
    s = 1 if layer.objective == "min" else -1
    g = g.astype(y.dtype)
    moved = _exact(layer, theta + (s * lambd) * g, args)
    return (s / lambd) * (moved - y)


class BlackboxDifferentiation(eqx.Module):
    r"""The exact solver, with the blackbox-differentiation backward pass (DBB).

    Forward: w*(θ), the layer's exact solver (no noise, no key). Backward, for the
    incoming gradient g = ∂L/∂w of a downstream loss L: for a minimising layer (θ
    costs ĉ)

        ∇_ĉ = (w*(ĉ + λg) − w*(ĉ)) / λ,

    the exact gradient of the piecewise-linear interpolation
    f_λ(ĉ) = (min_w ⟨ĉ + λg, w⟩ − min_w ⟨ĉ, w⟩)/λ of L(w*(ĉ)) = ⟨g, w*(ĉ)⟩; for a
    maximising layer (θ scores) ∇_θ = −(y*(θ − λg) − y*(θ))/λ, that of
    (max ⟨θ, y⟩ − max ⟨θ − λg, y⟩)/λ. (As λ → 0 both interpolations tend to ⟨g, w*⟩;
    a larger λ smooths more; Vlastelica et al. use 10–20 on shortest paths.)

    Reverse mode only: the backward is not linear in g, so it is a custom VJP, and
    `jax.jvp` through it raises. One extra solve per instance in the backward pass.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` is used.
    - `lambd`: λ > 0, the interpolation strength (static).

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    solver = pl.PerturbedArgmax(num_samples=1, sigma=1.0, noise=pl.Gumbel())
    dbb = pl.BlackboxDifferentiation(solver, lambd=10.0)
    theta = jnp.array([0.3, 0.2, -1.0])
    target = jnp.array([0.0, 1.0, 0.0])
    y = dbb(theta)  # [1, 0, 0]
    grad = jax.grad(lambda t: jnp.sum((dbb(t) - target) ** 2))(theta)
    # g = 2(y − target) = [2, −2, 0]; y*(θ − λg) = [0, 1, 0]: grad = [0.1, −0.1, 0]
    ```

    **Reference:** Vlastelica, Paulus, Musil, Martius, Rolínek, *Differentiation of
    Blackbox Combinatorial Solvers*, ICLR 2020.
    """

    layer: AbstractPerturbed
    lambd: float = eqx.field(static=True, kw_only=True)

    def __check_init__(self):
        check_linear_layer("BlackboxDifferentiation", self.layer)
        check_positive("lambd", self.lambd)

    def __call__(
        self, theta: Float[Array, "..."], args: Any = None, *, key: Key | None = None
    ) -> Float[Array, "..."]:
        """w*(θ) per instance, of θ's shape, in θ's dtype. `key` is ignored (the
        forward pass is exact); accepted so that layers are called alike."""
        del key
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        return unflatten(_blackbox(flat, self.layer, flat_args, self.lambd), batch)


@eqx.filter_custom_jvp
def _negative_identity(theta: Array, layer: AbstractPerturbed, args: Any):
    return _exact(layer, theta, args)


@_negative_identity.def_jvp
def _negative_identity_jvp(primals, tangents):
    (theta, layer, args), (t, _, _) = primals, tangents
    y = _exact(layer, theta, args)
    if t is None:
        return y, None
    # The Jacobian is taken to be −I for costs (a dearer item is used less), +I for
    # scores: linear in the tangent, so forward and reverse mode both work.
    s = -1 if layer.objective == "min" else 1
    return y, times(bad_instances(layer, theta), s * t.astype(y.dtype))


class NegativeIdentity(eqx.Module):
    r"""The exact solver, with the negative-identity backward pass (NID).

    Forward: w*(θ), the layer's exact solver. Backward: the solver's Jacobian is taken
    to be −I for a minimising layer (θ costs: ∇_ĉ = −g for the incoming gradient g)
    and +I for a maximising one (∇_θ = g): a straight-through estimator with no
    hyperparameter and no extra solve. Linear in g, so it is a custom JVP and forward
    mode works as well as reverse mode.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩; only its
        exact `solve` is used.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    def cheapest(costs):
        return jax.nn.one_hot(jnp.argmin(costs), costs.shape[-1])

    layer = pl.Perturbed(cheapest, num_samples=1, sigma=1.0, noise=pl.Normal(),
                         objective="min")
    nid = pl.NegativeIdentity(layer)
    costs = jnp.array([1.0, 2.0, 0.5])
    grad = jax.grad(lambda c: jnp.dot(jnp.array([1.0, 2.0, 3.0]), nid(c)))(costs)
    # −g = [−1, −2, −3]
    ```

    **Reference:** Sahoo, Paulus, Vlastelica, Musil, Kuleshov, Martius,
    *Backpropagation through Combinatorial Algorithms: Identity with Projection
    Works*, ICLR 2023 (arXiv:2205.15213).
    """

    layer: AbstractPerturbed

    def __check_init__(self):
        check_linear_layer("NegativeIdentity", self.layer)

    def __call__(
        self, theta: Float[Array, "..."], args: Any = None, *, key: Key | None = None
    ) -> Float[Array, "..."]:
        """w*(θ) per instance, of θ's shape, in θ's dtype. `key` is ignored."""
        del key
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        return unflatten(_negative_identity(flat, self.layer, flat_args), batch)
