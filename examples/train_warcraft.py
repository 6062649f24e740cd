"""Shortest paths on Warcraft-style maps, trained with your own loop (no config, no CLI).

A small conv net (Berthet et al., 2020) reads a 96 x 96 terrain image and predicts a
cost for each of its 12 x 12 cells; the perturbed shortest-path layer (8-connectivity,
multiplicative noise, which keeps costs positive) and its Fenchel-Young loss train it
from the optimal paths alone, never from the true costs. The maps come from the
package's generator (`perturbed_layers.experiments`, which needs the `experiments`
extra); with the real dataset, load its `.npy` files instead.

Run it with `python examples/train_warcraft.py` (a few minutes on a laptop CPU); it
prints, per epoch, the share of test maps whose predicted path has optimal true cost.
The same from a config: `perturbed-layers train configs/warcraft_12x12.yaml`.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import perturbed_layers as pl
from perturbed_layers.experiments import generate_warcraft_maps


class ConvNet(eqx.Module):
    """Conv 32 4x4 -> ReLU -> MaxPool 4 -> Conv 32 2x2 -> ReLU -> AvgPool 2 -> Conv 1 2x2."""

    layers: tuple

    def __init__(self, key):
        k1, k2, k3 = jax.random.split(key, 3)
        self.layers = (
            eqx.nn.Conv2d(3, 32, 4, padding="SAME", key=k1),
            eqx.nn.MaxPool2d(4, 4),
            eqx.nn.Conv2d(32, 32, 2, padding="SAME", key=k2),
            eqx.nn.AvgPool2d(2, 2),
            eqx.nn.Conv2d(32, 1, 2, padding="SAME", key=k3),
        )

    def __call__(self, image):  # (96, 96, 3) uint8 -> (12, 12) positive costs
        # Centred input (in [-2, 2]): trains much faster than [0, 1].
        h = jnp.moveaxis(image.astype(jnp.float32) / 63.75 - 2, -1, 0)
        conv1, pool1, conv2, pool2, conv3 = self.layers
        h = pool2(jax.nn.relu(conv2(pool1(jax.nn.relu(conv1(h))))))
        costs = jax.nn.softplus(conv3(h)[0]) + 1e-6
        # Paths depend on cost ratios only, and the multiplicative FY loss shrinks
        # with the scale of the costs: fix the scale (mean cost 1).
        return costs / jnp.mean(costs)


def main(epochs: int = 2, num_train: int = 4000, num_test: int = 500, seed: int = 0):
    maps, _, paths = (
        jnp.asarray(a) for a in generate_warcraft_maps(num_train, 12, seed)
    )
    test_maps, test_costs, test_paths = generate_warcraft_maps(
        num_test, 12, seed, stream=1
    )
    layer = pl.PerturbedShortestPath(
        num_samples=3, sigma=0.1, noise=pl.Normal(), perturbation="multiplicative"
    )
    loss = pl.FenchelYoungLoss(layer)
    key_model, key_train = jax.random.split(jax.random.key(seed))
    model = ConvNet(key_model)
    batch = 32
    num_batches = num_train // batch
    schedule = optax.cosine_decay_schedule(5e-3, epochs * num_batches)
    optimizer = optax.adam(schedule)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, opt_state, maps, paths, key):
        def mean_loss(model):
            return jnp.mean(loss(jax.vmap(model)(maps), paths, key=key))

        value, grads = eqx.filter_value_and_grad(mean_loss)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, value

    @eqx.filter_jit
    def predict_paths(model, maps):
        return pl.solvers.grid_shortest_path(jax.vmap(model)(maps))

    def cost_optimal_share(model):
        found = np.concatenate(
            [
                predict_paths(model, test_maps[i : i + 100])
                for i in range(0, num_test, 100)
            ]
        )
        cost = np.sum(found * test_costs, axis=(1, 2))
        optimum = np.sum(test_paths * test_costs, axis=(1, 2))
        return float(np.mean(cost <= optimum * (1 + 1e-5)))

    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(num_train)
        keys = jax.random.split(jax.random.fold_in(key_train, epoch), num_batches)
        for i in range(num_batches):
            index = order[i * batch : (i + 1) * batch]
            model, opt_state, value = step(
                model, opt_state, maps[index], paths[index], keys[i]
            )
        share = cost_optimal_share(model)
        print(
            f"epoch {epoch}  loss {float(value):.4f}  cost-optimal test paths {share:.3f}"
        )
    return share


if __name__ == "__main__":
    main()
