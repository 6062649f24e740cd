"""Adaptive implicit maximum-likelihood estimation, AI-MLE (Minervini et al., 2023)."""

import numbers
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from .._custom_types import Key
from .._noise import AbstractNoise, as_noise
from .._perturbed import AbstractPerturbed, as_int
from ._common import bad_instances, check_linear_layer, check_positive, times, unflatten
from ._imle import draw_noise, perturb, solve_samples


class AdaptiveIMLEState(eqx.Module):
    """The state AI-MLE carries from step to step (arrays only: it can live inside a
    jit-compiled training step and in a checkpoint).

    - `beta`: β ≥ 0, the size of the step to the target distribution relative to θ
        (λ = β‖θ‖/‖g‖).
    - `norm`: the running average of the number of non-zero entries per sample
        gradient, the quantity β is steered by.
    - `velocity`: the last change of β (for `momentum`).
    - `stats`: always zeros(2) in a state. Its *derivative* is not one: the backward
        pass hands back through it what it measured, (Σ non-zero entries, number of
        sample gradients), which `AdaptiveIMLE.update` consumes.
    """

    beta: Float[Array, ""]
    norm: Float[Array, ""]
    velocity: Float[Array, ""]
    stats: Float[Array, "2"]


def _event_norm(x: Array) -> Array:
    return jnp.sqrt(jnp.sum(x * x, axis=tuple(range(1, x.ndim))))


@eqx.filter_custom_vjp
def _aimle(diff, beta, layer, args, eps):
    theta, _ = diff
    ys = solve_samples(layer, perturb(layer, theta, eps), args)
    return times(bad_instances(layer, theta), jnp.mean(ys, axis=0))


@_aimle.def_fwd
def _aimle_fwd(perturbed_leaves, diff, beta, layer, args, eps):
    del perturbed_leaves
    theta, _ = diff
    ys = solve_samples(layer, perturb(layer, theta, eps), args)
    return times(bad_instances(layer, theta), jnp.mean(ys, axis=0)), ys


@_aimle.def_bwd
def _aimle_bwd(ys, g, perturbed_leaves, diff, beta, layer, args, eps):
    theta, stats = diff
    g = g.astype(ys.dtype)
    # λ_b = β‖θ_b‖/‖g_b‖ per instance; no gradient (and no measurement) where it is
    # not a positive finite number: g_b = 0 (nothing to follow), θ_b = 0 or β = 0.
    g_norm = _event_norm(g)
    lambd = (
        beta.astype(ys.dtype) * _event_norm(theta) / jnp.where(g_norm > 0, g_norm, 1)
    )
    usable = (g_norm > 0) & (lambd > 0) & jnp.isfinite(lambd)
    step = jnp.where(usable, lambd, 1).reshape((1, -1) + (1,) * (theta.ndim - 1))
    # As pl.IMLE: scores move to θ − λg, costs to c + λg, with the same noise.
    s = 1 if layer.objective == "min" else -1
    moved = solve_samples(layer, perturb(layer, theta, eps) + s * step * g[None], args)
    diffs = moved - ys
    mask = bad_instances(layer, theta)  # NaN where θ_b is: the gradient too
    grad = times(jnp.where(usable, mask, 0 * mask), s * jnp.mean(diffs, 0) / step[0])
    counted = usable & jnp.isfinite(mask)
    nonzeros = jnp.sum(diffs != 0, axis=tuple(range(2, diffs.ndim)))  # (M, B)
    measured = jnp.stack(
        [
            jnp.sum(jnp.where(counted[None], nonzeros, 0)),
            diffs.shape[0] * jnp.sum(counted),
        ]
    ).astype(stats.dtype)
    theta_done, stats_done = perturbed_leaves
    return (grad if theta_done else None), (measured if stats_done else None)


