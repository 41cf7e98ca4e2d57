"""Model families with a leading instances axis.

Public names:

- :class:`DeepLinear`, :data:`InitKind` -- batched deep linear networks (paper 1's exact-GD special case)
- :class:`BlockNet`, :class:`BatchedLinear` -- the transfer core's interface: ordered blocks + head, I instances
- :func:`mlp` -- batched multilayer perceptrons on that interface
- :func:`small_cnn`, :class:`BatchedConv2d`, :class:`BatchedMaxPool2d` -- batched CNNs on that interface
- :func:`from_module`, :class:`StackedModule` -- any ``nn.Module`` with named blocks and head as a BlockNet
- :func:`load_pretrained`, :class:`PretrainedModel` -- ImageNet MobileNetV2 / EfficientNet-lite0 as plain modules
"""

from transferlab.nets.blocks import BatchedLinear, BlockNet
from transferlab.nets.cnn import BatchedConv2d, BatchedMaxPool2d, small_cnn
from transferlab.nets.deep_linear import DeepLinear, InitKind
from transferlab.nets.mlp import mlp
from transferlab.nets.module import StackedModule, from_module
from transferlab.nets.pretrained import PretrainedModel, load_pretrained

__all__ = [
    "BatchedConv2d", "BatchedLinear", "BatchedMaxPool2d", "BlockNet", "DeepLinear", "InitKind", "PretrainedModel",
    "StackedModule", "from_module", "load_pretrained", "mlp", "small_cnn",
]
