"""Teacher pairs, Gaussian data and the batched DeepLinear network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from transferlab.errors import ConfigError, DataError
from transferlab.nets import DeepLinear
from transferlab.tasks import linear_regression_data, standard_normal, teacher_pair

from .conftest import generator


@pytest.mark.parametrize("theta", [0.0, 0.4, math.pi / 2, 2.5])
def test_teacher_pair_has_unit_norms_and_the_requested_angle(theta: float) -> None:
    pair = teacher_pair(50, theta, generator(0))
    assert torch.linalg.vector_norm(pair.beta_s).item() == pytest.approx(1.0, abs=1e-14)
    assert torch.linalg.vector_norm(pair.beta_t).item() == pytest.approx(1.0, abs=1e-14)
    assert (pair.beta_s @ pair.beta_t).item() == pytest.approx(math.cos(theta), abs=1e-14)


def test_same_seed_same_draws_and_numpy_generators_work() -> None:
    a = teacher_pair(30, 0.7, generator(5))
    b = teacher_pair(30, 0.7, generator(5))
    assert torch.equal(a.beta_t, b.beta_t)
    c = teacher_pair(30, 0.7, np.random.default_rng(5))
    assert (c.beta_s @ c.beta_t).item() == pytest.approx(math.cos(0.7), abs=1e-14)
    assert standard_normal((2, 3), np.random.default_rng(0)).dtype == torch.float64


def test_linear_regression_data_shapes_and_noise() -> None:
    beta = teacher_pair(20, 0.1, generator(1)).beta_t
    X, y = linear_regression_data(beta, 2000, 0.5, generator(2), instances=3)
    assert X.shape == (3, 2000, 20) and y.shape == (3, 2000)
    residual = y - X @ beta
    assert residual.std().item() == pytest.approx(0.5, rel=0.03)
    X0, y0 = linear_regression_data(beta, 10, 0.0, generator(2), instances=2)
    torch.testing.assert_close(y0, X0 @ beta, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "call",
    [
        lambda: teacher_pair(1, 0.3, generator(0)),
        lambda: teacher_pair(10, float("nan"), generator(0)),
        lambda: teacher_pair(10, 0.3, 42),
        lambda: linear_regression_data(torch.ones(5), 0, 0.1, generator(0)),
        lambda: linear_regression_data(torch.ones(5), 3, -0.1, generator(0)),
        lambda: linear_regression_data(torch.ones(5), 3, 0.1, generator(0), instances=0),
    ],
)
def test_task_bad_config(call) -> None:
    with pytest.raises(ConfigError):
        call()


def test_task_bad_teacher() -> None:
    with pytest.raises(DataError):
        linear_regression_data(torch.ones(2, 5), 3, 0.1, generator(0))
    with pytest.raises(DataError):
        linear_regression_data(torch.tensor([1.0, float("inf")]), 3, 0.1, generator(0))


def test_deep_linear_shapes_products_and_shared_init() -> None:
    net = DeepLinear(6, 3, instances=4, init_scale=0.5, generator=generator(0))
    assert [tuple(w.shape) for w in net.weights] == [(4, 6, 6), (4, 6, 6), (4, 6, 1)]
    assert all(torch.equal(w[0], w[3]) for w in net.weights)  # the authors tile one init
    w1, w2, w3 = (w.detach() for w in net.weights)
    torch.testing.assert_close(net.hidden_features(), w1 @ w2)
    torch.testing.assert_close(net.end_to_end(), (w1 @ w2 @ w3)[..., 0])
    X = standard_normal((4, 5, 6), generator(1))
    torch.testing.assert_close(net(X), (X @ net.end_to_end()[..., None])[..., 0])
    repeated = net.repeat_instances(2)
    assert repeated.instances == 8 and torch.equal(repeated.weights[0][1], net.weights[0][0])


def test_deep_linear_random_init_scale_and_identity_init() -> None:
    d, alpha = 200, 1e-3
    net = DeepLinear(d, 2, init_scale=alpha, generator=generator(0))
    # W_1 = alpha G / sqrt(d): entries of std alpha / sqrt(d); w_2 = alpha g: entries of std alpha
    assert net.weights[0].std().item() == pytest.approx(alpha / math.sqrt(d), rel=0.02)
    assert net.weights[1].std().item() == pytest.approx(alpha, rel=0.15)
    ident = DeepLinear(5, 2, init="identity", init_scale=0.1, dtype=torch.float32)
    assert ident.dtype == torch.float32
    torch.testing.assert_close(ident.hidden_features()[0], 0.1 * torch.eye(5))
    one_layer = DeepLinear(4, 1, instances=2, init="identity")
    torch.testing.assert_close(one_layer.hidden_features(), torch.eye(4, dtype=torch.float64).expand(2, 4, 4))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"d": 0, "layers": 2},
        {"d": 5, "layers": 0},
        {"d": 5, "layers": 2, "instances": 0},
        {"d": 5, "layers": 2, "init_scale": 0.0},
        {"d": 5, "layers": 2, "init": "orthogonal"},
        {"d": 5, "layers": 2},  # random init without a generator
        {"d": 5, "layers": 2, "init": "identity", "dtype": torch.float16},
    ],
)
def test_deep_linear_bad_config(kwargs) -> None:
    with pytest.raises(ConfigError):
        DeepLinear(**kwargs)


def test_deep_linear_bad_weights_and_inputs() -> None:
    with pytest.raises(DataError):
        DeepLinear.from_weights([torch.zeros(2, 3, 3), torch.zeros(2, 4, 1)])
    with pytest.raises(DataError):
        DeepLinear.from_weights([torch.zeros(2, 3, 2)])
    with pytest.raises(DataError):
        DeepLinear(3, 2, init="identity")(torch.zeros(1, 4, 5))
