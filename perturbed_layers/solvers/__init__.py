"""Pure-JAX combinatorial solvers, batched over leading axes (jit/vmap-friendly).

Conventions: `theta` are scores to maximise, `costs` are costs to minimise.
"""

from ._argmax import argmax_one_hot as argmax_one_hot
from ._assignment import linear_assignment as linear_assignment
from ._grid_shortest_path import grid_shortest_path as grid_shortest_path
from ._knapsack import knapsack as knapsack
from ._linear_program import linear_program as linear_program
from ._pyepo_grid import (
    arc_indicator as arc_indicator,
    arc_weights as arc_weights,
    pyepo_grid_arcs as pyepo_grid_arcs,
    pyepo_shortest_path as pyepo_shortest_path,
)
from ._ranking import ranks as ranks
from ._shortest_path import shortest_path as shortest_path
from ._spanning_tree import spanning_tree as spanning_tree
from ._topk import top_k_mask as top_k_mask
