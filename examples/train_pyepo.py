"""PyEPO's shortest-path benchmark, trained with your own loop (no config, no CLI).

Reproduces the setting of PyEPO's notebook "03 Training and Testing": 2000 points from
PyEPO's generator (5 features, 5 x 5 grid, degree 4, noise half-width 0.5, seed 42),
1000 for training and 1000 for testing (the split of scikit-learn's
`train_test_split(test_size=1000, random_state=42)`), a linear model 5 -> 40 arc costs,
Adam 1e-2, batch 32, 20 epochs, and the perturbed Fenchel-Young loss with 3 samples and
sigma = 1. PyEPO reports a normalised test regret of 7.29-7.38%.

Run it with `python examples/train_pyepo.py` (about half a minute on a laptop CPU).
The same run from a config: `perturbed-layers train configs/pyepo_shortest_path.yaml`.
"""

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import perturbed_layers as pl


def generate(num_data: int, deg: int = 4, noise_width: float = 0.5, seed: int = 42):
    """PyEPO's `genData` for a 5 x 5 grid and 5 features: same draws, same formula."""
    rnd = np.random.RandomState(seed)
    b = rnd.binomial(1, 0.5, (40, 5))  # first B, then x, then the noise
    x = rnd.normal(0, 1, (num_data, 5))
    c = ((x @ b.T / np.sqrt(5) + 3) ** deg + 1) / 3.5**deg
    c *= rnd.uniform(1 - noise_width, 1 + noise_width, (num_data, 40))
    return x.astype(np.float32), c.astype(np.float32)


def main(epochs: int = 20, num_data: int = 2000, test_size: int = 1000, seed: int = 0):
    x, c = generate(num_data)
    permutation = np.random.RandomState(42).permutation(num_data)  # sklearn's split
    test, train = permutation[:test_size], permutation[test_size:]
    solver = pl.solvers.pyepo_shortest_path  # exact, on the device, batched
    w = solver(jnp.asarray(c))  # the optimal paths (arc indicators) for the true costs
    x_train, w_train = jnp.asarray(x[train]), w[train]
    x_test, c_test, w_test = jnp.asarray(x[test]), jnp.asarray(c[test]), w[test]

    # The layer minimises <y, costs>; the loss's gradient in the costs is y - y_eps.
    layer = pl.Perturbed(
        solver,
        num_samples=3,
        sigma=1.0,
        noise=pl.Normal(),
        objective="min",
        event_ndim=1,
    )
    loss = pl.FenchelYoungLoss(layer)
    key_model, key_train = jax.random.split(jax.random.key(seed))
    model = eqx.nn.Linear(5, 40, key=key_model)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    @eqx.filter_jit
    def step(model, opt_state, x, w, key):
        def mean_loss(model):
            return jnp.mean(loss(jax.vmap(model)(x), w, key=key))

        value, grads = eqx.filter_value_and_grad(mean_loss)(model)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return eqx.apply_updates(model, updates), opt_state, value

    @eqx.filter_jit
    def normalized_regret(model, x, c, w):
        w_hat = solver(jax.vmap(model)(x))  # the exact path for the predicted costs
        optimum = jnp.sum(c * w, axis=-1)
        return jnp.sum(jnp.sum(c * w_hat, axis=-1) - optimum) / jnp.sum(
            jnp.abs(optimum)
        )

    batch = 32
    num_batches = len(train) // batch  # drop the last partial batch: one shape
    rng = np.random.default_rng(seed)
    for epoch in range(1, epochs + 1):
        order = rng.permutation(len(train))
        keys = jax.random.split(jax.random.fold_in(key_train, epoch), num_batches)
        start = time.perf_counter()
        for i in range(num_batches):
            index = order[i * batch : (i + 1) * batch]
            model, opt_state, value = step(
                model, opt_state, x_train[index], w_train[index], keys[i]
            )
        value.block_until_ready()
        seconds = time.perf_counter() - start
        regret = float(normalized_regret(model, x_test, c_test, w_test))
        print(
            f"epoch {epoch:2d}  loss {float(value):.4f}  test normalised regret "
            f"{regret:.4f}  ({seconds:.2f} s)"
        )
    return regret


if __name__ == "__main__":
    main()
