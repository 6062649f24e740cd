"""The estimator's choices, as one visible object: `pl.Estimator`.

Every variance-reduction step of the Jacobian estimator and every size threshold that
switches one is an option here, with an `"auto"` default that picks what measured
best. A test or a benchmark ablation turns a step off with a constructor argument;
`Estimator.resolve` says what is in force for a given layer and input.
"""

import math
import numbers
from typing import Any, Literal, NamedTuple

import equinox as eqx
import jax

Auto = Literal["auto"]


class Thresholds(NamedTuple):
    """Size thresholds of one platform, in values (M·B·n unless said otherwise).

    - `small`: at most this many values, per-instance contractions go elementwise
        instead of as batched matrix products, and the control variate is skipped (its
        extra reductions cost more time than its variance saves).
    - `block`: values per block of the blocked noise draw.
    - `blocked_from`: draws of at least this many values go a block at a time.
    """

    small: int
    block: int
    blocked_from: float


# Measured on a 2-core x86 CPU with jax 0.10 (bench/README.md): XLA:CPU fills a random
# array in one loop over it, and cache-sized blocks came out 0.74-0.86x the time of one
# draw from 2^22 values up; a dot call has a fixed cost that dominates below ~4096
# values (2.5x the whole step at B=1, n=10, M=100). Accelerators were not measured:
# they get a neutral default (no blocking; the same elementwise cut-off, which only
# trades a few tiny kernels) until someone measures them with bench/run.py.
THRESHOLDS: dict[str, Thresholds] = {
    "cpu": Thresholds(small=4096, block=2**18, blocked_from=2**22),
    "gpu": Thresholds(small=4096, block=2**18, blocked_from=math.inf),
    "tpu": Thresholds(small=4096, block=2**18, blocked_from=math.inf),
}


def platform_thresholds() -> Thresholds:
    """The thresholds of the platform JAX computes on by default."""
    return THRESHOLDS.get(jax.default_backend(), THRESHOLDS["gpu"])


class Plan(NamedTuple):
    """What `Estimator.resolve` decided for one layer and input shape (all static)."""

    baseline: bool
    rao_blackwell: bool
    symmetrise: bool
    score_moment: float | None  # c of E[s sᵀ] when the control variate is on
    block: int | None  # samples per block of the unchunked draw, None: one draw
    small: int  # elementwise contractions at most this many values


def _check_flag(name: str, value: object) -> None:
    if value != "auto" and not isinstance(value, bool):
        raise TypeError(f"{name} must be 'auto', True or False, got {value!r}")


