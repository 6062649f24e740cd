"""Experiments: YAML configs, built-in datasets, models, a jit-compiled training loop.

Install with the `experiments` extra (`pip install -e ".[experiments]"`), then

```bash
perturbed-layers configs                       # the built-in configs (shipped inside)
perturbed-layers train quickstart              # one of them, by name
perturbed-layers train configs/pyepo_shortest_path.yaml --out runs/pyepo data.deg=2
perturbed-layers evaluate runs/pyepo
```

or from Python:

```python
from perturbed_layers.experiments import load_config, train

config = load_config("configs/pyepo_shortest_path.yaml", ["training.epochs=2"])
summary = train(config, "runs/pyepo-short", progress=False)
summary["test_normalized_regret"]
```

Registries (plain dicts, name → options class with a `build` method, all in
`_registry.py`) hold what a config can name: `DATASETS`, `MODELS`, `LAYERS`, `NOISES`,
`LOSSES`, `OPTIMIZERS`.
"""

from ._build import Experiment as Experiment, build as build
from ._builtin import (
    builtin_configs as builtin_configs,
    resolve_config as resolve_config,
)
from ._cli import main as main
from ._config import (
    Config as Config,
    ConfigError as ConfigError,
    TrainingOptions as TrainingOptions,
    config_from_dict as config_from_dict,
    config_schema as config_schema,
    dump_config as dump_config,
    load_config as load_config,
)
from ._evaluation import evaluate as evaluate
from ._knapsack import (
    KnapsackTask as KnapsackTask,
    pyepo_knapsack_data as pyepo_knapsack_data,
)
from ._loop import train_step as train_step, train_steps as train_steps
from ._models import BerthetConvNet as BerthetConvNet
from ._pyepo import (
    PyEPOTask as PyEPOTask,
    pyepo_shortest_path_data as pyepo_shortest_path_data,
    sklearn_train_test_split as sklearn_train_test_split,
)
from ._ranking import (
    RankingTask as RankingTask,
    label_ranking_data as label_ranking_data,
)
from ._registry import (
    DATASETS as DATASETS,
    LAYERS as LAYERS,
    LOSSES as LOSSES,
    MODELS as MODELS,
    NOISES as NOISES,
    OPTIMIZERS as OPTIMIZERS,
)
from ._run_folder import RunFileError as RunFileError
from ._run_guard import (
    SAFE_CHANGES as SAFE_CHANGES,
    RunFolderError as RunFolderError,
)
from ._tasks import (
    AbstractLoss as AbstractLoss,
    AbstractMeasuringLoss as AbstractMeasuringLoss,
    AbstractStatefulLoss as AbstractStatefulLoss,
    AbstractTask as AbstractTask,
    Batch as Batch,
    Dataset as Dataset,
)
from ._train import TrainingDiverged as TrainingDiverged, train as train
from ._tsp import TSPTask as TSPTask, pyepo_tsp_data as pyepo_tsp_data
from ._warcraft import WarcraftTask as WarcraftTask
from ._warcraft_maps import (
    TERRAIN_COSTS as TERRAIN_COSTS,
    generate_warcraft_maps as generate_warcraft_maps,
    load_warcraft_split as load_warcraft_split,
)
