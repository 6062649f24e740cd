"""End-to-end runs of the scripts in `examples/`, checked against their key numbers.

Each script's `main(argv)` runs once per module (a fixture) with its default, pinned
seed and writes its figure to a temporary folder; the tests then check the numbers
it returns. Statistical tolerances are a few Monte-Carlo standard errors, worked out
next to each assertion; with the seeds pinned the runs are deterministic, so a
failure means a change in behaviour, not bad luck.
"""

import math

import numpy as np
import pytest
from helpers import run_example

EULER_GAMMA = 0.5772156649015329

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    return run_example("optax_notebook", tmp_path_factory)


@pytest.fixture(scope="module")
def sign_or(tmp_path_factory):
    return run_example("perturbed_or", tmp_path_factory)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory):
    return run_example("quickstart", tmp_path_factory)


# ------------------------------------------------------------ optax notebook


def test_notebook_perturbed_argmax_is_softmax(notebook):
    # M = 10,000: each entry's standard error is at most sqrt(0.25 / 10^4) = 0.005,
    # so 0.02 is four of them.
    result = notebook["softmax"]
    assert result["max_abs_diff"] < 0.02
    np.testing.assert_allclose(result["perturbed"].sum(axis=-1), 1.0, atol=1e-5)
    # softmax(θ/σ) itself, against the TensorFlow README's printed values.
    expected = [
        [0.00549, 0.81522, 0.01222, 0.16459, 0.00247],
        [0.00668, 0.16386, 0.01486, 0.81160, 0.00300],
    ]
    np.testing.assert_allclose(result["softmax"], expected, atol=1e-4)


def test_notebook_argmax_descent(notebook):
    result = notebook["argmax_descent"]
    # Exact (noise-free) loss at the README's θ: ‖softmax(θ/0.5) − (2..6)/20‖².
    assert result["initial_loss"] == pytest.approx(0.5825, abs=1e-3)
    # 200 sgd steps bring it to the noise floor of M = 100 gradients (≈ 1e-3), far
    # below where it started; the Monte-Carlo losses seen on the way fall as well.
    assert result["final_loss"] < 0.02
    assert np.mean(result["losses"][-20:]) < 0.1 * np.mean(result["losses"][:20])
    # At the end, softmax(θ/σ) — which y_ε(θ) equals — is close to the target.
    theta = result["theta"]
    soft = np.exp(theta / 0.5) / np.sum(np.exp(theta / 0.5))
    np.testing.assert_allclose(soft, np.arange(2, 7) / 20, atol=0.06)


def test_notebook_ranking_descent(notebook):
    result = notebook["ranking_descent"]
    # r_ε at the notebook's θ is close to its ranks (4, 5, 1, 2, 3, 0): the loss
    # starts near Σ (r − i)² = 16 + 16 + 1 + 1 + 1 + 25 = 60.
    assert 55 < result["initial_loss"] < 62
    # 20 steps: most items move to their target ranks; like the notebook's run it
    # stalls in a local minimum (there ≈ 13.7, here ≈ 12), far below the start.
    assert result["final_loss"] < 0.5 * result["initial_loss"]
    assert result["losses"][-1] < result["losses"][0]


@pytest.mark.parametrize("api", ["make_perturbed_fun", "Perturbed"])
def test_notebook_pytree_step_lowers_loss(notebook, api):
    row = notebook["pytree"][api]
    # Same key before and after the step (common random numbers), as the notebook.
    assert row["loss_after"] < row["loss_before"]
    # And exactly, through the per-leaf softmax: no Monte-Carlo noise at all.
    assert row["exact_after"] < row["exact_before"]
    # The estimate of the starting loss agrees with its closed form; the loss is a
    # sum of nine squared errors of averages of M = 1000 one-hots: a few 0.01 off.
    assert row["loss_before"] == pytest.approx(row["exact_before"], abs=0.05)


# -------------------------------------------------------------- perturbed OR


def test_or_closed_form_and_readme(sign_or):
    result = sign_or["readme"]
    # 1 − 2 exp(−Σ exp(θ_i/σ)) at θ = [[−5, 0.2], [−5, 0.1]], σ = 0.1.
    expected = [1 - 2 * math.exp(-math.exp(2.0)), 1 - 2 * math.exp(-math.exp(1.0))]
    np.testing.assert_allclose(result["exact"], expected, rtol=1e-5)
    np.testing.assert_allclose(result["exact"], [0.99876, 0.86802], atol=1e-5)
    # The READMEs' 0.854 (M = 1000) is within one standard error of the closed
    # form: sqrt(1 − 0.868²)/sqrt(1000) ≈ 0.016.
    standard_error = math.sqrt(1 - expected[1] ** 2) / math.sqrt(1000)
    assert abs(0.854 - expected[1]) < standard_error


def test_or_monte_carlo_values(sign_or):
    result = sign_or["readme"]
    # Standard errors of the second entry: 0.016 (M = 1000), 0.0016 (M = 10^5).
    np.testing.assert_allclose(result["value_1000"], result["exact"], atol=0.06)
    np.testing.assert_allclose(result["value_100000"], result["exact"], atol=0.006)
    # The values that the READMEs print: about [1.0, 0.85].
    np.testing.assert_allclose(result["value_1000"], [1.0, 0.85], atol=0.06)


def test_or_monte_carlo_gradient(sign_or):
    result = sign_or["readme"]
    grad, exact = result["grad_100000"], result["exact_grad"]
    # ∂/∂θ of the second row: (0, 3.587). The score-function estimate has a
    # standard deviation of about 1.35 / (σ √M) ≈ 0.043 per entry at M = 10^5.
    assert exact[1, 1] == pytest.approx(3.587, abs=1e-3)
    np.testing.assert_allclose(grad[1], exact[1], atol=0.2)
    # First row: almost every sample is OR-true, so the gradient is tiny.
    np.testing.assert_allclose(grad[0], exact[0], atol=0.1)


@pytest.mark.parametrize("sigma", [0.1, 0.2, 0.5])
def test_or_sweep(sign_or, sigma):
    row = sign_or["sweep"]["sigmas"][sigma]
    # M = 1000 per point, 201 points: each value has a standard error of at most
    # 1/√1000 ≈ 0.032, and the largest of 201 errors is about three of them.
    assert row["value_error"] < 0.15
    # The gradient is noisier where it peaks; its largest error stays well below the
    # peak, which is 2/(eσ) at x = 0: the smoothed OR really has a slope there.
    assert row["grad_peak"] == pytest.approx(2 / (math.e * sigma), rel=0.02)
    assert row["grad_error"] < 0.3 * row["grad_peak"]
    x, grad = sign_or["sweep"]["x"], row["grad"]
    assert grad[np.argmin(np.abs(x))] > 0.7 * row["grad_peak"]


# --------------------------------------------------------------- quickstart


def test_quickstart_learns(quickstart):
    accuracy = quickstart["test_accuracy"]
    # Five classes, the commonest about a quarter of the data; the run reaches
    # about 0.83 in ten epochs.
    assert quickstart["chance"] < 0.3
    assert accuracy[-1] > 0.6
    assert accuracy[-1] > accuracy[0] + 0.3
    train, test = quickstart["train_loss"], quickstart["test_loss"]
    assert train[-1] < train[0]
    assert test[-1] < test[0]
    # The exact Gumbel Fenchel–Young loss (σ = 1) is never below σγ.
    assert min(test) > EULER_GAMMA
