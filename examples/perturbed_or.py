"""The perturbed OR of the TensorFlow/PyTorch READMEs, with `pl.perturbed`.

**The function.** The READMEs' OR over the signs of its inputs returns +1 if some
input is non-negative and −1 otherwise. They write it as
`any(bool((sign(x) + 1) / 2)) * 2 − 1`, which counts x = 0 as true (sign 0 gives 0.5,
which casts to true), so here it is `where(any(x >= 0), 1, −1)`. Its value is ±1 and
its gradient is zero wherever it exists.

**Its perturbed version, in closed form.** Under Gumbel noise,
P(θ_i + σZ_i < 0) = exp(−exp(θ_i/σ)), so for independent coordinates

    OR_σ(θ) = E[OR(θ + σZ)] = 1 − 2 exp(−Σ_i exp(θ_i/σ)),
    ∂OR_σ/∂θ_i = (2/σ) exp(θ_i/σ) exp(−Σ_j exp(θ_j/σ)).

At θ = [[−5, 0.2], [−5, 0.1]] and σ = 0.1 this is [0.99876, 0.86802]; the READMEs print
[1.0000, 0.8540] from one run with M = 1000 samples, whose standard error on the
second entry is about 0.016. Both rows are OR-true (value 1) unperturbed; the perturbed
OR tells them apart by how far the positive entry is from the threshold.

**What this script does.** It prints the hard OR, the perturbed OR (M = 1000, as in
the READMEs, and M = 100,000) and its gradient next to the closed form at that θ, and
plots the value and the gradient of the perturbed OR of θ = (−5, x) for x ∈ [−1, 1]
and three values of σ, Monte-Carlo estimates against the closed form.

Run it with `python examples/perturbed_or.py [--out DIR] [--seed S]` (after
`pip install -e .`); it writes `perturbed_or.png` into `DIR` (default
`runs/examples`). `main` returns the key numbers as a dict.
"""

import argparse
import pathlib
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray
from matplotlib.figure import Figure

import perturbed_layers as pl

THETA = jnp.array([[-5.0, 0.2], [-5.0, 0.1]])
SIGMA = 0.1
README_VALUE = (1.0, 0.854)  # the READMEs' printed M = 1000 estimate


def _fmt(x: Any, precision: int = 4) -> str:
    return np.array2string(np.asarray(x), precision=precision, suppress_small=True)


def hard_or(x: Float[Array, " n"]) -> Float[Array, ""]:
    """+1 if some entry of `x` is non-negative, −1 otherwise (one instance)."""
    return jnp.where(jnp.any(x >= 0), 1.0, -1.0).astype(x.dtype)


def exact_or(theta: Float[Array, "*batch n"], sigma: float) -> Float[Array, "*batch"]:
    """The Gumbel-perturbed OR in closed form, 1 − 2 exp(−Σ_i exp(θ_i/σ))."""
    return 1 - 2 * jnp.exp(-jnp.sum(jnp.exp(theta / sigma), axis=-1))


def exact_or_grad(
    theta: Float[Array, "*batch n"], sigma: float
) -> Float[Array, "*batch n"]:
    """∂/∂θ of `exact_or`, per instance."""
    total = jnp.sum(jnp.exp(theta / sigma), axis=-1, keepdims=True)
    return 2 / sigma * jnp.exp(theta / sigma) * jnp.exp(-total)


@eqx.filter_jit
def value_and_grad_per_instance(
    layer: pl.Perturbed, theta: Float[Array, "B n"], key: PRNGKeyArray
) -> tuple[Float[Array, " B"], Float[Array, "B n"]]:
    """The perturbed OR of each row and its gradient with respect to that row.

    Each row has its own noise and its own gradient estimate, so the VJP with a
    vector of ones gives every row's gradient in one backward pass.
    """
    value, vjp = jax.vjp(lambda t: layer(t, key=key), theta)
    (grad,) = vjp(jnp.ones_like(value))
    return value, grad


def at_readme_theta(key: PRNGKeyArray) -> dict[str, Any]:
    """The perturbed OR and its gradient at the READMEs' θ, next to the closed form."""
    exact = np.asarray(exact_or(THETA, SIGMA))
    exact_grad = np.asarray(exact_or_grad(THETA, SIGMA))

    def show(label: str, value: Any, precision: int = 4) -> None:
        text = _fmt(value, precision).replace("\n", "")
        print(f"  {label:<32} = {text}")

    print(f"θ = {_fmt(THETA).replace(chr(10), '')}, σ = {SIGMA}, Gumbel noise")
    show("hard OR(θ)", jax.vmap(hard_or)(THETA))
    out: dict[str, Any] = dict(exact=exact, exact_grad=exact_grad)
    for m, k in zip((1000, 100_000), jax.random.split(key), strict=True):
        # `perturbed(fn, ...)` as the READMEs call it; each row is one instance.
        layer = pl.perturbed(hard_or, num_samples=m, sigma=SIGMA, noise=pl.Gumbel())
        value, grad = value_and_grad_per_instance(layer, THETA, k)
        out[f"value_{m}"] = np.asarray(value)
        out[f"grad_{m}"] = np.asarray(grad)
    for m in (1000, 100_000):
        show(f"perturbed OR, M = {m}", out[f"value_{m}"])
    show("closed form", exact, 5)
    show("READMEs (PyTorch/TF), M = 1000", README_VALUE)
    for m in (1000, 100_000):
        show(f"gradient, M = {m}", out[f"grad_{m}"], 3)
    show("gradient, closed form", exact_grad, 3)
    print()
    return out


