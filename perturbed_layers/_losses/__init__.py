"""Losses and surrogate-gradient layers for decision-focused learning, one file per
family: Fenchel–Young, SPO+, blackbox (DBB, NID), I-MLE, regret, structured SVM."""

from ._blackbox import (
    BlackboxDifferentiation as BlackboxDifferentiation,
    NegativeIdentity as NegativeIdentity,
)
from ._fenchel_young import FenchelYoungLoss as FenchelYoungLoss
from ._imle import IMLE as IMLE
from ._regret import RegretLoss as RegretLoss
from ._spo import SPOPlusLoss as SPOPlusLoss
from ._ssvm import StructuredSVMLoss as StructuredSVMLoss
