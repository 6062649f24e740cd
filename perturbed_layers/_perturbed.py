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
from ._estimator import Estimator, perturbed_mean
from ._estimator._sampling import output_dtype
from ._noise import AbstractNoise, Normal, as_noise


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def as_int(value: Any) -> Any:
    """Converter for int fields: NumPy integers become Python ints; anything else is
    left for `__check_init__` to refuse with the argument's name."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    return value


def as_optional_int(value: Any) -> Any:
    return None if value is None else as_int(value)


def check_int(name: str, value: object, *, minimum: int = 0) -> None:
    """A TypeError/ValueError naming `name` unless `value` is an int >= `minimum`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


def _batch_args(args: Any, batch: tuple[int, ...], size: int) -> Any:
    """Check that every leaf of `args` has θ's batch axes in front; flatten them."""
    if args is None:
        return None

    def one(leaf: Any) -> Array:
        if not eqx.is_array_like(leaf):
            raise TypeError(
                "args must be a pytree of arrays (per-instance problem data), got a "
                f"leaf of type {type(leaf).__name__}"
            )
        leaf = jnp.asarray(leaf)
        if leaf.shape[: len(batch)] != batch:
            raise ValueError(
                "every leaf of args must have theta's batch axes in front (one slice "
                f"per instance): theta's batch shape is {batch}, got a leaf of shape "
                f"{leaf.shape}"
            )
        return leaf.reshape(size, *leaf.shape[len(batch) :])

    return jtu.tree_map(one, args)


class AbstractPerturbed(eqx.Module):
    r"""A perturbed optimizer y_ε(θ) = E[y*(θ + σZ)], as an Equinox module.

    Subclasses say how to solve one instance (`solve(theta, args)`) and what its
    structure is (`event_ndim`, `objective`, `shift_invariant`); this class does the
    rest. The Monte-Carlo estimator and its custom derivative live in `_estimator/`.

    **Conventions.** The last `event_ndim` axes of θ are one instance; the leading axes
    are a batch of independent instances, each with its own noise and its own
    Jacobian estimate (the gradient of row b uses row b's noise only). `objective="max"`
    means the solver maximises ⟨y, θ⟩ (θ are scores); `"min"` that it minimises
    ⟨y, θ⟩ (θ are costs); `None` that it is any function.

    **Problem data.** Per-instance data travels as `args`, a pytree of arrays whose
    leaves have θ's batch axes in front; the solver sees one instance's slice. Data
    shared by all instances may be array fields of a subclass. Both are traced like
    any input (new values do not recompile) and no derivative flows into them.

    **Derivative.** A custom JVP (Berthet et al., 2020, Prop. 3.1):
    J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, where ∇ν is the noise's score, with the variance
    reduction of `estimator` (`pl.Estimator`): a leave-one-out baseline; for
    shift-invariant solvers the score's conditional expectation given the shift-free
    part of Z (Rao–Blackwellisation); for linear-objective solvers under additive
    noise the symmetrised estimate ½(Ĵ + Ĵᵀ), since J is then a Hessian, with a
    control variate on the score's second moment. The tangent is linear in the input
    tangent, so forward mode (`jax.jvp`, `jax.jacfwd`) and reverse mode give the same
    estimate. For `perturbation="multiplicative"`, θ_m = θ ⊙ exp(σZ − σ²/2) with
    standard normal Z and J = E[y* Zᵀ] / (σθ) column-wise. Without chunking the solver
    runs M times per forward and derivative together; with `chunk_size=K` memory is
    bounded by K samples and the derivative redraws the noise and re-solves (2M solver
    calls: time for memory). Second derivatives raise a `NotImplementedError`.

    **Bad input.** An instance whose θ holds a NaN (or ±inf, unless `allows_inf`) gets
    NaN outputs and NaN derivatives, never a plausible number; the other instances are
    unaffected. A batch of 0 instances gives an empty result; an instance of size 0 is
    a ValueError.
    """

    num_samples: int = eqx.field(static=True, kw_only=True, converter=as_int)
    sigma: float = eqx.field(static=True, kw_only=True)
    noise: AbstractNoise = eqx.field(static=True, kw_only=True, converter=as_noise)
    perturbation: Perturbation = eqx.field(
        default="additive", static=True, kw_only=True
    )
    chunk_size: int | None = eqx.field(
        default=None, static=True, kw_only=True, converter=as_optional_int
    )
    sample_axis: str | None = eqx.field(default=None, static=True, kw_only=True)
    estimator: Estimator = eqx.field(default=Estimator(), static=True, kw_only=True)
    inference: bool = eqx.field(default=False, kw_only=True)

    event_ndim: eqx.AbstractVar[int]
    objective: eqx.AbstractVar[Objective]
    shift_invariant: eqx.AbstractVar[bool]
    # ±inf in θ is meaningful to the solver (a graph's missing arcs): only NaN is bad.
    allows_inf: eqx.AbstractVar[bool]

    @abc.abstractmethod
    def solve(self, theta: Array, args: Any = None) -> Any:
        """The unperturbed solver y*(θ) on one instance (shape: the event shape), with
        that instance's slice of `args` (None when the layer is called without)."""

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
        if not isinstance(self.estimator, Estimator):
            raise TypeError(
                f"estimator must be a pl.Estimator, got {type(self.estimator).__name__}"
            )
        if self.objective not in OBJECTIVES:
            raise ValueError(
                f"objective must be one of {OBJECTIVES}, got {self.objective!r}"
            )
        check_int("event_ndim", self.event_ndim)

    def split_batch(
        self, theta: Any, args: Any = None, name: str = "theta"
    ) -> tuple[Array, Any, tuple]:
        """Check θ and `args` and flatten their batch axes: θ as (B, *event), args
        with B in front, and the batch shape."""
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
        if math.prod(event) == 0:
            raise ValueError(
                f"{name} has an instance of size 0 (event shape {event}, the last "
                f"{self.event_ndim} axes): a solver needs at least one entry"
            )
        size = math.prod(batch)
        flat_args = _batch_args(args, batch, size)
        one_args = jtu.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape[1:], a.dtype), flat_args
        )
        out = jax.eval_shape(
            self.solve, jax.ShapeDtypeStruct(event, theta.dtype), one_args
        )
        if self.objective is not None and (
            not isinstance(out, jax.ShapeDtypeStruct) or out.shape != event
        ):
            raise ValueError(
                f"objective={self.objective!r} needs a solver that returns one "
                f"array of the instance's shape {event}; it returned {out}"
            )
        return theta.reshape(size, *event), flat_args, batch

    def __call__(
        self,
        theta: Float[Array, "..."],
        args: Any = None,
        *,
        key: Key | None = None,
    ):
        """y_ε(θ): the expected solution under perturbation, of the solver's shape.

        **Arguments:**

        - `theta`: inputs of shape `(*batch, *event)`, `event` the last `event_ndim`
            axes.
        - `args`: per-instance problem data, a pytree of arrays whose leaves have the
            batch axes of θ in front (`None`: the solver takes none). Traced, never
            differentiated: no derivative flows into `args`.
        - `key`: a `jax.random` key; required unless `inference=True`.

        **Returns:**

        The solver's output (array or pytree) with the batch axes in front: floating
        outputs in their dtype, integer and bool outputs averaged in θ's floating
        dtype (float32 at least).
        """
        flat, flat_args, batch = self.split_batch(theta, args)
        if not self.inference and key is None:
            raise RuntimeError(
                f"{type(self).__name__} needs a PRNG key: call it as "
                "layer(theta, key=key), or set inference=True (for example with "
                "eqx.nn.inference_mode) to get the unperturbed solver."
            )
        if flat.shape[0] == 0 or self.inference:
            out = jax.vmap(self.solve)(flat, flat_args)
            out = jtu.tree_map(
                lambda y: y.astype(output_dtype(y.dtype, flat.dtype)), out
            )
        else:
            out = perturbed_mean(flat, self, flat_args, key=key)
        return jtu.tree_map(lambda y: y.reshape(*batch, *y.shape[1:]), out)


