"""The Monte-Carlo estimator behind every perturbed layer and loss, in one place.

Notation (Berthet et al., 2020): θ has shape (B, *event), a batch of B independent
instances; Z ~ μ ∝ exp(−ν) is drawn per instance; θ_m = θ + σZ_m (additive) or
θ ⊙ exp(σZ_m − σ²/2) (multiplicative, Z standard normal); y_m = solve(θ_m, args).

- `_options.py`: `pl.Estimator`, the variance-reduction choices and size thresholds.
- `_sampling.py`: drawing, perturbing and solving the samples; sums over them.
- `_mean.py`: y_ε(θ) = E[y*(θ_m)], whose custom JVP is the Jacobian estimator of
  Prop. 3.1, J = E[y*(θ + σZ) ∇ν(Z)ᵀ] / σ, with per-instance variance reduction.
- `_objective.py`: F_ε(θ) = E[⟨y*(θ_m), θ_m⟩], the perturbed optimal value, whose
  derivative is E[y*(θ_m) ⊙ ∂θ_m/∂θ] from the same samples.

Both derivatives are custom JVPs linear in the tangent, which JAX transposes for
reverse mode. Second derivatives are refused with a clear error, never silently zero.
"""

from ._mean import perturbed_mean as perturbed_mean
from ._objective import perturbed_objective as perturbed_objective
from ._options import (
    THRESHOLDS as THRESHOLDS,
    Estimator as Estimator,
    Plan as Plan,
    Thresholds as Thresholds,
)
