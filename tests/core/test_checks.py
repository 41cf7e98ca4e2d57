"""transferlab._checks: the one validation helper for integers, reals, flags and choices."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest

from transferlab._checks import check_bool, check_choice, check_int, check_real
from transferlab.errors import ConfigError


def test_check_int_accepts_python_and_numpy_integers_and_returns_int():
    assert check_int(3, "n") == 3
    value = check_int(np.int64(4), "n", low=1, high=4)
    assert value == 4 and type(value) is int
    assert check_int(None, "n", low=1, optional=True) is None


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (True, {"low": 1}, "n must be an integer >= 1, got True"),
        (2.0, {"low": 1}, "n must be an integer >= 1, got 2.0"),
        ("3", {"low": 1}, "n must be an integer >= 1, got '3'"),
        (0, {"low": 1}, "n must be an integer >= 1, got 0"),
        (5, {"high": 4}, "n must be an integer <= 4, got 5"),
        (np.int64(5), {"low": 0, "high": 3}, "n must be an integer in 0..3, got 5"),
        (None, {}, "n must be an integer, got None"),
        (0, {"low": 1, "optional": True}, "n must be an integer >= 1 or None, got 0"),
        (9, {"low": 0, "high": 3, "note": "the number of blocks"}, r"n must be an integer in 0..3 \(the number of blocks\), got 9"),
    ],
)
def test_check_int_message_states_the_whole_requirement(value, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_int(value, "n", **kwargs)


def test_check_real_accepts_reals_and_returns_float():
    value = check_real(np.float32(0.5), "x", low=0.0, high=1.0, high_open=True)
    assert value == 0.5 and type(value) is float
    assert check_real(2, "x") == 2.0
    assert check_real(math.inf, "x", low=0.0, finite=False) == math.inf
    assert check_real(None, "x", optional=True) is None
    assert check_real(0.0, "x", low=0.0) == 0.0 and check_real(1.0, "x", high=1.0) == 1.0


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (True, {}, "x must be a finite number, got True"),
        ("0.5", {}, "x must be a finite number, got '0.5'"),
        (math.nan, {"finite": False}, "x must be a number, got nan"),
        (math.inf, {"low": 0.0}, "x must be a finite number >= 0, got inf"),
        (0.0, {"low": 0.0, "low_open": True}, "x must be a finite number > 0, got 0.0"),
        (1.0, {"high": 1.0, "high_open": True}, "x must be a finite number < 1, got 1.0"),
        (-2, {"low": -1.0, "high": 1.0}, r"x must be a finite number in \[-1, 1\], got -2.0"),
        (1.0, {"low": 0.0, "high": 1.0, "low_open": True, "high_open": True}, r"x must be a finite number in \(0, 1\), got 1.0"),
        (1.5, {"low": 0, "high": 1, "high_open": True, "optional": True}, r"x must be a finite number in \[0, 1\) or None, got 1.5"),
    ],
)
def test_check_real_message_states_the_whole_requirement(value, kwargs, message):
    with pytest.raises(ConfigError, match=f"^{message}$"):
        check_real(value, "x", **kwargs)


def test_check_bool_takes_only_flags():
    assert check_bool(True, "flag") is True and check_bool(np.False_, "flag") is False
    for bad in (1, "yes", None):
        with pytest.raises(ConfigError, match="^flag must be True or False, got"):
            check_bool(bad, "flag")


def test_check_choice_matches_type_and_value():
    assert check_choice("b", "mode", ("a", "b")) == "b"
    for bad in ("c", 1, None, np.array(["a", "b"])):
        with pytest.raises(ConfigError, match=r"^mode must be one of \('a', 'b'\), got"):
            check_choice(bad, "mode", ("a", "b"))


def test_the_module_is_light():
    code = "import sys, transferlab._checks; print(sorted(m for m in ('numpy', 'torch', 'scipy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