class Perturbed(AbstractPerturbed):
    r"""Turns a solver `fn` into its perturbed version y_ε(θ) = E[fn(θ + σZ)].

    `fn` maps one instance (an array of the last `event_ndim` axes of θ) to an array
    or a pytree of arrays; it need not be differentiable. The layer vmaps it over
    samples and batch, so a vectorisable JAX function (or a `pl.host_solver`)
    is solved for all M×B perturbed inputs in one call.

    **Arguments:**

    - `fn`: the solver, one instance in, arrays out: `fn(theta)` when the layer is
        called without `args`, `fn(theta, args)` with them (one instance's slice).
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
    - `allows_inf`: declare that ±inf in θ means something to `fn` (a graph's
        missing arcs); otherwise an instance with a non-finite θ gets NaN outputs.
        NaN always gives NaN. Default `False`.
    - `estimator`: a `pl.Estimator`, the variance-reduction choices (all `"auto"`).
    - `inference`: if `True`, return `fn(θ)` exactly, with no key needed.

    Called as `layer(theta, args=None, *, key)`; see `AbstractPerturbed.__call__`.

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

    fn: Callable[..., Any] = eqx.field(static=True)
    event_ndim: int = eqx.field(default=1, static=True, kw_only=True, converter=as_int)
    objective: Objective = eqx.field(default=None, static=True, kw_only=True)
    shift_invariant: bool = eqx.field(default=False, static=True, kw_only=True)
    allows_inf: bool = eqx.field(default=False, static=True, kw_only=True)

    def __check_init__(self):
        if not callable(self.fn):
            raise TypeError(f"fn must be callable, got {self.fn!r}")
        for name in ("shift_invariant", "allows_inf"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")

    def solve(self, theta: Array, args: Any = None) -> Any:
        return self.fn(theta) if args is None else self.fn(theta, args)


def perturbed(
    fn: Callable[..., Any] | None = None,
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

    def wrap(f: Callable[..., Any]) -> Perturbed:
        return Perturbed(f, num_samples=num_samples, sigma=sigma, noise=noise, **kwargs)

    return wrap if fn is None else wrap(fn)


def no_args(layer: Any, args: Any) -> None:
    """A TypeError if problem data reaches a layer whose solver takes none."""
    if args is not None:
        raise TypeError(
            f"{type(layer).__name__} takes no args (problem data); got "
            f"{jtu.tree_structure(args)}"
        )
