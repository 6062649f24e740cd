"""Models (Equinox modules, one instance in, θ out) and their registry.

Each model maps one input (any shape) to θ of the task's output shape; the training
loop vmaps it over the batch. The head is applied last:

- `output`: `"identity"`, or `"softplus"` / `"exp"` for costs that must stay positive
    (the grid shortest-path solver needs them, and the multiplicative perturbation
    keeps them so); those add 1e-6 so that θ > 0 even where the activation underflows.
- `normalize`: divide θ by its mean over the instance. Shortest paths depend on the
    ratios of the costs only, and the Fenchel–Young loss with the multiplicative
    perturbation is 1-homogeneous, L(αθ) = α L(θ): without this, training can lower
    the loss by shrinking every cost towards 0 instead of learning (we saw it collapse
    to constant costs within 50 steps on Warcraft maps).
"""

import math
from collections.abc import Callable
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax
from jaxtyping import Array, Float, PRNGKeyArray
from pydantic import Field

from ._options import ModelOptions, PositiveInt

Output = Literal["identity", "softplus", "exp"]
_OUTPUTS: dict[str, Callable[[Array], Array]] = {
    "identity": lambda z: z,
    "softplus": lambda z: jax.nn.softplus(z) + 1e-6,
    "exp": lambda z: jnp.exp(z) + 1e-6,
}


def _as_float(x: Array) -> Array:
    """Images stored as uint8 are scaled to [-2, 2] (centred: faster training than
    [0, 1]); floats pass through."""
    if jnp.issubdtype(x.dtype, jnp.integer):
        return x.astype(jnp.float32) / 63.75 - 2
    return x.astype(jnp.float32)


def _head(theta: Array, output: Output, normalize: bool) -> Array:
    theta = _OUTPUTS[output](theta)
    return theta / jnp.mean(theta) if normalize else theta


class FlatModel(eqx.Module):
    """A `Linear` or `MLP` on the flattened input, reshaped to the output shape."""

    net: eqx.Module
    out_shape: tuple[int, ...] = eqx.field(static=True)
    output: Output = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __call__(self, x: Array, *, key: PRNGKeyArray | None = None) -> Array:
        del key
        theta = self.net(_as_float(x).reshape(-1))  # pyright: ignore[reportCallIssue]
        return _head(theta.reshape(self.out_shape), self.output, self.normalize)


def _conv_params(key: PRNGKeyArray, size: int, c_in: int, c_out: int):
    """PyTorch's default initialisation, U(±1/√fan_in), in HWIO layout."""
    bound = 1 / math.sqrt(size * size * c_in)
    kw, kb = jax.random.split(key)
    w = jax.random.uniform(kw, (size, size, c_in, c_out), minval=-bound, maxval=bound)
    return w, jax.random.uniform(kb, (c_out,), minval=-bound, maxval=bound)


def _conv(x: Float[Array, "H W C"], w: Array) -> Array:
    """'SAME' convolution of one image, channels last (XLA's fast layout on CPU)."""
    dims = ("NHWC", "HWIO", "NHWC")
    return lax.conv_general_dilated(x[None], w, (1, 1), "SAME", dimension_numbers=dims)[
        0
    ]


def _pool(x: Float[Array, "H W C"], size: int, reduce: Callable) -> Array:
    h, w, c = x.shape
    return reduce(x.reshape(h // size, size, w // size, size, c), axis=(1, 3))


class BerthetConvNet(eqx.Module):
    """The small conv net of Berthet et al. (2020, §5.3) for Warcraft maps.

    Conv `channels` 4×4 → ReLU → MaxPool 4 → Conv `channels` 2×2 → ReLU → AvgPool 2 →
    Conv 1 2×2, all 'SAME': an `(8k, 8k, 3)` image (8 pixels per cell) gives `(k, k)`
    costs, each pooled output covering one cell. Bias and ReLU of the first block are
    applied after the max-pool, which gives the same result (both commute with a max)
    at a 16th of the cost.
    """

    w1: Array
    b1: Array
    w2: Array
    b2: Array
    w3: Array
    b3: Array
    output: Output = eqx.field(static=True)
    normalize: bool = eqx.field(static=True)

    def __init__(
        self,
        channels: int,
        output: Output = "softplus",
        normalize: bool = True,
        *,
        key: PRNGKeyArray,
        c_in: int = 3,
    ):
        k1, k2, k3 = jax.random.split(key, 3)
        self.w1, self.b1 = _conv_params(k1, 4, c_in, channels)
        self.w2, self.b2 = _conv_params(k2, 2, channels, channels)
        self.w3, self.b3 = _conv_params(k3, 2, channels, 1)
        self.output = output
        self.normalize = normalize

    def __call__(
        self, x: Float[Array, "H W C"], *, key: PRNGKeyArray | None = None
    ) -> Float[Array, "k k"]:
        del key
        h = _pool(_conv(_as_float(x), self.w1), 4, jnp.max)
        h = jax.nn.relu(h + self.b1)
        h = jax.nn.relu(_conv(h, self.w2) + self.b2)
        h = _pool(h, 2, jnp.mean)
        return _head(
            _conv(h, self.w3)[..., 0] + self.b3[0], self.output, self.normalize
        )


class LinearModel(ModelOptions):
    """`model: {name: linear}`: an affine map of the flattened input."""

    name: Literal["linear"]
    output: Output = Field("identity", description="identity, softplus or exp")
    normalize: bool = Field(False, description="divide θ by its mean per instance")

    def build(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        key: PRNGKeyArray,
    ) -> eqx.Module:
        net = eqx.nn.Linear(math.prod(in_shape), math.prod(out_shape), key=key)
        return FlatModel(net, out_shape, self.output, self.normalize)


class MLPModel(ModelOptions):
    """`model: {name: mlp, width, depth}`: a ReLU multilayer perceptron."""

    name: Literal["mlp"]
    width: PositiveInt = Field(64, description="hidden units per layer")
    depth: int = Field(2, ge=1, description="hidden layers")
    output: Output = "identity"
    normalize: bool = False

    def build(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        key: PRNGKeyArray,
    ) -> eqx.Module:
        net = eqx.nn.MLP(
            math.prod(in_shape), math.prod(out_shape), self.width, self.depth, key=key
        )
        return FlatModel(net, out_shape, self.output, self.normalize)


class ConvNetModel(ModelOptions):
    """`model: {name: berthet_conv, channels}`: Berthet et al.'s net for maps."""

    name: Literal["berthet_conv"]
    channels: PositiveInt = Field(
        32, description="channels of the two hidden convolutions"
    )
    output: Output = Field("softplus", description="identity, softplus or exp")
    normalize: bool = Field(True, description="divide θ by its mean per map")

    def build(
        self,
        in_shape: tuple[int, ...],
        out_shape: tuple[int, ...],
        *,
        key: PRNGKeyArray,
    ) -> eqx.Module:
        if len(in_shape) != 3 or tuple(n // 8 for n in in_shape[:2]) != out_shape:
            raise ValueError(
                "berthet_conv takes (8k, 8k, channels) images to (k, k) costs; this "
                f"dataset has inputs {in_shape} and outputs {out_shape}"
            )
        return BerthetConvNet(
            self.channels, self.output, self.normalize, key=key, c_in=in_shape[-1]
        )
