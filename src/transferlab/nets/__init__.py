"""Model families with a leading instances axis.

Public names:

- :class:`DeepLinear`, :data:`InitKind` -- batched deep linear networks (paper 1's exact-GD special case)
- :class:`BlockNet`, :class:`BatchedLinear` -- the transfer core's interface: ordered blocks + head, I instances
- :func:`mlp` -- batched multilayer perceptrons on that interface
"""

from transferlab.nets.blocks import BatchedLinear, BlockNet
from transferlab.nets.deep_linear import DeepLinear, InitKind
from transferlab.nets.mlp import mlp

__all__ = ["BatchedLinear", "BlockNet", "DeepLinear", "InitKind", "mlp"]
