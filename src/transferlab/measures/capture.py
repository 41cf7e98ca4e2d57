"""Activation capture from any ``torch.nn.Module``: layer outputs as ``(n_samples, n_features)`` arrays.

The model runs in eval mode under ``torch.inference_mode`` (no gradients), batch by batch; forward
hooks on the named submodules collect each layer's output flattened to ``(batch, features)``.
Very wide layers can be reduced on the fly by a Gaussian random projection (Johnson-Lindenstrauss:
distances and linear CKA are preserved up to ``O(1/sqrt(k))`` relative error).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from transferlab.errors import ConfigError, DataError
from transferlab.measures._validate import check_int

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["capture_activations"]


def _batches(data: Any, batch_size: int) -> Iterable[Any]:
    """Yield model inputs from a tensor/array (split into batches) or an iterable of batches
    (a ``DataLoader``; ``(x, y, ...)`` tuples or dicts with key ``"x"`` give their inputs)."""
    import torch

    if isinstance(data, np.ndarray):
        data = torch.from_numpy(data)
    if isinstance(data, torch.Tensor):
        if data.ndim == 0 or data.shape[0] == 0:
            raise DataError(f"data: expected a batch of inputs with a leading sample axis, got shape {tuple(data.shape)}")
        for start in range(0, data.shape[0], batch_size):
            yield data[start : start + batch_size]
        return
    if not isinstance(data, Iterable):
        raise DataError(f"data: expected a tensor, an array or an iterable of batches, got {type(data).__name__}")
    for batch in data:
        if isinstance(batch, dict):
            if "x" not in batch:
                raise DataError("data: dict batches must hold the inputs under key 'x'")
            batch = batch["x"]
        elif isinstance(batch, (tuple, list)):
            batch = batch[0]
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        yield batch


def _first_tensor(output: Any) -> torch.Tensor:
    import torch

    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise DataError(f"a captured layer returned {type(output).__name__}, not a tensor (or tuple starting with one)")


def capture_activations(
    model: torch.nn.Module,
    layers: Sequence[str],
    data: Any,
    *,
    batch_size: int = 256,
    projection_dim: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``data`` and return each named layer's outputs as ``(n, features)`` arrays.

    Args:
        model: any ``torch.nn.Module``; put in eval mode for the capture and restored afterwards.
        layers: names from ``model.named_modules()`` (``""`` is the model's own output).
        data: a tensor or array ``(n, ...)`` (split into ``batch_size`` batches), or an iterable
            of batches such as a ``DataLoader`` (tuples/lists give their first element).
        batch_size: rows per forward pass for tensor/array data.
        projection_dim: if set, layers wider than this are multiplied by a fixed Gaussian matrix
            ``R (features, projection_dim)`` with entries ``N(0, 1/projection_dim)``, drawn from
            ``seed`` and the layer's position, so results are reproducible.
        device: where to run (default: the model's parameters' device, else CPU).

    Returns:
        ``{layer: array (n, features)}`` in the model's floating dtype (float32 by default);
        the measures convert to float64 themselves.

    Raises:
        ConfigError: unknown layer names (the message lists the available ones), bad sizes.
        DataError: empty data, non-tensor layer outputs, inconsistent layer widths across batches.
    """
    import torch

    if isinstance(layers, str):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise ConfigError("layers: give at least one layer name")
    batch_size = check_int(batch_size, "batch_size", low=1)
    if projection_dim is not None:
        projection_dim = check_int(projection_dim, "projection_dim", low=1)
    modules = dict(model.named_modules())
    unknown = [name for name in layers if name not in modules]
    if unknown:
        known = ", ".join(repr(k) for k in modules)
        raise ConfigError(f"unknown layer(s) {unknown}; the model has: {known}")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    device = torch.device(device)

    chunks: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    projections: dict[str, torch.Tensor | None] = {}
    current: dict[str, torch.Tensor] = {}

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            current[name] = _first_tensor(output).detach()

        return hook

    handles = [modules[name].register_forward_hook(make_hook(name)) for name in layers]
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in _batches(data, batch_size):
                current.clear()
                model(batch.to(device))
                for position, name in enumerate(layers):
                    if name not in current:
                        raise DataError(f"layer {name!r} was not called during the forward pass")
                    act = current[name].reshape(current[name].shape[0], -1)
                    if name not in projections:
                        projections[name] = None
                        if projection_dim is not None and act.shape[1] > projection_dim:
                            gen = torch.Generator(device="cpu").manual_seed(int(seed) * 1_000_003 + position)
                            r = torch.randn(act.shape[1], projection_dim, generator=gen, dtype=torch.float64)
                            projections[name] = (r / np.sqrt(projection_dim)).to(device=device, dtype=act.dtype)
                    proj = projections[name]
                    if proj is not None:
                        if act.shape[1] != proj.shape[0]:
                            raise DataError(f"layer {name!r} changed width across batches ({proj.shape[0]} -> {act.shape[1]})")
                        act = act @ proj
                    chunks[name].append(act.cpu().numpy())
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if not chunks[layers[0]]:
        raise DataError("data: no batches were produced")
    out = {}
    for name, parts in chunks.items():
        widths = {p.shape[1] for p in parts}
        if len(widths) != 1:
            raise DataError(f"layer {name!r} changed width across batches: {sorted(widths)}")
        out[name] = np.concatenate(parts, axis=0)
    return out
