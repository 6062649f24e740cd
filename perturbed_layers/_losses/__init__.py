"""Losses and surrogate-gradient layers for decision-focused learning, one file per
family: Fenchel–Young, SPO+, blackbox (DBB, NID), I-MLE, regret, structured SVM,
contrastive (NCE, CMAP) and learning to rank over a solution pool."""

from ._aimle import (
    AdaptiveIMLE as AdaptiveIMLE,
    AdaptiveIMLEState as AdaptiveIMLEState,
)
from ._blackbox import (
    BlackboxDifferentiation as BlackboxDifferentiation,
    NegativeIdentity as NegativeIdentity,
)
from ._cave import CaVELoss as CaVELoss, binding_normals as binding_normals
from ._contrastive import CMAPLoss as CMAPLoss, NCELoss as NCELoss
from ._fenchel_young import FenchelYoungLoss as FenchelYoungLoss
from ._imle import IMLE as IMLE
from ._ltr import (
    ListwiseLTRLoss as ListwiseLTRLoss,
    PairwiseLTRLoss as PairwiseLTRLoss,
    PointwiseLTRLoss as PointwiseLTRLoss,
)
from ._perturbation_gradient import (
    PerturbationGradientLoss as PerturbationGradientLoss,
)
from ._pool import SolutionPool as SolutionPool
from ._regret import RegretLoss as RegretLoss
from ._solve_ratio import solve_with_pool as solve_with_pool
from ._spo import SPOPlusLoss as SPOPlusLoss
from ._ssvm import StructuredSVMLoss as StructuredSVMLoss
