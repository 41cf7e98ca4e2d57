"""Activation capture from torch modules."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError
from transferlab.measures import capture_activations, cka_similarity


def small_net():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(16, 4)
    )


def test_capture_matches_manual_forward_in_eval_mode():
    net = small_net().train()
    x = torch.randn(50, 6)
    acts = capture_activations(net, ["1", "3"], x, batch_size=7)
    assert net.training  # mode restored
    with torch.no_grad():
        h = torch.relu(net[0](x))
        out = net[3](h)  # dropout inactive in eval mode
    assert acts["1"].shape == (50, 16) and acts["3"].shape == (50, 4)
    np.testing.assert_allclose(acts["1"], h.numpy(), rtol=1e-5, atol=1e-6)  # float32 roundoff
    np.testing.assert_allclose(acts["3"], out.numpy(), rtol=1e-5, atol=1e-6)


def test_capture_from_dataloader_and_flattening():
    conv = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.Flatten(), torch.nn.Linear(3 * 4 * 4, 2))
    data = torch.utils.data.TensorDataset(torch.randn(20, 1, 6, 6), torch.zeros(20))
    loader = torch.utils.data.DataLoader(data, batch_size=8)
    acts = capture_activations(conv, ["0"], loader)
    assert acts["0"].shape == (20, 48)


def test_random_projection_is_reproducible_and_preserves_cka():
    torch.manual_seed(1)
    net = torch.nn.Sequential(torch.nn.Linear(10, 2000), torch.nn.Tanh(), torch.nn.Linear(2000, 5))
    x = torch.randn(200, 10)
    full = capture_activations(net, ["1"], x)["1"]
    a = capture_activations(net, ["1"], x, projection_dim=500, seed=3)["1"]
    b = capture_activations(net, ["1"], x, projection_dim=500, seed=3)["1"]
    assert a.shape == (200, 500)
    np.testing.assert_array_equal(a, b)
    # Johnson-Lindenstrauss: linear CKA between projected and full features is 1 - O(1/sqrt(k)).
    assert cka_similarity(a, full) > 0.9


def test_unknown_layer_lists_available():
    with pytest.raises(ConfigError, match="unknown layer.*'0'"):
        capture_activations(small_net(), ["fc9"], torch.randn(4, 6))
