#!/usr/bin/env python
"""Why PyEPO's DBB ends worse than ours at degree 6 (docs/which_method.md).

PyEPO trains blackbox differentiation on |⟨c, ŵ⟩ − z*| with z* Gurobi's optimal value;
ours on the regret ⟨c, ŵ⟩ − ⟨c, y*⟩ in one precision. This trains our DBB on PyEPO's
5×5 shortest path at degree 6 (the built-in config, 20 epochs) three ways, with the
library's own epoch (`run_epoch`): the regret, the L1 loss with an exact z*, and the
L1 loss with z* one float32 ulp off (random sign per instance and step), as a z* from
another solver in another precision is. Prints the test normalised regret per seed.

Usage: python bench/dbb_rounding.py [--seeds 0 1 2] [--epochs 20]
"""

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import perturbed_layers as pl
from perturbed_layers import experiments as ex
from perturbed_layers.experiments import _parallel as parallel
from perturbed_layers.experiments._evaluation import test_metrics
from perturbed_layers.experiments._loop import State, run_epoch
from perturbed_layers.experiments._tasks import AbstractLoss

CONFIG = "configs/pyepo_shortest_path.yaml"


class L1Regret(AbstractLoss):
    dbb: pl.BlackboxDifferentiation
    ulp_off: bool

    def __call__(self, theta, batch, *, key):
        w = self.dbb(theta, key=key)
        c = batch.costs.astype(theta.dtype)
        z = jnp.sum(c * batch.y, -1)
        if self.ulp_off:
            s = jax.random.rademacher(jax.random.fold_in(key, 7), z.shape, z.dtype)
            z = z * (1 + s * 2.0**-23)
        return jnp.abs(jnp.sum(c * w, -1) - z)


def run(seed: int, variant: str, epochs: int) -> float:
    overrides = ["loss.name=dbb", "data.deg=6", f"data.seed={seed}",
                 f"training.seed={seed}"]  # fmt: skip
    config = ex.load_config(CONFIG, overrides)
    exp = ex.build(config)
    loss = exp.loss
    if variant != "regret":
        dbb = pl.BlackboxDifferentiation(exp.layer, lambd=10.0)
        loss = L1Regret(dbb, ulp_off=variant == "l1_ulp_off")
    batch = config.training.batch_size
    mesh = parallel.make_mesh(config.mesh, batch_size=batch, num_samples=1,
                              chunk_size=None)  # fmt: skip
    state = parallel.replicate(State(exp.model, exp.opt_state, None), mesh)
    key = parallel.replicate(exp.key, mesh)
    rows = parallel.to_host(exp.dataset.train)
    n = int(rows.x.shape[0])
    steps = n // batch
    for epoch in range(1, epochs + 1):
        order = np.random.default_rng((seed, epoch)).permutation(n)[: steps * batch]
        order = order.astype(np.int32).reshape(steps, batch)
        state, _ = run_epoch(state, loss, exp.optimizer, rows, order, mesh,
                             jax.random.fold_in(key, epoch), 10)  # fmt: skip
    model = parallel.local_copy(state.model)
    return test_metrics(exp, model, 1000)["test_normalized_regret"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=20)
    args = parser.parse_args()
    for variant in ("regret", "l1_exact", "l1_ulp_off"):
        values = [100 * run(s, variant, args.epochs) for s in args.seeds]
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{variant:>11}: {shown} (% normalised regret, seeds {args.seeds})")


if __name__ == "__main__":
    main()
