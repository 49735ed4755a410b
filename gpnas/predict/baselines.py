"""The baselines every predictor is compared with, and the scores of predicted finals.

Baselines: the last value of the prefix, the best value so far, and a power
law c + a t^-alpha fitted to the prefix. ``score_predictions`` is the
protocol's report per task, averaged over tasks: mean and median absolute
error of the final value, Spearman rank correlation of predicted and true
finals, and regret@1: the true final of the curve predicted best minus the
best true final of the task.
"""

from __future__ import annotations

import math

import numpy as np

from gpnas.predict.curves import group_by_task, prefix_length
from gpnas.predict.features import prefix_anchors, rankdata, sanitise


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); 0 where either side is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else 0.0


MIN_RANKED = 5  # Spearman and regret of fewer curves than this are reported as n/a (NaN)


def score_predictions(pred, curves) -> dict:
    """Per task and averaged over tasks: mae, median_ae, spearman, regret of predicted
    finals (spearman and regret NaN for a task of fewer than MIN_RANKED curves)."""
    pred = sanitise(np.asarray(pred, dtype=np.float64))
    final = sanitise(np.array([c.values[-1] for c in curves]))
    per_task = {}
    for task, ix in group_by_task(curves).items():
        p, f = pred[ix], final[ix]
        with np.errstate(all="ignore"):
            err = np.abs(p - f)
        ranked = len(ix) >= MIN_RANKED
        per_task[task] = {"n": int(len(ix)), "mae": float(np.mean(err)),
                          "median_ae": float(np.median(err)),
                          "spearman": spearman(p, f) if ranked else math.nan,
                          "regret": float(f[int(np.argmin(p))] - f.min()) if ranked else math.nan}
    mean = {}
    for k in ("mae", "median_ae", "spearman", "regret"):
        values = [s[k] for s in per_task.values() if not math.isnan(s[k])]
        mean[k] = float(np.mean(values)) if values else math.nan
    return {"per_task": per_task, "mean": mean}


# ---- baselines ----

def predict_last(curves, prefix_frac):
    """Last observed value of the prefix."""
    return prefix_anchors(curves, prefix_frac)[0]


def predict_best(curves, prefix_frac):
    """Best (lowest) value so far in the prefix."""
    return np.array([sanitise(c.values[:min(len(c.values), prefix_length(c.n, prefix_frac))]).min()
                     for c in curves])


ALPHAS = np.concatenate([np.linspace(0.05, 1.0, 20), np.linspace(1.1, 3.0, 20)])


def predict_power_law(curves, prefix_frac):
    """c + a * t**(-alpha) fitted to the prefix (t = 1..k), extrapolated to t = n.

    Least squares for c and a at each alpha of a grid (0.05..3), the best alpha
    kept. Falls back to the last value when the prefix has < 3 points, the
    fit is not finite, or the extrapolation leaves [lo, hi] (a runaway fit),
    hi = max(first, last), lo = min - (hi - min) of the prefix.
    """
    out = predict_last(curves, prefix_frac).copy()
    by_k: dict[int, list[int]] = {}
    for i, c in enumerate(curves):
        by_k.setdefault(min(len(c.values), prefix_length(c.n, prefix_frac)), []).append(i)
    for k, ix in by_k.items():
        if k < 3:
            continue
        ix = np.array(ix)
        V = np.stack([sanitise(curves[i].values[:k]) for i in ix])              # (m, k)
        n = np.array([curves[i].n for i in ix], dtype=np.float64)
        t = np.arange(1, k + 1, dtype=np.float64)
        Z = t[None, :] ** -ALPHAS[:, None]                                     # (A, k)
        Zc = Z - Z.mean(axis=1, keepdims=True)
        Vc = V - V.mean(axis=1, keepdims=True)
        with np.errstate(all="ignore"):
            a = (Vc @ Zc.T) / (Zc ** 2).sum(axis=1)[None, :]                  # (m, A)
            c = V.mean(axis=1, keepdims=True) - a * Z.mean(axis=1)[None, :]
            resid = V[:, None, :] - c[:, :, None] - a[:, :, None] * Z[None, :, :]
            sse = np.nansum(resid ** 2, axis=2)
            j = np.argmin(np.where(np.isfinite(sse), sse, np.inf), axis=1)
            rows = np.arange(len(ix))
            pred = c[rows, j] + a[rows, j] * n ** -ALPHAS[j]
        hi = np.maximum(V[:, 0], V[:, -1])   # a single spike must not widen the range
        lo = V.min(axis=1) - (hi - V.min(axis=1))
        ok = np.isfinite(pred) & (pred >= lo) & (pred <= hi)
        out[ix[ok]] = pred[ok]
    return out


BASELINES = {"last": predict_last, "best": predict_best, "power_law": predict_power_law}


def score_baselines(curves, prefix_frac) -> dict:
    return {name: score_predictions(f(curves, prefix_frac), curves) for name, f in BASELINES.items()}