class AdaptiveIMLE(eqx.Module):
    r"""Adaptive I-MLE (AI-MLE): I-MLE whose step λ to the target distribution follows
    the incoming gradient and θ, with a size β tuned online.

    As `pl.IMLE`, forward: the mean of M perturb-and-MAP samples y*(θ + σε_m) (for
    costs, w*(c − σε_m)). Backward, for the incoming gradient g, per instance b:

        λ_b = β ‖θ_b‖ / ‖g_b‖,
        ∇_θ_b ≈ (1/M) Σ_m (y*(θ_b + σε_m) − y*(θ_b − λ_b g_b + σε_m)) / λ_b

    (costs: (w*(c_b − σε_m + λ_b g_b) − w*(c_b − σε_m))/λ_b), so the target
    distribution is always a step of relative size β from θ, whatever the scale of
    the loss. β is adapted so that the sample gradients keep about `target_norm`
    non-zero entries (their L0 norm): with n̂ the number of non-zero entries per
    sample gradient measured in a backward pass,

        n ← d·n + (1 − d)·n̂,   u ← (+step if n < target_norm else −step) + μ·u,
        β ← max(β + u, 0),

    d = `decay`, μ = `momentum`. Instances whose g is 0 (or θ is 0, or β is 0) get a
    zero gradient and are left out of n̂.

    **The state is explicit.** β is measured in the backward pass, so it cannot be
    returned by the call: the call takes an `AdaptiveIMLEState`, and the backward
    pass returns what it measured as the *derivative with respect to that state*
    (not a derivative: a channel, as Flax's `perturb` reads intermediate
    cotangents). Differentiate the loss with respect to the state too, and give that
    "gradient" to `update`, which returns the next state. All of it is arrays, so one
    jit-compiled step carries it, and a checkpoint saves it. If the state is not
    differentiated, β stays where it is (I-MLE with λ_b = β‖θ_b‖/‖g_b‖).

    Compared with the reference implementation (torch-adaptive-imle, whose
    `AdaptiveTargetDistribution` this follows: defaults β₀ = 1, step 1e-3, decay 0.9,
    target 1, no momentum), λ is per instance (there, one λ from the norms of the
    whole batch), and it is jit-compatible (PyEPO 2.2.7's `adaptiveImplicitMLE` is
    eager-only in both its front ends, and steers by the fraction of non-zero entries
    of the batch-mean gradient against 1 rather than by a count against a target).
    Divided by λ, as `pl.IMLE`.

    **Arguments:**

    - `layer`: a perturbed layer whose solver maximises or minimises ⟨y, θ⟩.
    - `noise`: the perturbation, usually `pl.SumOfGamma(k, tau, s)`.
    - `num_samples`: M, perturb-and-MAP samples per instance (default 1).
    - `sigma`: a scale applied to the noise (default 1).
    - `init_beta`: β₀ > 0, the initial relative step (default 1).
    - `step`: the change of β per update, > 0 (default 1e-3).
    - `target_norm`: the target number of non-zero entries per sample gradient, > 0
        (default 1).
    - `decay`: d in [0, 1), the running average's decay (default 0.9).
    - `momentum`: μ in [0, 1), momentum of β's updates (default 0).

    **Example:**

    ```python
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    topk = pl.PerturbedTopK(2, num_samples=1, sigma=1.0, noise=pl.Gumbel())
    aimle = pl.AdaptiveIMLE(topk, noise=pl.SumOfGamma(2), num_samples=4)
    state = aimle.init()
    theta = jnp.array([[0.5, 1.0, -0.3, 2.0]])
    target = jnp.array([[1.0, 0.0, 0.0, 1.0]])


    @jax.jit
    def step(theta, state, key):
        def loss(theta, state):
            return jnp.sum((aimle(theta, state, key=key) - target) ** 2)

        grad, measured = jax.grad(loss, argnums=(0, 1))(theta, state)
        return theta - 0.1 * grad, aimle.update(state, measured)


    for i in range(3):
        theta, state = step(theta, state, jax.random.key(i))
    ```

    **Reference:** Minervini, Franceschi, Niepert, *Adaptive Perturbation-Based
    Gradient Estimation for Discrete Latent Variable Models*, AAAI 2023.
    """

    layer: AbstractPerturbed
    noise: AbstractNoise = eqx.field(static=True, kw_only=True, converter=as_noise)
    num_samples: int = eqx.field(default=1, static=True, kw_only=True, converter=as_int)
    sigma: float = eqx.field(default=1.0, static=True, kw_only=True)
    init_beta: float = eqx.field(default=1.0, static=True, kw_only=True)
    step: float = eqx.field(default=1e-3, static=True, kw_only=True)
    target_norm: float = eqx.field(default=1.0, static=True, kw_only=True)
    decay: float = eqx.field(default=0.9, static=True, kw_only=True)
    momentum: float = eqx.field(default=0.0, static=True, kw_only=True)

    def __check_init__(self):
        check_linear_layer("AdaptiveIMLE", self.layer)
        for name in ("sigma", "init_beta", "step", "target_norm"):
            check_positive(name, getattr(self, name))
        for name in ("decay", "momentum"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not 0 <= float(value) < 1
            ):
                raise ValueError(f"{name} must be a number in [0, 1), got {value!r}")
        m = self.num_samples
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"num_samples must be a positive int, got {m!r}")

    def init(self, dtype: Any = jnp.float32) -> AdaptiveIMLEState:
        """The initial state: β = `init_beta`, the running average at the target (as
        the reference implementation starts it), no velocity."""
        return AdaptiveIMLEState(
            beta=jnp.asarray(self.init_beta, dtype),
            norm=jnp.asarray(self.target_norm, dtype),
            velocity=jnp.zeros((), dtype),
            stats=jnp.zeros(2, dtype),
        )

    def __call__(
        self,
        theta: Float[Array, "..."],
        state: AdaptiveIMLEState,
        args: Any = None,
        *,
        key: Key | None = None,
    ) -> Float[Array, "..."]:
        """The mean of the perturb-and-MAP samples per instance, of θ's shape.

        **Arguments:** `theta` `(*batch, *event)`; `state` from `init` or `update`;
        `args` per-instance problem data (leaves with the batch axes in front, never
        differentiated); `key` a `jax.random` key (required)."""
        if key is None:
            raise RuntimeError(
                "AdaptiveIMLE needs a PRNG key for its perturb-and-MAP samples: call "
                "it as aimle(theta, state, key=key)"
            )
        _check_state(state)
        flat, flat_args, batch = self.layer.split_batch(theta, args)
        eps = draw_noise(self.noise, key, self.num_samples, flat, self.sigma)
        # Checked on θ, which the forward uses (β only enters the backward).
        flat = eqx.error_if(flat, state.beta < 0, "state.beta must be >= 0")
        beta = jax.lax.stop_gradient(state.beta)
        y = _aimle((flat, state.stats), beta, self.layer, flat_args, eps)
        return unflatten(y, batch)

    def update(
        self, state: AdaptiveIMLEState, measured: AdaptiveIMLEState
    ) -> AdaptiveIMLEState:
        """The next state, from `measured`: the derivative of the loss with respect to
        `state` (only its `stats` is read). A measurement of no sample gradient (the
        state was not differentiated, or every g was 0) leaves the state as it is."""
        _check_state(state)
        _check_state(measured, name="measured")
        total, samples = measured.stats[0], measured.stats[1]
        has = samples > 0
        norm = self.decay * state.norm + (1 - self.decay) * (
            total / jnp.where(has, samples, 1)
        )
        change = (
            jnp.where(norm < self.target_norm, self.step, -self.step)
            + self.momentum * state.velocity
        )
        return AdaptiveIMLEState(
            beta=jnp.where(has, jnp.maximum(state.beta + change, 0), state.beta),
            norm=jnp.where(has, norm, state.norm),
            velocity=jnp.where(has, change, state.velocity),
            stats=jnp.zeros_like(state.stats),
        )


def _check_state(state: Any, name: str = "state") -> None:
    if not isinstance(state, AdaptiveIMLEState):
        raise TypeError(
            f"{name} must be an AdaptiveIMLEState (from aimle.init(), or the "
            f"derivative of the loss with respect to one), got {type(state).__name__}"
        )
    for field, shape in (("beta", ()), ("norm", ()), ("velocity", ()), ("stats", (2,))):
        value = getattr(state, field)
        if jnp.shape(value) != shape:
            raise ValueError(
                f"{name}.{field} must have shape {shape}, got {jnp.shape(value)}"
            )
