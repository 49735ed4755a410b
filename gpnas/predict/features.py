"""Named, documented features of a learning-curve prefix, and the scale-free target.

A curve is seen through its prefix v_1..v_k (``curves.prefix_length``), the
horizon n is known. Before anything else the prefix is *sanitised*: NaN and
+inf become +1e18 (a diverged run is a blow-up), -inf becomes -1e18, and
values are clipped to +-1e18. Curve features are then computed on

    R_i = clip((v_i - v_1) / s, -1000, 1000),    s = |v_1|  (the curve's own scale;
          max |v| when v_1 is 0, 1 when the whole prefix is 0)

so they are *scale-free*: a binary classifier at 0.69 and a language model at
3.3 that fall by the same fraction look alike, and a 1e18 blow-up is a bounded
1000. Time is the evaluation index t = 1..k; slopes are in log-step space
(least squares of R on ln t). Cohort features compare a curve with the other
curves of the same task passed in the same call (a search always sees many
curves at once); a curve alone in its task gets the neutral values (rank 0.5,
z 0). Hyperparameter features come from ``Curve.config``; a curve without them
gets the neutral values of the default small GPT (lr 1e-3, dropout 0,
4 layers, n_embd 128, 12 * 4 * 128**2 parameters) so they carry no signal.

The predictors' target is scale-free too: the tree predicts

    r = (final - last) / s,   so   final = last + s * r

(``targets`` / ``to_final``). A tree that outputs 0 *is* the last-value
baseline; evolution only has to learn the correction, in the curve's own units.
Every column ``feature_matrix`` returns is finite.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from gpnas.predict.curves import Curve, prefix_length

BIG = 1e18        # stand-in for a blown-up or diverged loss
REL_CLIP = 1e3    # bound on scale-free values
NEUTRAL = {"learning_rate": 1e-3, "dropout": 0.0, "n_layer": 4.0, "n_embd": 128.0,
           "n_params": 12.0 * 4 * 128 ** 2}


@dataclass(frozen=True)
class Feature:
    name: str
    func: Callable[["_Batch"], np.ndarray]
    formula: str   # the docstring's first line: name = formula


FEATURES: dict[str, Feature] = {}


def _feature(func):
    FEATURES[func.__name__] = Feature(func.__name__, func, func.__doc__.strip().splitlines()[0])
    return func


@dataclass
class _Batch:
    """Curves with the same prefix length k, as arrays (m curves)."""
    R: np.ndarray        # (m, k) scale-free prefix values
    n: np.ndarray        # (m,) horizons
    first: np.ndarray    # (m,) sanitised first value
    last: np.ndarray     # (m,) sanitised last prefix value
    scale: np.ndarray    # (m,) s
    config: dict         # hyperparameter name -> (m,) values
    tasks: list          # (m,) task names
    cohort: dict | None = None  # set for the cohort pass: name -> (m,) column

    @property
    def k(self) -> int:
        return self.R.shape[1]


def sanitise(values: np.ndarray) -> np.ndarray:
    v = np.nan_to_num(np.asarray(values, dtype=np.float64), nan=BIG, posinf=BIG, neginf=-BIG)
    return np.clip(v, -BIG, BIG)


def _scale(v: np.ndarray) -> float:
    s = abs(v[0])
    if s > 1e-12:
        return float(s)
    s = float(np.max(np.abs(v)))
    return s if s > 1e-12 else 1.0


def _slope(R: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Least-squares slope of R[:, lo:hi] against ln t, t = lo+1..hi; 0 for < 2 points."""
    if hi - lo < 2:
        return np.zeros(R.shape[0])
    x = np.log(np.arange(lo + 1, hi + 1, dtype=np.float64))
    x = x - x.mean()
    y = R[:, lo:hi]
    return (y - y.mean(axis=1, keepdims=True)) @ x / (x @ x)


def _at(R: np.ndarray, q: float) -> np.ndarray:
    return R[:, int(round(q * (R.shape[1] - 1)))]


# ---- curve features (scale-free, units of s) ----

@_feature
def rel_last(b):
    """rel_last = (v_k - v_1) / s: how far the curve has fallen by the end of the prefix."""
    return b.R[:, -1]


@_feature
def rel_best(b):
    """rel_best = (min_i v_i - v_1) / s: best value so far."""
    return b.R.min(axis=1)


@_feature
def rel_smooth(b):
    """rel_smooth = mean of R over the last m = max(2, round(k / 5)) values: a less noisy last value."""
    m = min(b.k, max(2, int(round(b.k / 5))))
    return b.R[:, -m:].mean(axis=1)


