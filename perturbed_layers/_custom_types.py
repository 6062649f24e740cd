"""Type aliases shared across the package."""

from collections.abc import Sequence
from typing import Any, Literal, TypeAlias

from jaxtyping import Array, PRNGKeyArray, PyTree

Perturbation: TypeAlias = Literal["additive", "multiplicative"]
Objective: TypeAlias = Literal["max", "min"] | None
Shape: TypeAlias = Sequence[int]
Key: TypeAlias = PRNGKeyArray
Output: TypeAlias = PyTree[Array]
DType: TypeAlias = Any

PERTURBATIONS: tuple[str, ...] = ("additive", "multiplicative")
OBJECTIVES: tuple[str | None, ...] = ("max", "min", None)
