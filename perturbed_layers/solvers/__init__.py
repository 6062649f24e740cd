"""Pure-JAX combinatorial solvers, batched over leading axes (jit/vmap-friendly).

Conventions: `theta` are scores to maximise, `costs` are costs to minimise.
"""

from ._argmax import argmax_one_hot as argmax_one_hot
from ._ranking import ranks as ranks
from ._topk import top_k_mask as top_k_mask
