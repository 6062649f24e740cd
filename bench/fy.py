"""Section `fy` of bench/run.py: the Fenchel–Young loss step against the layer.

`value_and_grad` of `pl.FenchelYoungLoss` against the layer's forward + gradient
(`core.compiled_vg("ours", ...)`, reused if another section compiled it), with the
noise draw alone for scale; B = 32, n = 10, M = 1000, interleaved, paired ratios.
"""

from typing import Any

import _common as C
import core
import jax
import jax.numpy as jnp
import numpy as np

import perturbed_layers as pl

B, N, M = 32, 10, 1000


def run(repeats: int) -> dict[str, Any]:
    theta, v = core.inputs(B, N)
    labels = jax.random.randint(jax.random.key(core.LABEL_SEED), (B,), 0, N)
    y = jax.nn.one_hot(labels, N, dtype=jnp.float32)
    key = jax.random.key(core.RUN_KEY_SEED)
    layer = pl.PerturbedArgmax(num_samples=M, sigma=core.SIGMA, noise=pl.Gumbel())
    loss = pl.FenchelYoungLoss(layer)
    cached = core.compiled_if_any("ours", B, N, M)
    if cached is not None:  # the same function, compiled by another section
        layer_c, layer_cs = cached.fn, cached.compile_s
    else:
        layer_c, layer_cs, _ = C.compile_aot(
            core.vg_fn(lambda t, k: layer(t, key=k)), theta, v, key
        )
    fy_c, fy_cs, _ = C.compile_aot(
        jax.value_and_grad(lambda t, yy, k: loss(t, yy, key=k).sum()), theta, y, key
    )
    floor_c, floor_cs, _ = C.compile_aot(core.floor_fn(B, N, M), key)
    fns = {
        "layer_value_and_grad": lambda: layer_c(theta, v, key),
        "fy_value_and_grad": lambda: fy_c(theta, y, key),
        "floor_gumbel": lambda: floor_c(key),
    }
    timing = C.time_interleaved(fns, repeats=repeats + 4, min_sample_s=0.25)
    per = timing["per_contender"]
    _, g = fy_c(theta, y, key)
    t = np.asarray(theta, np.float64) / core.SIGMA
    s = np.exp(t - t.max(-1, keepdims=True))
    s /= s.sum(-1, keepdims=True)
    return {
        "setup": {"B": B, "n": N, "M": M, "sigma": core.SIGMA, "noise": "Gumbel"},
        "repeats": timing["repeats"],
        "compile_s": {"layer": layer_cs, "fy": fy_cs, "floor": floor_cs},
        "time_s": per,
        "ratio_fy_over_layer": C.paired_ratio(
            per["fy_value_and_grad"]["samples"], per["layer_value_and_grad"]["samples"]
        ),
        "cpu_ratio_fy_over_layer": C.paired_ratio(
            per["fy_value_and_grad"]["cpu_s"]["samples"],
            per["layer_value_and_grad"]["cpu_s"]["samples"],
        ),
        "ratio_floor_over_layer": C.paired_ratio(
            per["floor_gumbel"]["samples"], per["layer_value_and_grad"]["samples"]
        ),
        "ratio_fy_over_floor": C.paired_ratio(
            per["fy_value_and_grad"]["samples"], per["floor_gumbel"]["samples"]
        ),
        "fy_grad_rel_err_vs_softmax_minus_y": core.rel_err(g, s - np.asarray(y)),
    }
