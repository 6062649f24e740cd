"""The optax optimisers a config can name (`optimizer:`), with their options."""

from typing import Literal

import optax
from pydantic import Field

from ._options import FiniteFloat, OptimizerOptions, PositiveFloat

Schedule = Literal["constant", "cosine"]


def _learning_rate(
    options: "AdamOptions | AdamWOptions | SGDOptions", total_steps: int
):
    if options.schedule == "cosine":
        return optax.cosine_decay_schedule(options.learning_rate, max(total_steps, 1))
    return options.learning_rate


class AdamOptions(OptimizerOptions):
    """`optimizer: {name: adam, learning_rate, b1, b2, eps, schedule}` (`optax.adam`).

    `schedule: cosine` decays the learning rate to 0 over the run (cosine); the
    default `constant` keeps it.
    """

    name: Literal["adam"]
    learning_rate: PositiveFloat = Field(description="the (initial) step size")
    b1: FiniteFloat = Field(0.9, ge=0, lt=1)
    b2: FiniteFloat = Field(0.999, ge=0, lt=1)
    eps: PositiveFloat = 1e-8
    schedule: Schedule = Field(
        "constant", description="constant, or cosine decay to 0 over the run"
    )

    def build(self, total_steps: int) -> optax.GradientTransformation:
        lr = _learning_rate(self, total_steps)
        return optax.adam(lr, self.b1, self.b2, self.eps)


class AdamWOptions(OptimizerOptions):
    """`optimizer: {name: adamw, learning_rate, weight_decay, schedule}` (`optax.adamw`)."""

    name: Literal["adamw"]
    learning_rate: PositiveFloat
    weight_decay: FiniteFloat = Field(1e-4, ge=0)
    schedule: Schedule = "constant"

    def build(self, total_steps: int) -> optax.GradientTransformation:
        lr = _learning_rate(self, total_steps)
        return optax.adamw(lr, weight_decay=self.weight_decay)


class SGDOptions(OptimizerOptions):
    """`optimizer: {name: sgd, learning_rate, momentum, schedule}` (`optax.sgd`)."""

    name: Literal["sgd"]
    learning_rate: PositiveFloat
    momentum: FiniteFloat = Field(0.0, ge=0, lt=1)
    schedule: Schedule = "constant"

    def build(self, total_steps: int) -> optax.GradientTransformation:
        return optax.sgd(_learning_rate(self, total_steps), self.momentum or None)
