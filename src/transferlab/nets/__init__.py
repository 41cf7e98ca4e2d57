"""Model families with a leading instances axis.

Public names: :class:`DeepLinear` (batched deep linear networks), :data:`InitKind`.
"""

from transferlab.nets.deep_linear import DeepLinear, InitKind

__all__ = ["DeepLinear", "InitKind"]