class Estimator(eqx.Module):
    r"""The choices of the Monte-Carlo Jacobian estimator of a perturbed layer.

    Every option is `"auto"` by default, which reproduces the measured best choice; set
    one to `False` to switch that step off (an ablation), or to `True` to require it
    (an error if it does not apply, rather than a biased estimate).

    **Arguments:**

    - `baseline`: the leave-one-out baseline, Σ_k (y_k − mean_{j≠k} y_j) s_kᵀ. Unbiased
        for any solver. `"auto"`: on when M > 1.
    - `rao_blackwell`: replace the score by its conditional expectation given the
        shift-free part of Z (only for `shift_invariant` solvers under additive noise,
        where it is unbiased). `"auto"`: on where it applies.
    - `symmetrise`: average the estimates of Jᵀv and Jv, since J is the Hessian of the
        perturbed maximum (only for a declared linear `objective` under additive noise).
        `"auto"`: on where it applies.
    - `control_variate`: subtract α_k((s_kᵀv) s_k − E[s sᵀ] v), α_k from the other
        samples (leave-one-out, so unbiased); needs the symmetrised estimate, M ≥ 3 and
        a noise whose `score_moment` is known. `"auto"`: on where it applies, except for
        tiny problems (M·B·n ≤ `thresholds.small`), where it costs more time than it
        saves error.
    - `block_size`: samples per block of the noise draw in the unchunked forward (the
        samples do not depend on it). `"auto"`: from the platform's thresholds; `None`:
        one draw.
    - `thresholds`: a `Thresholds` to use instead of the platform's (`THRESHOLDS`).

    **Example:**

    ```python
    import perturbed_layers as pl

    plain = pl.Estimator(baseline=False, rao_blackwell=False, symmetrise=False,
                         control_variate=False)
    layer = pl.PerturbedArgmax(num_samples=100, sigma=0.5, noise=pl.Gumbel(),
                               estimator=plain)  # the plain score-function estimator
    ```
    """

    baseline: bool | Auto = eqx.field(default="auto", static=True)
    rao_blackwell: bool | Auto = eqx.field(default="auto", static=True)
    symmetrise: bool | Auto = eqx.field(default="auto", static=True)
    control_variate: bool | Auto = eqx.field(default="auto", static=True)
    block_size: int | Auto | None = eqx.field(default="auto", static=True)
    thresholds: Thresholds | None = eqx.field(default=None, static=True)

    def __check_init__(self):
        for name in ("baseline", "rao_blackwell", "symmetrise", "control_variate"):
            _check_flag(name, getattr(self, name))
        size = self.block_size
        if size not in ("auto", None) and (
            isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1
        ):
            raise TypeError(
                f"block_size must be 'auto', None or a positive int, got {size!r}"
            )
        if self.thresholds is not None and not isinstance(self.thresholds, Thresholds):
            raise TypeError(
                "thresholds must be a pl.Thresholds or None, got "
                f"{type(self.thresholds).__name__}"
            )

    def resolve(self, layer: Any, shape: tuple[int, ...]) -> Plan:
        """The plan for `layer` on an input of shape `(B, *event)`.

        Raises a ValueError if an option set to `True` does not apply (it would bias
        the estimate).
        """
        limits = self.thresholds or platform_thresholds()
        m = layer.num_samples
        additive = layer.perturbation == "additive"
        size = m * math.prod(shape)

        def decide(
            name: str, applies: bool, why: str, auto: bool | None = None
        ) -> bool:
            value = getattr(self, name)
            if value is True and not applies:
                raise ValueError(f"Estimator({name}=True) does not apply here: {why}")
            if value == "auto":
                return applies if auto is None else auto
            return bool(value)

        baseline = decide("baseline", m > 1, "it needs num_samples > 1")
        rao = decide(
            "rao_blackwell",
            layer.shift_invariant and additive,
            "it needs a shift_invariant solver and additive perturbation",
        )
        sym = decide(
            "symmetrise",
            layer.objective is not None and additive,
            "it needs a declared objective ('max'/'min') and additive perturbation",
        )
        n = math.prod(shape[1:])
        moment = layer.noise.score_moment(n, centred=rao) if sym and m >= 3 else None
        cv = decide(
            "control_variate",
            moment is not None,
            "it needs the symmetrised estimate, num_samples >= 3 and a noise whose "
            "score_moment is known",
            auto=moment is not None and size > limits.small,
        )
        return Plan(
            baseline=baseline,
            rao_blackwell=rao,
            symmetrise=sym,
            score_moment=moment if cv else None,
            block=self._block(layer, shape, limits),
            small=limits.small,
        )

    def _block(self, layer: Any, shape: tuple[int, ...], limits: Thresholds):
        m, per_sample = layer.num_samples, math.prod(shape)
        if self.block_size is None or layer.sample_axis is not None or per_sample == 0:
            return None  # (split samples are spread over devices instead)
        if self.block_size == "auto":
            if m * per_sample < limits.blocked_from:
                return None
            target = max(1, limits.block // per_sample)
        else:
            target = int(self.block_size)
        # The largest divisor of M up to the target, so that the blocks tile the samples.
        size = max(d for d in range(1, min(target, m) + 1) if m % d == 0)
        return None if size == m else size
