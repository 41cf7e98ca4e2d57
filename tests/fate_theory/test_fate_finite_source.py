"""Finite-source fine-tuning with the balancedness scale: limits and values."""

from __future__ import annotations

import numpy as np
import pytest


def test_finite_source_corrected_reduces_to_known_limits():
    """A noiseless, abundant source (gamma_s -> inf, sigma_s = 0) has r0 = 1: the corrected form must
    equal the population balancedness form, and with sigma = 0 as well (c = 1) Thm C.1 itself."""
    from transferlab.theory import fate as f

    th, g = np.array([0.3, 0.7, 1.2]), np.array([[0.2], [0.5], [0.8]])
    np.testing.assert_allclose(f.finetune_transferability_finite_source_corrected(th, g, 1e12, 0.0, 0.3),
                               f.finetune_transferability_corrected(th, g, 0.3), rtol=1e-9)
    np.testing.assert_allclose(f.finetune_transferability_finite_source_corrected(th, g, 1e12, 0.0, 0.0),
                               f.finetune_transferability_finite_source(th, g, 1e12, 0.0), rtol=1e-9)
    assert float(f.finetune_transferability_finite_source_corrected(0.5, 1.5, 0.5, 0.2)) == 0.0  # gamma > 1
    # a noisy finite source (r0 != 1) moves the value away from Thm C.1 even at sigma = 0
    corrected = float(f.finetune_transferability_finite_source_corrected(np.pi / 4, 0.5, 0.5, 0.2))
    assert corrected == pytest.approx(0.0584, abs=5e-4)
    assert float(f.finetune_transferability_finite_source(np.pi / 4, 0.5, 0.5, 0.2)) == pytest.approx(0.0836, abs=5e-4)
