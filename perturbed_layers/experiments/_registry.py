"""Every name a config can use, in one place: one registry per config group.

A registry maps a name (what a config writes, `loss: {name: spo_plus}`) to the class
of that entry's options, whose `build` constructs the object (`_options.py`). The
config schema is generated from these dicts (`_config.py`), so one line here makes a
new entry usable from YAML, with its options checked and documented:

- a task: its file (data options, task, and the layer options that fit it) and a line
  in `DATASETS` (and in `LAYERS` for a new layer);
- a loss: its options class (`_losses.py`, `_pool_losses.py`) and a line in `LOSSES`.
"""

import perturbed_layers as pl

from ._knapsack import KnapsackLayer, PyEPOKnapsack
from ._losses import (
    AdaptiveIMLEOptions,
    BlackboxOptions,
    CaVEOptions,
    FenchelYoungOptions,
    IMLEOptions,
    NegativeIdentityOptions,
    PerturbationGradientOptions,
    RegressionOptions,
    RegretOptions,
    SPOPlusOptions,
    SquaredOptions,
    StructuredSVMOptions,
)
from ._models import ConvNetModel, LinearModel, MLPModel
from ._optimizers import AdamOptions, AdamWOptions, SGDOptions
from ._options import (
    DataOptions,
    LayerOptions,
    LossOptions,
    ModelOptions,
    OptimizerOptions,
)
from ._pool_losses import (
    CMAPOptions,
    ListwiseLTROptions,
    NCEOptions,
    PairwiseLTROptions,
    PointwiseLTROptions,
)
from ._pyepo import PyEPOLayer, PyEPOShortestPath
from ._ranking import LabelRanking, RankingLayer
from ._tsp import PyEPOTSP, TSPLayer
from ._warcraft import GridShortestPathLayer, WarcraftMaps

DATASETS: dict[str, type[DataOptions]] = {
    "pyepo_shortest_path": PyEPOShortestPath,
    "warcraft": WarcraftMaps,
    "label_ranking": LabelRanking,
    "pyepo_knapsack": PyEPOKnapsack,
    "pyepo_tsp": PyEPOTSP,
}

MODELS: dict[str, type[ModelOptions]] = {
    "linear": LinearModel,
    "mlp": MLPModel,
    "berthet_conv": ConvNetModel,
}

LAYERS: dict[str, type[LayerOptions]] = {
    "pyepo_shortest_path": PyEPOLayer,
    "grid_shortest_path": GridShortestPathLayer,
    "ranking": RankingLayer,
    "knapsack": KnapsackLayer,
    "tsp": TSPLayer,
}

NOISES: dict[str, type[pl.AbstractNoise]] = {"normal": pl.Normal, "gumbel": pl.Gumbel}

LOSSES: dict[str, type[LossOptions]] = {
    "fenchel_young": FenchelYoungOptions,
    "squared": SquaredOptions,
    "regression": RegressionOptions,
    "spo_plus": SPOPlusOptions,
    "regret": RegretOptions,
    "dbb": BlackboxOptions,
    "nid": NegativeIdentityOptions,
    "imle": IMLEOptions,
    "aimle": AdaptiveIMLEOptions,
    "ssvm": StructuredSVMOptions,
    "pg": PerturbationGradientOptions,
    "cave": CaVEOptions,
    "nce": NCEOptions,
    "cmap": CMAPOptions,
    "ltr_pointwise": PointwiseLTROptions,
    "ltr_pairwise": PairwiseLTROptions,
    "ltr_listwise": ListwiseLTROptions,
}

OPTIMIZERS: dict[str, type[OptimizerOptions]] = {
    "adam": AdamOptions,
    "adamw": AdamWOptions,
    "sgd": SGDOptions,
}
