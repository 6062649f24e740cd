"""Problem data of a layer: each datum is an array field (shared by the batch) or an
entry of `args` (per instance), never both, and required data are never missing."""

from collections.abc import Sequence
from typing import Any

import jax.numpy as jnp
from jax import lax


def as_optional_array(value: Any) -> Any:
    """Converter for data fields: arrays (traced, not static), or None for 'in args'."""
    return None if value is None else jnp.asarray(value)


def finite_or_zero(theta: Any) -> Any:
    """θ, or zeros if it holds a NaN or an infinity: such an instance's output is made
    NaN by the engine (the layer's contract), so its solver gets harmless input
    rather than raise on it."""
    return jnp.where(jnp.all(jnp.isfinite(theta)), theta, 0)


def problem_data(
    layer: Any, args: Any, names: Sequence[str], required: Sequence[str] = ()
) -> dict[str, Any]:
    """`{name: array or None}` for one instance, from `layer.<name>` or `args[name]`.

    Trace-time errors name the datum: given both ways (ambiguous), required but given
    neither way (missing), or an unknown key in `args`. Float data pass through
    `lax.stop_gradient`: no derivative flows into problem data.
    """
    cls = type(layer).__name__
    if args is None:
        args = {}
    if not isinstance(args, dict):
        raise TypeError(
            f"{cls} takes args as a dict with keys among {tuple(names)}, got "
            f"{type(args).__name__}"
        )
    unknown = sorted(set(args) - set(names))
    if unknown:
        raise TypeError(
            f"{cls} got unknown args {unknown}; its problem data are {tuple(names)}"
        )
    data = {}
    for name in names:
        field, given = getattr(layer, name), args.get(name)
        if field is not None and given is not None:
            raise ValueError(
                f"{cls}: {name!r} is given twice, as a field of the layer (shared by "
                f"the batch) and in args (per instance); pass it one way"
            )
        value = field if given is None else given
        if value is None and name in required:
            raise ValueError(
                f"{cls} needs {name!r}: pass it to the constructor ({name}=..., shared "
                f"by the batch) or per instance as args={{{name!r}: ...}} with the "
                "batch axes of theta in front"
            )
        data[name] = None if value is None else lax.stop_gradient(jnp.asarray(value))
    return data
