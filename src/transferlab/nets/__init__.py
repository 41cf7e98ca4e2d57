"""Model families with a leading instances axis.

Public names:

- :class:`DeepLinear`, :data:`InitKind` -- batched deep linear networks (paper 1's exact-GD special case)
- :class:`BlockNet`, :class:`BatchedLinear` -- the transfer core's interface: ordered blocks + head, I instances
- :func:`stack_instances` -- several BlockNets of one architecture as one, instances concatenated
- :func:`mlp` -- batched multilayer perceptrons on that interface
- :func:`small_cnn`, :class:`BatchedConv2d`, :class:`BatchedMaxPool2d` -- batched CNNs on that interface
- :func:`from_module`, :class:`StackedModule` -- any ``nn.Module`` with named blocks and head as a BlockNet
- :func:`load_pretrained`, :class:`PretrainedModel` -- ImageNet MobileNetV2 / EfficientNet-lite0 as plain modules
- :func:`patch_cnn`, :class:`PatchReLU`, :class:`ClassSum`, :func:`neuron_feature_cosines` -- the two-layer
  patch ReLU network of paper 4 (fixed second layer) and its neuron-feature alignment; :func:`patch_gd`,
  :class:`PatchGD`, :func:`patch_pool` -- its full-batch gradient descent and features, fused over many networks
- :func:`transformer`, :data:`TRANSFORMER_SIZES`, :class:`TransformerSize`, :func:`non_embedding_params`,
  :func:`training_flops_per_token` -- batched decoder-only transformers (paper 3's character-level LMs)
"""

from transferlab.nets.blocks import BatchedLinear, BlockNet, stack_instances
from transferlab.nets.cnn import BatchedConv2d, BatchedMaxPool2d, small_cnn
from transferlab.nets.deep_linear import DeepLinear, InitKind
from transferlab.nets.mlp import mlp
from transferlab.nets.module import StackedModule, from_module
from transferlab.nets.patch_cnn import ClassSum, PatchGD, PatchReLU, neuron_feature_cosines, patch_cnn, patch_gd, patch_pool
from transferlab.nets.pretrained import PretrainedModel, load_pretrained
from transferlab.nets.transformer import (
    TRANSFORMER_SIZES,
    TransformerSize,
    non_embedding_params,
    training_flops_per_token,
    transformer,
)

__all__ = [
    "BatchedConv2d", "BatchedLinear", "BatchedMaxPool2d", "BlockNet", "DeepLinear", "InitKind", "PretrainedModel",
    "StackedModule", "from_module", "load_pretrained", "mlp", "small_cnn", "stack_instances",
    "ClassSum", "PatchGD", "PatchReLU", "neuron_feature_cosines", "patch_cnn", "patch_gd", "patch_pool",
    "TRANSFORMER_SIZES", "TransformerSize", "non_embedding_params", "training_flops_per_token", "transformer",
]
