"""Perturbed optimizers as Equinox modules: the abstract base and the generic `Perturbed`."""

import abc
import math
import numbers
from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
from jaxtyping import Array, Float

from ._custom_types import OBJECTIVES, PERTURBATIONS, Key, Objective, Perturbation
from ._estimator import Spec, perturbed_mean
from ._noise import AbstractNoise, Normal, as_noise


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


class AbstractPerturbed(eqx.Module):
    r"""A perturbed optimizer y_ε(θ) = E[y*(θ + σZ)], as an Equinox module.

    Subclasses say how to solve one instance (`solve`) and what its structure is
    (`event_ndim`, `objective`, `shift_invariant`); this class does the rest. The
    Monte-Carlo estimator and its custom derivative live in `_estimator.py`.

    **Conventions.** The last `event_ndim` axes of θ are one instance; the leading axes
    are a batch of independent instances, each with its own noise and its own
    Jacobian estimate (the gradient of row b uses row b's noise only). `objective="max"`
    means the solver maximises ⟨y, θ⟩ (θ are scores); `"min"` that it minimises
    ⟨y, θ⟩ (θ are costs); `None` that it is any function.

    **Gradient.** A custom VJP (Berthet et al., 2020, Prop. 3.1):
    J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, where ∇ν is the noise's score. Per instance it uses
    a leave-one-out baseline (any solver); for shift-invariant solvers the score's
    conditional expectation given the shift-free part of Z (Rao–Blackwellisation);
    for linear-objective solvers under additive noise the symmetrised estimate
    ½(Ĵᵀv + Ĵv), since J is then a Hessian, with a control variate on the score's
    second moment (Gumbel and Normal noise). For `perturbation="multiplicative"`,
    θ_m = θ ⊙ exp(σZ − σ²/2) with standard normal Z and J = E[y* Zᵀ] / (σθ)
    column-wise. Without chunking the solver runs M times per forward and backward
    together; with `chunk_size=K` memory is bounded by K samples and the backward
    redraws the noise and re-solves (2M solver calls: time for memory). Second
    derivatives raise a `NotImplementedError`.
    """

    num_samples: int = eqx.field(static=True, kw_only=True)
    sigma: float = eqx.field(static=True, kw_only=True)
    noise: AbstractNoise = eqx.field(static=True, kw_only=True, converter=as_noise)
    perturbation: Perturbation = eqx.field(
        default="additive", static=True, kw_only=True
    )
    chunk_size: int | None = eqx.field(default=None, static=True, kw_only=True)
    sample_axis: str | None = eqx.field(default=None, static=True, kw_only=True)
    inference: bool = eqx.field(default=False, kw_only=True)

    event_ndim: eqx.AbstractVar[int]
    objective: eqx.AbstractVar[Objective]
    shift_invariant: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def solve(self, theta: Array) -> Any:
        """The unperturbed solver y*(θ) on one instance (shape: the event shape)."""

    def __check_init__(self):
        _check_positive_int("num_samples", self.num_samples)
        sigma = self.sigma
        if (
            isinstance(sigma, bool)
            or not isinstance(sigma, numbers.Real)
            or not (math.isfinite(sigma) and sigma > 0)
        ):
            raise ValueError(f"sigma must be a positive finite number, got {sigma!r}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(
                f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}"
            )
        if self.perturbation == "multiplicative" and not isinstance(self.noise, Normal):
            raise ValueError(
                "perturbation='multiplicative' uses θ ⊙ exp(σZ − σ²/2) with standard "
                f"normal Z: pass noise=pl.Normal(), got noise={self.noise!r}"
            )
        if self.chunk_size is not None:
            _check_positive_int("chunk_size", self.chunk_size)
        if self.sample_axis is not None and not isinstance(self.sample_axis, str):
            raise TypeError(
                f"sample_axis must be a mesh axis name (str) or None, got "
                f"{self.sample_axis!r}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        if isinstance(self.event_ndim, bool) or not isinstance(self.event_ndim, int):
            raise TypeError(f"event_ndim must be an int >= 0, got {self.event_ndim!r}")
        if self.event_ndim < 0:
            raise ValueError(f"event_ndim must be an int >= 0, got {self.event_ndim!r}")

    def spec(self) -> Spec:
        """The static description handed to the estimator."""
        return Spec(
            solve=self.solve,
            num_samples=self.num_samples,
            sigma=float(self.sigma),
            noise=self.noise,
            multiplicative=self.perturbation == "multiplicative",
            chunk_size=self.chunk_size,
            objective=self.objective,
            shift_invariant=self.shift_invariant,
            sample_axis=self.sample_axis,
        )

    def split_batch(self, theta: Any, name: str = "theta") -> tuple[Array, tuple]:
        """Check θ and flatten its batch axes: (B, *event) and the batch shape."""
        theta = jnp.asarray(theta)
        if not jnp.issubdtype(theta.dtype, jnp.floating):
            raise TypeError(f"{name} must be a floating-point array, got {theta.dtype}")
        if theta.ndim < self.event_ndim:
            raise ValueError(
                f"{name} must have at least {self.event_ndim} axes (event_ndim), "
                f"got shape {theta.shape}"
            )
        cut = theta.ndim - self.event_ndim
        batch, event = theta.shape[:cut], theta.shape[cut:]
        if self.objective is not None:
            out = jax.eval_shape(self.solve, jax.ShapeDtypeStruct(event, theta.dtype))
            if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != event:
                raise ValueError(
                    f"objective={self.objective!r} needs a solver that returns one "
                    f"array of the instance's shape {event}; it returned {out}"
                )
        return theta.reshape(math.prod(batch), *event), batch

    def __call__(self, theta: Float[Array, "..."], *, key: Key | None = None):
        """y_ε(θ): the expected solution under perturbation, of the solver's shape.

        **Arguments:**

        - `theta`: inputs of shape `(*batch, *event)`, `event` the last `event_ndim`
            axes.
        - `key`: a `jax.random` key; required unless `inference=True`.

        **Returns:**

        The solver's output (array or pytree) with the batch axes in front, in the
        solver's dtype.
        """
        flat, batch = self.split_batch(theta)
        if self.inference:
            out = jax.vmap(self.solve)(flat)
        else:
            if key is None:
                raise RuntimeError(
                    f"{type(self).__name__} needs a PRNG key: call it as "
                    "layer(theta, key=key), or set inference=True (for example with "
                    "eqx.nn.inference_mode) to get the unperturbed solver."
                )
            out = perturbed_mean(self.spec(), flat, key)
        return jtu.tree_map(lambda y: y.reshape(*batch, *y.shape[1:]), out)


class Perturbed(AbstractPerturbed):
    r"""Turns a solver `fn` into its perturbed version y_ε(θ) = E[fn(θ + σZ)].

    `fn` maps one instance (an array of the last `event_ndim` axes of θ) to an array
    or a pytree of arrays; it need not be differentiable. The layer vmaps it over
    samples and batch, so a vectorisable JAX function (or a `pl.host_solver`)
    is solved for all M×B perturbed inputs in one call.

    **Arguments:**

    - `fn`: the solver, one instance in, arrays out.
    - `num_samples`: M, the number of Monte-Carlo samples (a positive int).
    - `sigma`: σ, the noise scale (a positive finite number).
    - `noise`: `pl.Gumbel()`, `pl.Normal()`, or any object with `sample(key,
        sample_shape, dtype)` and `log_prob(z)`, such as `optax.perturbations.Gumbel()`.
    - `perturbation`: `"additive"` (θ + σZ) or `"multiplicative"`
        (θ ⊙ exp(σZ − σ²/2), with `noise=pl.Normal()`; keeps positive costs positive).
    - `chunk_size`: process the M samples K at a time (bounded memory); `None` for
        all at once. The result does not depend on it, up to float summation order.
    - `sample_axis`: the name of a mesh axis to split the M samples over (sample
        parallelism): inside `jax.jit` under `jax.set_mesh(mesh)` with a mesh of
        `AxisType.Auto` axes, the noise is sharded over that axis and the estimate is
        reduced with one collective. Same key, same result as on one device. `None`
        (default): no constraint; a batch sharded over devices stays sharded anyway.
    - `event_ndim`: how many trailing axes make one instance (default 1).
    - `objective`: `"max"` if `fn(θ)` maximises ⟨y, θ⟩ over a fixed set, `"min"` if it
        minimises it, `None` (default) for any function. Declaring it enables
        `pl.FenchelYoungLoss` and the symmetrised Jacobian estimator.
    - `shift_invariant`: declare `fn(θ + c) == fn(θ)` for every constant c (argmax,
        ranking, top-k); enables the Rao–Blackwellised score. Default `False`.
    - `inference`: if `True`, return `fn(θ)` exactly, with no key needed.

    **Example:**

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    def hard_argmax(theta):
        return jax.nn.one_hot(jnp.argmax(theta), theta.shape[-1])

    layer = pl.Perturbed(hard_argmax, num_samples=1000, sigma=0.5, noise=pl.Gumbel())
    y = layer(jnp.array([-0.6, 1.9, -0.2, 1.1, -1.0]), key=jax.random.key(0))
    # y ≈ softmax(theta / 0.5) = [0.005, 0.815, 0.012, 0.165, 0.002]
    ```

    **References:** Berthet, Blondel, Teboul, Cuturi, Vert, Bach, *Learning with
    Differentiable Perturbed Optimizers*, NeurIPS 2020 (arXiv:2002.08676).
    """

    fn: Callable[[Array], Any] = eqx.field(static=True)
    event_ndim: int = eqx.field(default=1, static=True, kw_only=True)
    objective: Objective = eqx.field(default=None, static=True, kw_only=True)
    shift_invariant: bool = eqx.field(default=False, static=True, kw_only=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {self.fn!r}")

    def solve(self, theta: Array) -> Any:
        return self.fn(theta)


def perturbed(
    fn: Callable[[Array], Any] | None = None,
    *,
    num_samples: int,
    sigma: float,
    noise: Any,
    **kwargs: Any,
) -> Any:
    """The TensorFlow/PyTorch `perturbed` function and decorator, as a `pl.Perturbed`.

    `perturbed(fn, num_samples=..., sigma=..., noise=...)` and
    `@perturbed(num_samples=..., sigma=..., noise=...)` both give
    `pl.Perturbed(fn, ...)`, called as `f(theta, *, key)`. It is always per-instance
    over the leading axes (their `batched=True`). Other keyword arguments are those of
    `pl.Perturbed`.

    ```python
    import jax
    import jax.numpy as jnp
    import perturbed_layers as pl

    @pl.perturbed(num_samples=1000, sigma=0.5, noise=pl.Gumbel(), objective="max")
    def argmax(theta):
        return jax.nn.one_hot(jnp.argmax(theta), theta.shape[-1])

    y = argmax(jnp.array([[-0.6, 1.9, -0.2], [1.0, 0.0, 0.5]]), key=jax.random.key(0))
    ```
    """

    def wrap(f: Callable[[Array], Any]) -> Perturbed:
        return Perturbed(f, num_samples=num_samples, sigma=sigma, noise=noise, **kwargs)

    return wrap if fn is None else wrap(fn)
