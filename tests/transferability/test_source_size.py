"""``usable_size``: a source (or CKA reference) asked for more images than its data set holds trains on the
largest class-balanced draw that, with its validation images, fits; checked by drawing with the very function
the source recipe uses (it must succeed at the returned size and fail one image a class above it)."""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.errors import DataError
from transferlab.experiments.transfer import _SOURCE_VAL, _dataset, _disjoint_subsets
from transferlab.experiments.transferability import usable_size


def _draw(name: str, labels: str, n: int) -> None:
    data = _dataset(name, labels)
    _disjoint_subsets(data.y_train, n, min(_SOURCE_VAL, n // 5), np.random.default_rng(0), data.n_classes)


@pytest.mark.parametrize(("name", "labels"), [("digits", "fine"), ("animal_mnist[0,1,2,3,4]", "fine")])
def test_a_small_data_set_gives_the_largest_draw_that_fits(name: str, labels: str) -> None:
    data = _dataset(name, labels)
    K = data.n_classes
    n = usable_size(name, labels, 10_000)
    assert n < 10_000 and n % K == 0
    _draw(name, labels, n)  # fits
    with pytest.raises(DataError, match="balanced subset"):
        _draw(name, labels, n + K)  # one more image a class does not


def test_a_size_that_fits_is_kept() -> None:
    assert usable_size("mnist[0,1,2,3,4]", "fine", 10_000) == 10_000
    assert usable_size("digits", "fine", 301) == 301  # not rounded when it fits
    assert usable_size("fashion_mnist", "coarse", 5_000) == 5_000
