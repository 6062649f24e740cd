"""The bases of the config groups' entries, the float type YAML needs, registries.

A *registry* is a plain dict from a name (what a config writes, e.g. `name: adam`) to
an *options class*: a pydantic model that declares the typed options of that entry and
whose `build(...)` method constructs the object. The config schema is generated from the
registries (`_config.py`), so adding an entry to a registry dict is all it takes to make
it usable from YAML.
"""

import abc
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import equinox as eqx
import optax
from jaxtyping import PRNGKeyArray
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

import perturbed_layers as pl

from ._tasks import AbstractTask, Dataset, Loss


# The config loader reads YAML 1.2 floats (`1e-2`, `1.5e3`) as numbers, but a value
# may still arrive as a string (quoted in YAML, or from Python): a float option takes
# any string Python's float() reads; anything else stays "not a valid number".
def _yaml12_float(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


FiniteFloat = Annotated[
    float, BeforeValidator(_yaml12_float), Field(allow_inf_nan=False)
]
PositiveFloat = Annotated[FiniteFloat, Field(gt=0)]
NonNegativeFloat = Annotated[FiniteFloat, Field(ge=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Options(BaseModel):
    """Typed options of one registry entry: strict types, unknown keys refused.

    Subclasses declare `name: Literal["their-name"]` and their options, and a `build`
    method. `kind` names the registry in error messages ("dataset", "model", ...).
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)
    kind: ClassVar[str] = "entry"
    name: str


class DataOptions(Options):
    """A dataset: `build()` generates or loads it; `layers` are those that fit it."""

    kind: ClassVar[str] = "dataset"
    layers: ClassVar[tuple[str, ...]]

    @abc.abstractmethod
    def build(self) -> Dataset: ...


class ModelOptions(Options):
    """A model: `build(in_shape, out_shape, key=...)` maps one input to θ."""

    kind: ClassVar[str] = "model"

    @abc.abstractmethod
    def build(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        key: PRNGKeyArray,
    ) -> eqx.Module: ...


class LayerOptions(Options):
    """A perturbed layer for a task; `sample_axis` names the mesh axis its samples
    are split over, if any."""

    kind: ClassVar[str] = "layer"

    @abc.abstractmethod
    def build(
        self, task: AbstractTask, *, sample_axis: str | None = None
    ) -> pl.AbstractPerturbed: ...


class PerturbedLayerOptions(LayerOptions):
    """Options shared by every perturbed layer (those of `pl.Perturbed`)."""

    num_samples: PositiveInt = Field(description="M, Monte-Carlo samples per instance")
    sigma: PositiveFloat = Field(description="σ, the noise scale")
    noise: str = Field("normal", description="a name in NOISES: normal, gumbel")
    perturbation: Literal["additive", "multiplicative"] = Field(
        "additive", description="θ + σZ, or θ ⊙ exp(σZ − σ²/2) (keeps costs positive)"
    )
    chunk_size: PositiveInt | None = Field(
        None, description="samples processed at a time (None: all at once)"
    )

    @field_validator("noise")
    @classmethod
    def _known_noise(cls, value: str) -> str:
        from ._registry import NOISES  # the registry imports this module

        if value not in NOISES:
            raise ValueError(
                f"unknown noise {value!r}; valid names: {describe(NOISES)}"
            )
        return value

    @model_validator(mode="after")
    def _multiplicative_is_normal(self) -> "PerturbedLayerOptions":
        if self.perturbation == "multiplicative" and self.noise != "normal":
            raise ValueError(
                "perturbation 'multiplicative' uses θ ⊙ exp(σZ − σ²/2) with standard "
                f"normal Z: set noise: normal (got {self.noise!r})"
            )
        return self

    def common(self, sample_axis: str | None) -> dict:
        """The keyword arguments of the `pl` layer's constructor."""
        from ._registry import NOISES

        return dict(
            num_samples=self.num_samples,
            sigma=self.sigma,
            noise=NOISES[self.noise](),
            perturbation=self.perturbation,
            chunk_size=self.chunk_size,
            sample_axis=sample_axis,
        )


class LossOptions(Options):
    """A training loss built on the layer (with or without state), for the task (whose
    constraints some losses read)."""

    kind: ClassVar[str] = "loss"

    @abc.abstractmethod
    def build(self, layer: pl.AbstractPerturbed, task: AbstractTask) -> Loss: ...


class OptimizerOptions(Options):
    """An optax optimiser, for a run of `total_steps` steps (for schedules)."""

    kind: ClassVar[str] = "optimizer"

    @abc.abstractmethod
    def build(self, total_steps: int) -> optax.GradientTransformation: ...


def describe(registry: Mapping[str, object]) -> str:
    """The valid names of a registry, for error messages."""
    return ", ".join(repr(name) for name in registry)
