"""Calibrated predictions and the promotion rule that uses their uncertainty.

A female's predicted final loss for an early-trained male is biased where it
matters: promotion picks the males predicted lowest, so their predictions are
the most optimistic ones (the winner's curse; before calibration the best
prediction was 0.18 below the truth). ``Calibration`` is a monotone map from
raw prediction to expected true final loss, fitted on the males already
promoted (raw prediction at promotion against the final loss they then
reached): isotonic regression (pool-adjacent-violators, scipy's
``isotonic_regression``), joined linearly between the fitted blocks and held
at the end blocks' values beyond them (a prediction more extreme than any
seen so far is believed no further than the truth seen so far: the males
promoted for the lowest predictions are exactly the ones whose predictions
overshoot). The map is non-decreasing; where it is flat, males keep the order
of their raw predictions (the engine breaks ties by them).

Promotion by **expected improvement** over the best true final loss so far:
with the calibrated mean mu and spread sigma of a male (sigma: the spread of
the dissimilar top females' predictions, mapped through the calibration),

    EI = (best - mu) Phi(z) + sigma phi(z),   z = (best - mu) / sigma

(max(best - mu, 0) when sigma = 0). EI rather than a lower confidence bound
because it has no exploration constant to tune (a kappa whose right value
depends on how well the spread is calibrated), it is measured in loss units
against what the run already has, and it reduces to "lowest mean first" when
every male is equally uncertain; among males with equal EI (all far worse
than the best) the lower mean goes first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import isotonic_regression


@dataclass(frozen=True)
class Calibration:
    """A fitted monotone map raw prediction -> expected true final loss."""

    x: np.ndarray   # (b,) block centres of the raw predictions, increasing
    y: np.ndarray   # (b,) fitted true final loss at each, increasing

    @classmethod
    def fit(cls, predicted, true) -> "Calibration":
        """Isotonic regression of true on predicted; pairs with a non-finite value are dropped."""
        p = np.asarray(predicted, dtype=np.float64)
        t = np.asarray(true, dtype=np.float64)
        keep = np.isfinite(p) & np.isfinite(t)
        p, t = p[keep], t[keep]
        if p.size == 0:
            return cls(np.zeros(0), np.zeros(0))
        order = np.argsort(p, kind="mergesort")
        p, t = p[order], t[order]
        fitted = isotonic_regression(t, increasing=True).x
        # one point per block of equal fitted value, at the block's mean raw prediction
        starts = np.r_[0, np.flatnonzero(np.diff(fitted) > 0) + 1]
        ends = np.r_[starts[1:], p.size]
        x = np.array([p[a:b].mean() for a, b in zip(starts, ends)])
        y = fitted[starts]
        return cls(x, y)

    @property
    def pairs(self) -> int:
        return int(self.x.size)

    def __call__(self, raw) -> np.ndarray:
        """Calibrated values of raw predictions (the identity before any pair is known)."""
        r = np.asarray(raw, dtype=np.float64)
        if self.x.size == 0:
            return r.copy()
        return np.interp(r, self.x, self.y)  # held at y[0] below x[0] and y[-1] above x[-1]

    @property
    def slope(self) -> float:
        """The map's average slope, (y_last - y_first) / (x_last - x_first), at most 1;
        1 with fewer than two blocks (nothing known about it yet)."""
        if self.x.size < 2:
            return 1.0
        return float(min(1.0, (self.y[-1] - self.y[0]) / (self.x[-1] - self.x[0])))

    def spread(self, sigma) -> np.ndarray:
        """An uncertainty of raw predictions in calibrated units: sigma times the map's
        average slope (a local slope would be 0 on the flat ends, where the
        uncertainty is largest)."""
        return np.asarray(sigma, dtype=np.float64) * self.slope


def expected_improvement(mu, sigma, best: float) -> np.ndarray:
    """E[max(best - Y, 0)] for Y ~ N(mu, sigma^2), elementwise (losses: lower is better)."""
    mu, sigma = np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64)
    gain = best - mu
    out = np.maximum(gain, 0.0)
    ok = sigma > 0
    if ok.any():
        z = gain[ok] / sigma[ok]
        cdf = 0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
        out[ok] = gain[ok] * cdf + sigma[ok] * pdf
    return out
