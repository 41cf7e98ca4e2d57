"""The law's algebra against the numbers of Hernandez et al. (2021): Table 1, Fig. 1, Sec. 6.2, eq. 1.1.

Tolerances: the paper's table values are printed with 3 significant figures, so a relative
tolerance of 0.5 % (half a unit in the last place of the smallest, e.g. 475 +- 0.5 is 0.1 %, 1.42e8
+- 0.005e8 is 0.35 %) checks them exactly up to rounding. The Sec. 6.2 numbers are the paper's own
rounded estimates ("3.7e8") and differ from eq. 1.1 by up to 4.6 %: checked within 5 %.
"""

from __future__ import annotations

import numpy as np
import pytest

from transferlab.errors import ConfigError, DataError
from transferlab.scaling import (
    TEXT_CODE_TO_PYTHON,
    TEXT_TO_PYTHON,
    KaplanLoss,
    TransferLaw,
    critical_model_size,
    effective_data_multiplier,
    effective_data_size,
    fraction_from_transfer,
    transferred_data,
    unified_transfer_loss,
)
from transferlab.scaling.synthetic import KAPLAN_WEBTEXT2_SEPARATE

# computed from eq. 1.1 and Table 1: (law, N, D_F, D_T, D_T/D_F, D_T/(D_T+D_F))
TABLE_35 = [
    (TEXT_TO_PYTHON, 4e7, 3e5, 1.42e8, 475, 0.998),
    (TEXT_TO_PYTHON, 1e6, 1e6, 4.35e7, 43.5, 0.978),
    (TEXT_TO_PYTHON, 1e8, 1e7, 3.79e8, 37.9, 0.974),
    (TEXT_TO_PYTHON, 1e9, 1e8, 1.38e9, 13.8, 0.932),
    (TEXT_CODE_TO_PYTHON, 4e7, 3e5, 5.46e8, 1820, 0.999),
    (TEXT_CODE_TO_PYTHON, 1e9, 1e8, 3.24e9, 32.4, 0.970),
]


@pytest.mark.parametrize(("law", "n", "d_f", "d_t", "ratio", "fraction"), TABLE_35)
def test_derived_numbers_of_section_3_5(law, n, d_f, d_t, ratio, fraction):
    assert transferred_data(d_f, n, law) == pytest.approx(d_t, rel=5e-3)
    # eq. 1.2: exact multiplier is 1 + D_T/D_F; the table lists D_T/D_F
    assert effective_data_multiplier(d_f, n, law) - 1 == pytest.approx(ratio, rel=5e-3)
    assert fraction_from_transfer(d_f, n, law) == pytest.approx(fraction, abs=5e-4)


def test_table_1_coefficients():
    assert (TEXT_TO_PYTHON.k, TEXT_TO_PYTHON.alpha, TEXT_TO_PYTHON.beta) == (1.9e4, 0.18, 0.38)
    assert (TEXT_CODE_TO_PYTHON.k, TEXT_CODE_TO_PYTHON.alpha, TEXT_CODE_TO_PYTHON.beta) == (2.1e5, 0.096, 0.38)


def test_gpt3_scale_estimates_of_section_6_2():
    n = 1.75e11
    text = transferred_data(1.0, n, TEXT_TO_PYTHON)
    code = transferred_data(1.0, n, TEXT_CODE_TO_PYTHON)
    # eq. 1.1 values to 3 significant figures (Sec. 6.2 quotes 3.7e8 and 4.1e9)
    assert text == pytest.approx(3.56e8, rel=5e-3)
    assert code == pytest.approx(3.93e9, rel=5e-3)
    # the paper's rounded estimates 3.7e8 and 4.1e9 "within a few percent"
    assert text == pytest.approx(3.7e8, rel=0.05)
    assert code == pytest.approx(4.1e9, rel=0.05)
    # 300 characters of context multiply D_E (~D_T at D_F ~ 1) by 300**alpha: 2.8 and 1.7
    mult_text = transferred_data(300.0, n, TEXT_TO_PYTHON) / text
    mult_code = transferred_data(300.0, n, TEXT_CODE_TO_PYTHON) / code
    assert mult_text == pytest.approx(2.79, abs=5e-3)
    assert mult_code == pytest.approx(1.73, abs=5e-3)
    assert mult_text == pytest.approx(2.8, abs=5e-2) and mult_code == pytest.approx(1.7, abs=5e-2)  # as printed


