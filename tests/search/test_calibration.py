"""The monotone calibration of predicted final losses and expected improvement."""

import math

import numpy as np
import pytest

from gpnas.search.calibration import Calibration, expected_improvement


def test_a_calibration_fitted_on_planted_pairs_removes_a_planted_bias():
    rng = np.random.default_rng(0)
    # predictions 0.18 too optimistic, as the promoted males' were before calibration
    raw = rng.uniform(2.0, 2.5, 40)
    true = raw + 0.18 + rng.normal(0.0, 0.02, raw.size)
    calibration = Calibration.fit(raw, true)
    new = rng.uniform(2.0, 2.5, 200)
    new_true = new + 0.18 + rng.normal(0.0, 0.02, new.size)
    assert np.mean(new - new_true) == pytest.approx(-0.18, abs=0.01)
    assert abs(np.mean(calibration(new) - new_true)) < 0.01
    assert np.mean(np.abs(calibration(new) - new_true)) < 0.04


def test_the_map_is_monotone_and_held_at_its_ends_beyond_the_fitted_range():
    # a non-monotone bias: isotonic regression pools the violators 2.2 / 2.3
    calibration = Calibration.fit([2.0, 2.1, 2.2, 2.3, 2.4], [2.3, 2.4, 2.6, 2.5, 2.7])
    assert calibration.x.tolist() == pytest.approx([2.0, 2.1, 2.25, 2.4])
    assert calibration.y.tolist() == pytest.approx([2.3, 2.4, 2.55, 2.7])
    grid = np.linspace(1.5, 3.0, 301)
    assert np.all(np.diff(calibration(grid)) >= 0)  # never reorders males
    assert np.all(np.diff(calibration(np.linspace(2.0, 2.4, 41))) > 0)  # strictly inside the fitted range
    assert calibration(1.8) == pytest.approx(2.3)  # below: no lower than the truth seen so far
    assert calibration(2.6) == pytest.approx(2.7)
    assert calibration(2.175) == pytest.approx(2.475)  # between blocks: linear
    # the uncertainty in calibrated units: the map's average slope, (2.7 - 2.3) / (2.4 - 2.0) = 1
    assert calibration.spread(0.05) == pytest.approx(0.05)
    assert Calibration.fit([2.0, 2.4], [2.3, 2.4]).spread(0.08) == pytest.approx(0.02)  # slope 0.25


def test_without_pairs_the_map_is_the_identity_and_one_pair_is_a_constant():
    assert Calibration.fit([], [])(np.array([2.0, 3.0])).tolist() == [2.0, 3.0]
    one = Calibration.fit([2.0], [2.25])
    assert one(np.array([1.5, 2.0, 3.0])).tolist() == pytest.approx([2.25, 2.25, 2.25])
    assert one.spread(0.1) == pytest.approx(0.1)
    assert Calibration.fit([2.0, math.nan], [2.25, 2.0]).pairs == 1  # a non-finite pair is dropped


def test_expected_improvement():
    best = 2.0
    ei = expected_improvement(np.array([2.0, 1.8, 2.3, 2.3, 2.3]), np.array([1.0, 0.0, 0.0, 0.1, 0.3]), best)
    assert ei[0] == pytest.approx(1 / math.sqrt(2 * math.pi))  # at the incumbent: sigma phi(0)
    assert ei[1] == pytest.approx(0.2)                          # certain improvement
    assert ei[2] == 0.0                                         # certainly worse
    assert 0 < ei[3] < ei[4]                                    # more uncertainty, more to hope for
    # (best - mu) Phi(z) + sigma phi(z) at mu = 2.3, sigma = 0.3: z = -1
    assert ei[4] == pytest.approx(-0.3 * 0.158655 + 0.3 * 0.241971, abs=1e-6)
