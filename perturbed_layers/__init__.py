"""perturbed_layers: differentiable perturbed optimizers and Fenchel–Young losses.

Conventions: `theta` are scores to maximise, `costs` are costs to minimise; leading
axes are a batch of independent instances.
"""

from . import solvers as solvers
from ._assignment_layers import PerturbedAssignment as PerturbedAssignment
from ._estimator import Estimator as Estimator, Thresholds as Thresholds
from ._host import HostSolver as HostSolver, host_solver as host_solver
from ._host_examples import (
    scipy_grid_shortest_path as scipy_grid_shortest_path,
    scipy_linear_sum_assignment as scipy_linear_sum_assignment,
    scipy_milp as scipy_milp,
)
from ._knapsack_layers import PerturbedKnapsack as PerturbedKnapsack
from ._layers import (
    PerturbedArgmax as PerturbedArgmax,
    PerturbedRanking as PerturbedRanking,
    PerturbedTopK as PerturbedTopK,
)
from ._linear_program_layers import PerturbedLinearProgram as PerturbedLinearProgram
from ._losses import (
    IMLE as IMLE,
    AdaptiveIMLE as AdaptiveIMLE,
    AdaptiveIMLEState as AdaptiveIMLEState,
    BlackboxDifferentiation as BlackboxDifferentiation,
    CaVELoss as CaVELoss,
    CMAPLoss as CMAPLoss,
    FenchelYoungLoss as FenchelYoungLoss,
    ListwiseLTRLoss as ListwiseLTRLoss,
    NCELoss as NCELoss,
    NegativeIdentity as NegativeIdentity,
    PairwiseLTRLoss as PairwiseLTRLoss,
    PerturbationGradientLoss as PerturbationGradientLoss,
    PointwiseLTRLoss as PointwiseLTRLoss,
    RegretLoss as RegretLoss,
    SolutionPool as SolutionPool,
    SPOPlusLoss as SPOPlusLoss,
    StructuredSVMLoss as StructuredSVMLoss,
    binding_normals as binding_normals,
    solve_with_pool as solve_with_pool,
)
from ._make_perturbed_fun import make_perturbed_fun as make_perturbed_fun
from ._noise import (
    AbstractNoise as AbstractNoise,
    Gumbel as Gumbel,
    Normal as Normal,
    SumOfGamma as SumOfGamma,
)
from ._perturbed import (
    AbstractPerturbed as AbstractPerturbed,
    Perturbed as Perturbed,
    perturbed as perturbed,
)
from ._shortest_path_layers import (
    PerturbedGraphShortestPath as PerturbedGraphShortestPath,
    PerturbedShortestPath as PerturbedShortestPath,
)
from ._spanning_tree_layers import PerturbedSpanningTree as PerturbedSpanningTree

__version__ = "0.1.0"