def test_section_3_3_exchange_rates_and_critical_size_slope():
    n = np.array([1e7, 1e8])
    gain_size = transferred_data(1e6, n[1], TEXT_TO_PYTHON) / transferred_data(1e6, n[0], TEXT_TO_PYTHON)
    assert gain_size == pytest.approx(2.40, abs=5e-3)  # 10**0.38
    gain_data = transferred_data(1e7, 1e8, TEXT_TO_PYTHON) / transferred_data(1e6, 1e8, TEXT_TO_PYTHON)
    assert gain_data == pytest.approx(1.51, abs=5e-3)  # 10**0.18
    d_f = np.array([1e5, 1e7])
    slope = np.diff(np.log(critical_model_size(d_f, TEXT_TO_PYTHON)))[0] / np.diff(np.log(d_f))[0]
    assert slope == pytest.approx(2.16, abs=5e-3)  # (1 - alpha) / beta


def test_fig1_point_is_about_twice_the_global_fit():
    # the Fig. 1 example (N = 40M, D_F = 3e5) reads D_T ~ 1000 D_F; eq. 1.1 gives 475.
    ratio = transferred_data(3e5, 4e7, TEXT_TO_PYTHON) / 3e5
    assert 1000 / ratio == pytest.approx(2.1, abs=0.1)


def test_fraction_is_logistic_in_critical_size():
    rng = np.random.default_rng(0)
    d_f = 10 ** rng.uniform(2, 9, 50)
    n = 10 ** rng.uniform(4, 11, 50)
    law = TransferLaw(3.3e3, 0.27, 0.41)
    n_star = critical_model_size(d_f, law)
    np.testing.assert_allclose(fraction_from_transfer(d_f, n, law), 1 / (1 + (n_star / n) ** law.beta), rtol=1e-12)
    d_t = transferred_data(d_f, n, law)
    np.testing.assert_allclose(fraction_from_transfer(d_f, n, law), d_t / (d_f + d_t), rtol=1e-12)
    np.testing.assert_allclose(effective_data_size(d_f, n, law), d_f + d_t, rtol=1e-15)


def test_broadcasting_and_dtype():
    d_t = transferred_data(np.array([[1e4], [1e5]]), np.array([1e6, 1e7, 1e8]), TEXT_TO_PYTHON)
    assert d_t.shape == (2, 3) and d_t.dtype == np.float64
    assert np.all(np.diff(d_t, axis=1) > 0) and np.all(np.diff(d_t, axis=0) > 0)


def test_fraction_is_stable_at_extremes():
    f = fraction_from_transfer(np.array([1e-30, 1e30]), 1e9, TEXT_TO_PYTHON)
    assert np.all(np.isfinite(f)) and f[0] == pytest.approx(1.0) and 0 < f[1] < 1e-15


def test_kaplan_loss_and_data_for_plateau():
    kaplan = KAPLAN_WEBTEXT2_SEPARATE
    n = np.array([1e5, 1e7, 1e9])
    d_n = kaplan.data_for_fraction(n, 0.99)
    np.testing.assert_allclose(kaplan.loss(n, d_n), kaplan.infinite_data_loss(n) / 0.99, rtol=1e-12)
    # infinite data: L -> (N_c/N)**a_N
    np.testing.assert_allclose(kaplan.loss(n, 1e30), kaplan.infinite_data_loss(n), rtol=1e-12)
    # unified loss (eq. 6.1) is Kaplan's loss at the effective data
    np.testing.assert_allclose(
        unified_transfer_loss(n, 1e5, TEXT_TO_PYTHON, kaplan),
        kaplan.loss(n, 1e5 + transferred_data(1e5, n, TEXT_TO_PYTHON)), rtol=1e-14)


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(DataError, match="model size N must be > 0"):
        transferred_data(1e5, 0.0, TEXT_TO_PYTHON)
    with pytest.raises(DataError, match="D_F must be finite"):
        transferred_data(np.nan, 1e6, TEXT_TO_PYTHON)
    with pytest.raises(ConfigError, match="k must be"):
        TransferLaw(-1.0, 0.2, 0.3)
    with pytest.raises(ConfigError, match="beta = 0"):
        critical_model_size(1e5, TransferLaw(1.0, 0.2, 0.0))
    with pytest.raises(ConfigError, match="alpha_d"):
        KaplanLoss(0.07, 0.0, 1e13, 1e13)