def sweep(
    key: PRNGKeyArray,
    *,
    sigmas: tuple[float, ...] = (0.1, 0.2, 0.5),
    num_samples: int = 1000,
    num_points: int = 201,
) -> dict[str, Any]:
    """Value and gradient of the perturbed OR of θ = (−5, x) for x ∈ [−1, 1].

    **Returns:** a dict with `x`, and per σ the Monte-Carlo `value`, `grad` (with
    respect to x) and their closed forms, and the largest errors against them.
    """
    x = jnp.linspace(-1.0, 1.0, num_points)
    theta = jnp.stack([jnp.full_like(x, -5.0), x], axis=-1)
    out: dict[str, Any] = dict(x=np.asarray(x), sigmas={})
    print(f"Sweep θ = (−5, x), x ∈ [−1, 1], {num_points} points, M = {num_samples}")
    for sigma, k in zip(sigmas, jax.random.split(key, len(sigmas)), strict=True):
        layer = pl.perturbed(
            hard_or, num_samples=num_samples, sigma=sigma, noise=pl.Gumbel()
        )
        value, grad = value_and_grad_per_instance(layer, theta, k)
        row = dict(
            value=np.asarray(value),
            grad=np.asarray(grad[:, 1]),
            exact=np.asarray(exact_or(theta, sigma)),
            exact_grad=np.asarray(exact_or_grad(theta, sigma)[:, 1]),
        )
        row["value_error"] = float(np.max(np.abs(row["value"] - row["exact"])))
        row["grad_error"] = float(np.max(np.abs(row["grad"] - row["exact_grad"])))
        row["grad_peak"] = float(np.max(row["exact_grad"]))
        out["sigmas"][sigma] = row
        print(
            f"  σ = {sigma}: max |value − exact| = {row['value_error']:.3f}, "
            f"max |∂/∂x − exact| = {row['grad_error']:.3f} "
            f"(peak of ∂/∂x = {row['grad_peak']:.2f})"
        )
    print()
    return out


def _plot(result: dict[str, Any], num_samples: int, path: pathlib.Path) -> None:
    x = result["x"]
    fig = Figure(figsize=(11, 4), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.step(x, np.where(x >= 0, 1.0, -1.0), where="post", color="k", label="hard OR")
    for (sigma, row), colour in zip(
        result["sigmas"].items(), ("C0", "C1", "C2"), strict=False
    ):
        ax1.plot(x, row["value"], color=colour, lw=1.2, label=f"perturbed, σ = {sigma}")
        ax1.plot(x, row["exact"], color=colour, lw=1, ls="--", alpha=0.8)
        ax2.plot(x, row["grad"], color=colour, lw=1.2, label=f"σ = {sigma}")
        ax2.plot(x, row["exact_grad"], color=colour, lw=1, ls="--", alpha=0.8)
    readme_x = np.asarray(THETA[:, 1])
    ax1.plot(
        readme_x,
        np.asarray(exact_or(THETA, SIGMA)),
        "o",
        color="C0",
        markeredgecolor="k",
        label="the READMEs' two θ (σ = 0.1)",
    )
    for ax in (ax1, ax2):
        ax.plot([], [], color="grey", ls="--", label="closed form")
    ax1.set_title(f"OR(−5, x), perturbed with Gumbel noise (M = {num_samples})")
    ax1.set_xlabel("x")
    ax1.legend(loc="lower right")
    ax2.set_title("∂/∂x of the perturbed OR (hard OR: 0 almost everywhere)")
    ax2.set_xlabel("x")
    ax2.legend(loc="upper left")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the perturbed OR at the READMEs' θ, sweep it, save the figure."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=pathlib.Path,
        default=pathlib.Path("runs/examples"),
        help="folder for the figure (created if missing)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-samples", type=int, default=1000)
    args = parser.parse_args(argv)

    key_point, key_sweep = jax.random.split(jax.random.key(args.seed))
    results = dict(
        readme=at_readme_theta(key_point),
        sweep=sweep(key_sweep, num_samples=args.num_samples),
    )
    args.out.mkdir(parents=True, exist_ok=True)
    figure = args.out / "perturbed_or.png"
    _plot(results["sweep"], args.num_samples, figure)
    print(f"figure: {figure}")
    results["figure"] = str(figure)
    return results


if __name__ == "__main__":
    main()