@_feature
def rel_p25(b):
    """rel_p25 = R at index round(0.25 (k-1)): value a quarter into the prefix."""
    return _at(b.R, 0.25)


@_feature
def rel_p50(b):
    """rel_p50 = R at index round(0.5 (k-1)): value half-way through the prefix."""
    return _at(b.R, 0.5)


@_feature
def rel_p75(b):
    """rel_p75 = R at index round(0.75 (k-1)): value three quarters into the prefix."""
    return _at(b.R, 0.75)


@_feature
def gap_best(b):
    """gap_best = (v_k - min_i v_i) / s >= 0: how far the last value sits above the best."""
    return b.R[:, -1] - b.R.min(axis=1)


@_feature
def slope_all(b):
    """slope_all = least-squares slope of R on ln t over the whole prefix."""
    return _slope(b.R, 0, b.k)


@_feature
def slope_recent(b):
    """slope_recent = slope of R on ln t over the second half of the prefix (t > k/2)."""
    return _slope(b.R, b.k // 2, b.k)


@_feature
def curvature(b):
    """curvature = slope_recent - slope over the first half: > 0 when progress slows down."""
    return _slope(b.R, b.k // 2, b.k) - _slope(b.R, 0, (b.k + 1) // 2)


@_feature
def rate_recent(b):
    """rate_recent = (R_k - R_{k-m}) / m, m = max(1, k // 4): recent change per evaluation."""
    if b.k < 2:
        return np.zeros(len(b.n))
    m = max(1, b.k // 4)
    return (b.R[:, -1] - b.R[:, -1 - m]) / m


@_feature
def noise(b):
    """noise = median |d_i - median d| over the second half's steps d_i = R_{i+1} - R_i."""
    d = np.diff(b.R[:, b.k // 2 - 1 if b.k >= 2 else 0:], axis=1)
    if d.shape[1] == 0:
        return np.zeros(len(b.n))
    return np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)


@_feature
def log_horizon(b):
    """log_horizon = ln(n / k): how far the prediction reaches beyond the prefix."""
    return np.log(b.n / b.k)


@_feature
def log_last_ratio(b):
    """log_last_ratio = ln((|v_k| + 1e-12) / (|v_1| + 1e-12)), clipped to +-50: relative fall, log scale."""
    r = np.log((np.abs(b.last) + 1e-12) / (np.abs(b.first) + 1e-12))
    return np.clip(r, -50.0, 50.0)


# ---- cohort features (among the curves of the same task in this call) ----

def _rank01(x: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (0 = lowest); 0.5 for a single value."""
    if len(x) == 1:
        return np.array([0.5])
    return (rankdata(x) - 1.0) / (len(x) - 1.0)


def _cohort(b, column: np.ndarray, how: str) -> np.ndarray:
    out = np.empty(len(column))
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(b.tasks):
        groups.setdefault(t, []).append(i)
    for ix in groups.values():
        x = column[ix]
        if how == "rank":
            out[ix] = _rank01(x)
        else:
            med = np.median(x)
            mad = 1.4826 * np.median(np.abs(x - med))
            out[ix] = 0.0 if mad <= 1e-12 else np.clip((x - med) / mad, -10.0, 10.0)
    return out


@_feature
def cohort_rank_last(b):
    """cohort_rank_last = rank of v_k among its task's curves, in [0, 1] (0 = lowest loss)."""
    return _cohort(b, b.last, "rank")


@_feature
def cohort_z_last(b):
    """cohort_z_last = (v_k - median) / (1.4826 MAD) of its task's last values, clipped to +-10."""
    return _cohort(b, b.last, "z")


@_feature
def cohort_rank_best(b):
    """cohort_rank_best = rank of min_i v_i among its task's curves, in [0, 1]."""
    return _cohort(b, b.cohort["best"], "rank")


@_feature
def cohort_rank_slope(b):
    """cohort_rank_slope = rank of slope_recent among its task's curves, in [0, 1] (0 = falling fastest)."""
    return _cohort(b, b.cohort["slope_raw"], "rank")


# ---- hyperparameters (from Curve.config; neutral defaults documented above) ----

@_feature
def log_lr(b):
    """log_lr = ln(learning_rate)  (default ln 1e-3)."""
    return np.log(b.config["learning_rate"])


@_feature
def dropout(b):
    """dropout = dropout probability  (default 0)."""
    return b.config["dropout"]


@_feature
def n_layer(b):
    """n_layer = number of transformer blocks  (default 4)."""
    return b.config["n_layer"]


@_feature
def log_n_embd(b):
    """log_n_embd = ln(n_embd)  (default ln 128)."""
    return np.log(b.config["n_embd"])


@_feature
def log_n_params(b):
    """log_n_params = ln(parameter count)  (default ln(12 * 4 * 128**2))."""
    return np.log(b.config["n_params"])


COHORT = ("cohort_rank_last", "cohort_z_last", "cohort_rank_best", "cohort_rank_slope")
HYPERPARAMETER_FEATURES = ("log_lr", "dropout", "n_layer", "log_n_embd", "log_n_params")
FEATURE_NAMES = tuple(FEATURES)


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..m with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # boundaries of runs of equal values
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # 1-based average position of each run
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _prefixes(curves: Sequence[Curve], prefix_frac: float):
    """Sanitised prefix values, per curve, with horizons."""
    out = []
    for c in curves:
        k = min(len(c.values), prefix_length(c.n, prefix_frac))
        out.append((sanitise(c.values[:k]), c.n))
    return out


def prefix_anchors(curves: Sequence[Curve], prefix_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(last, s) per curve: the sanitised last prefix value and the curve's scale."""
    pre = _prefixes(curves, prefix_frac)
    return (np.array([v[-1] for v, _ in pre]), np.array([_scale(v) for v, _ in pre]))


def targets(curves: Sequence[Curve], prefix_frac: float) -> np.ndarray:
    """The scale-free target r = (final - last) / s of complete curves (finite, clipped to +-1e6)."""
    last, s = prefix_anchors(curves, prefix_frac)
    final = sanitise(np.array([c.values[-1] for c in curves]))
    with np.errstate(all="ignore"):
        return np.clip((final - last) / s, -1e6, 1e6)


def to_final(r: np.ndarray, last: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Predicted final values from tree outputs r: last + s * r."""
    return last + scale * np.asarray(r, dtype=np.float64)


def feature_matrix(curves: Sequence[Curve], prefix_frac: float,
                   names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """One finite float64 column per feature (all of FEATURES unless ``names``), one row per curve.

    Each curve is seen through its first prefix_length(curve.n, prefix_frac)
    values, or all of them if it has fewer (an early run's prefix).
    """
    with np.errstate(all="ignore"):  # hostile values must not flood the terminal; columns are cleaned below
        return _feature_matrix(curves, prefix_frac, FEATURE_NAMES if names is None else tuple(names))


def _feature_matrix(curves, prefix_frac, names):
    unknown = [nm for nm in names if nm not in FEATURES]
    if unknown:
        raise KeyError(f"unknown features {unknown}; known: {', '.join(FEATURE_NAMES)}")
    m = len(curves)
    cols = {nm: np.zeros(m) for nm in names}
    pre = _prefixes(curves, prefix_frac)
    last = np.array([v[-1] for v, _ in pre])
    best = np.array([v.min() for v, _ in pre])
    slope_raw = np.zeros(m)
    config = {}
    for key, default in NEUTRAL.items():
        vals = np.array([float(c.config.get(key, default)) for c in curves])
        if key in ("learning_rate", "n_embd", "n_params"):
            vals = np.where(vals > 0, vals, default)  # logs of them must exist
        config[key] = vals
    by_k: dict[int, list[int]] = {}
    for i, (v, _) in enumerate(pre):
        by_k.setdefault(len(v), []).append(i)
    for k, ix in by_k.items():
        ix = np.array(ix)
        V = np.stack([pre[i][0] for i in ix])
        s = np.array([_scale(pre[i][0]) for i in ix])
        first = V[:, 0]
        R = np.clip((V - first[:, None]) / s[:, None], -REL_CLIP, REL_CLIP)
        b = _Batch(R=R, n=np.array([pre[i][1] for i in ix], dtype=np.float64), first=first, last=V[:, -1],
                   scale=s, config={key: val[ix] for key, val in config.items()},
                   tasks=[curves[i].task for i in ix])
        slope_raw[ix] = _slope(R, k // 2, k)
        for nm in names:
            if nm not in COHORT:
                cols[nm][ix] = FEATURES[nm].func(b)
    if any(nm in COHORT for nm in names):
        whole = _Batch(R=np.zeros((m, 1)), n=np.ones(m), first=np.zeros(m), last=last, scale=np.ones(m), config={},
                       tasks=[c.task for c in curves], cohort={"best": best, "slope_raw": slope_raw})
        for nm in names:
            if nm in COHORT:
                cols[nm] = FEATURES[nm].func(whole)
    for nm in names:  # belt and braces: every column finite
        cols[nm] = np.nan_to_num(cols[nm], nan=0.0, posinf=REL_CLIP, neginf=-REL_CLIP)
    return cols
