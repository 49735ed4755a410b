"""Named, documented features of a learning-curve prefix, and the scale-free target.

A curve is seen through its prefix v_1..v_k (``curves.prefix_length``); the
horizon n is known. Before anything else the prefix is *sanitised*: NaN and
+inf become +1e18 (a diverged run is a blow-up), -inf becomes -1e18, and
values are clipped to +-1e18. Curve features are then computed on

    R_i = clip((v_i - v_1) / s, -1000, 1000),    s = |v_1|  (the curve's own scale;
          max |v| when v_1 is 0, 1 when the whole prefix is 0)

so they are *scale-free*: a binary classifier at 0.69 and a language model at
3.3 that fall by the same fraction look alike, and a 1e18 blow-up is a bounded
1000. Time is the evaluation index t = 1..k; slopes are in log-step space
(least squares of R on ln t). At k = 4 (the shortest prefix) no curve feature
is constant or a copy of another: values inside the prefix are read at
positions 1/3 and 2/3 of the way (R_2 and R_3 at k = 4).

Four more families, each present only where the curves carry what it needs
(``available``):

- **training loss** (``Curve.train_values``): the mean training loss over the
  prefix (TSE, the sum of training losses, which ranks runs better than early
  validation loss; a mean so it does not grow with k) and the
  train-validation gap at the cut, both in units of s;
- **schedule** (``x`` and the config keys ``max_iters`` and
  ``warmup_iters``: gpnas knows its own schedule): the fraction of the
  schedule done at the cut and the learning-rate multiplier there (linear
  warm-up, cosine decay to 1/10);
- **cohort**: a curve's rank among the curves of the same task passed in the
  same call (a search always sees many at once; fitting
  and predicting both compute them on the call's curves);
- **config**: every numeric key of ``Curve.config`` present in all curves,
  named by its key, as ``log10_<key>`` where its values are positive and span
  a decade or more.

The predictors' target is scale-free too: r = (final - last) / S, so
final = last + S * r (``targets`` / ``to_final``), where S is the median s
of the curve's task in the call (``prefix_anchors``). Every column
``feature_matrix`` returns is finite.
"""

from __future__ import annotations

import keyword
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gpnas.errors import DataError
from gpnas.predict.curves import Curve, group_by_task, prefix_length

BIG = 1e18        # stand-in for a blown-up or diverged loss
REL_CLIP = 1e3    # bound on scale-free values
LOG_PREFIX = "log10_"
SCHEDULE_KEYS = ("max_iters", "warmup_iters")
MIN_LR_RATIO = 0.1  # the trainer's cosine decay ends at lr / 10


@dataclass(frozen=True)
class Feature:
    name: str
    func: Callable[["_Batch"], np.ndarray]
    formula: str   # the docstring's first line: name = formula
    needs: str     # "curve", "train", "schedule" or "cohort"


FEATURES: dict[str, Feature] = {}


def _feature(needs: str):
    def register(func):
        FEATURES[func.__name__] = Feature(func.__name__, func, func.__doc__.strip().splitlines()[0], needs)
        return func
    return register


@dataclass
class _Batch:
    """Curves with the same prefix length k, as arrays (m curves)."""
    V: np.ndarray        # (m, k) sanitised prefix values
    R: np.ndarray        # (m, k) scale-free prefix values
    n: np.ndarray        # (m,) horizons
    scale: np.ndarray    # (m,) s
    T: np.ndarray | None = None       # (m, k) training losses, scale-free like R
    x_cut: np.ndarray | None = None   # (m,) step of the last prefix evaluation
    config: dict = field(default_factory=dict)

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
    """R at fractional position q of the prefix (0 = first, 1 = last), linearly interpolated."""
    pos = q * (R.shape[1] - 1)
    lo = int(math.floor(pos))
    hi = min(lo + 1, R.shape[1] - 1)
    w = pos - lo
    return (1 - w) * R[:, lo] + w * R[:, hi]


# ---- curve features (scale-free, units of s) ----

@_feature("curve")
def rel_last(b):
    """rel_last = (v_k - v_1) / s: how far the curve has fallen by the end of the prefix."""
    return b.R[:, -1]


@_feature("curve")
def rel_best(b):
    """rel_best = (min_i v_i - v_1) / s: best value so far."""
    return b.R.min(axis=1)


@_feature("curve")
def rel_smooth(b):
    """rel_smooth = mean of R over the last m = max(2, round(k / 5)) values: a less noisy last value."""
    m = min(b.k, max(2, int(round(b.k / 5))))
    return b.R[:, -m:].mean(axis=1)


@_feature("curve")
def rel_third(b):
    """rel_third = R a third of the way through the prefix (interpolated; R_2 at k = 4)."""
    return _at(b.R, 1 / 3)


@_feature("curve")
def rel_two_thirds(b):
    """rel_two_thirds = R two thirds of the way through the prefix (interpolated; R_3 at k = 4)."""
    return _at(b.R, 2 / 3)


@_feature("curve")
def gap_best(b):
    """gap_best = (v_k - min_i v_i) / s >= 0: how far the last value sits above the best."""
    return b.R[:, -1] - b.R.min(axis=1)


@_feature("curve")
def slope_all(b):
    """slope_all = least-squares slope of R on ln t over the whole prefix."""
    return _slope(b.R, 0, b.k)


@_feature("curve")
def slope_recent(b):
    """slope_recent = slope of R on ln t over the second half of the prefix (t > k/2)."""
    return _slope(b.R, b.k // 2, b.k)


@_feature("curve")
def curvature(b):
    """curvature = slope_recent - slope over the first half: > 0 when progress slows down."""
    return _slope(b.R, b.k // 2, b.k) - _slope(b.R, 0, (b.k + 1) // 2)


@_feature("curve")
def rate_recent(b):
    """rate_recent = (R_k - R_{k-m}) / m, m = max(1, k // 4): recent change per evaluation."""
    if b.k < 2:
        return np.zeros(len(b.n))
    m = max(1, b.k // 4)
    return (b.R[:, -1] - b.R[:, -1 - m]) / m


@_feature("curve")
def noise(b):
    """noise = median |d_i - median d| over the second half's steps d_i = R_{i+1} - R_i."""
    d = np.diff(b.R[:, b.k // 2 - 1 if b.k >= 2 else 0:], axis=1)
    if d.shape[1] == 0:
        return np.zeros(len(b.n))
    return np.median(np.abs(d - np.median(d, axis=1, keepdims=True)), axis=1)


@_feature("curve")
def log_horizon(b):
    """log_horizon = ln(n / k): how far the prediction reaches beyond the prefix."""
    return np.log(b.n / b.k)


# ---- training loss (Curve.train_values; units of s, relative to v_1 like R) ----

@_feature("train")
def train_mean(b):
    """train_mean = mean_i (u_i - v_1) / s over the prefix's training losses u_i (TSE / k)."""
    return b.T.mean(axis=1)


@_feature("train")
def train_gap(b):
    """train_gap = (v_k - u_k) / s: validation minus training loss at the cut (overfitting > 0)."""
    return b.R[:, -1] - b.T[:, -1]


# ---- schedule (x and config max_iters, warmup_iters) ----

@_feature("schedule")
def sched_done(b):
    """sched_done = x_k / max_iters: the fraction of the learning-rate schedule done at the cut."""
    return b.x_cut / np.maximum(b.config["max_iters"], 1.0)


@_feature("schedule")
def sched_lr(b):
    """sched_lr = lr(x_k) / peak lr: linear warm-up, then cosine decay to 1/10 (the trainer's schedule)."""
    warm, total, step = b.config["warmup_iters"], np.maximum(b.config["max_iters"], 1.0), b.x_cut
    progress = np.clip((step - warm) / np.maximum(total - warm, 1.0), 0.0, 1.0)
    decay = MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + np.cos(math.pi * progress))
    return np.where(step < warm, (step + 1) / np.maximum(warm + 1, 1.0), decay)


# ---- cohort (among the curves of the same task in this call) ----
# computed in a second pass over all curves; their inputs are the named columns

# (a robust z-score of the last value was tried and dropped: its scale depends on the
# cohort's spread, so a formula using it reordered a cohort tighter than the one it was
# fitted on; ranks in [0, 1] do not have that failure)
COHORT_OF = {"cohort_rank_last": ("rel_last_raw", "rank"),
             "cohort_rank_best": ("best_raw", "rank"), "cohort_rank_slope": ("slope_recent", "rank"),
             "cohort_rank_train": ("train_mean_raw", "rank")}
for _name, _doc in {
        "cohort_rank_last": "cohort_rank_last = rank of v_k among its task's curves, in [0, 1] (0 = lowest loss).",
        "cohort_rank_best": "cohort_rank_best = rank of min_i v_i among its task's curves, in [0, 1].",
        "cohort_rank_slope": "cohort_rank_slope = rank of slope_recent among its task's curves (0 = falling fastest).",
        "cohort_rank_train": "cohort_rank_train = rank of the mean training loss among its task's curves."}.items():
    FEATURES[_name] = Feature(_name, None, _doc, "cohort")

CURVE_FEATURES = tuple(n for n, f in FEATURES.items() if f.needs == "curve")
FEATURE_NAMES = tuple(FEATURES)  # the fixed (non-config) features


def rankdata(x: np.ndarray) -> np.ndarray:
    """Ranks 1..m with ties given their average rank (as scipy.stats.rankdata)."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    starts = np.r_[0, np.flatnonzero(xs[1:] != xs[:-1]) + 1]   # runs of equal values
    ends = np.r_[starts[1:], len(xs)]
    avg = (starts + ends + 1) / 2.0  # 1-based average position of each run
    ranks = np.empty(len(x))
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def _rank01(x: np.ndarray) -> np.ndarray:
    if len(x) == 1:
        return np.array([0.5])
    return (rankdata(x) - 1.0) / (len(x) - 1.0)


def _cohort(tasks: Sequence[str], column: np.ndarray, how: str) -> np.ndarray:
    out = np.empty(len(column))
    groups: dict[str, list[int]] = {}
    for i, t in enumerate(tasks):
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


# ---- config features: named by their key ----

def config_name(key: str, log: bool) -> str:
    """The terminal name of a config key: an identifier, ``log10_`` first when log-scaled."""
    name = re.sub(r"\W", "_", key)
    if not name or name[0].isdigit() or keyword.iskeyword(name):
        name = "cfg_" + name
    if name in FEATURES:
        name = "cfg_" + name
    return (LOG_PREFIX + name) if log else name


@dataclass(frozen=True)
class Available:
    """What ``available`` found: feature names to use and the config keys it left out."""

    names: tuple[str, ...]
    config_keys: dict          # feature name -> config key it reads
    left_out: tuple[str, ...]  # config keys not numeric in every curve
    constant: tuple[str, ...]  # features with one value over these curves (no information)


def config_columns(keys_by_name: dict, curves: Sequence[Curve]) -> dict[str, np.ndarray]:
    """The config feature columns; DataError naming the first key a curve lacks."""
    out = {}
    for name, key in keys_by_name.items():
        values = np.empty(len(curves))
        for i, c in enumerate(curves):
            if key not in c.config:
                raise DataError(f"curve {c.task}/{c.config_id or i} has no config key {key!r}, "
                                f"which the predictor reads; give every curve {key!r} or refit without it")
            values[i] = float(c.config[key])
        if name.startswith(LOG_PREFIX) and key != name:
            values = np.log10(np.maximum(values, 1e-300))
        out[name] = values
    return out


def available(curves: Sequence[Curve], prefix_frac: float, drop_constant: bool = True) -> Available:
    """The features these curves support: curve features always; training-loss,
    schedule and cohort features where every curve carries what they need;
    config keys numeric in every curve (``log10_`` when positive over a decade
    or more). Features constant over the curves are left out when asked."""
    curves = list(curves)
    has_train = bool(curves) and all(c.train_values is not None for c in curves)
    has_schedule = bool(curves) and all(c.x is not None and all(k in c.config for k in SCHEDULE_KEYS)
                                        for c in curves)
    names = [n for n, f in FEATURES.items()
             if f.needs == "curve" or (f.needs == "train" and has_train)
             or (f.needs == "schedule" and has_schedule)
             or (f.needs == "cohort" and (n != "cohort_rank_train" or has_train))]
    keys = sorted({k for c in curves for k in c.config})
    common = [k for k in keys if all(k in c.config for c in curves)]
    left_out = tuple(k for k in keys if k not in common)
    config_keys = {}
    for key in common:
        if key in SCHEDULE_KEYS and has_schedule:
            continue  # read by the schedule features
        v = np.array([c.config[key] for c in curves], dtype=np.float64)
        log = bool(np.all(v > 0) and v.max() >= 10 * v.min())
        config_keys[config_name(key, log)] = key
    names += list(config_keys)
    constant = ()
    if drop_constant and curves:
        cols = feature_matrix(curves, prefix_frac, names, config_keys)
        constant = tuple(n for n in names if np.ptp(cols[n]) <= 1e-12)
        names = [n for n in names if n not in constant]
        config_keys = {n: k for n, k in config_keys.items() if n in names}
    return Available(tuple(names), config_keys, left_out, constant)


def _prefixes(curves: Sequence[Curve], prefix_frac: float):
    """Sanitised prefix values per curve, with horizons."""
    out = []
    for c in curves:
        k = min(len(c.values), prefix_length(c.n, prefix_frac))
        out.append((sanitise(c.values[:k]), c.n))
    return out


def prefix_anchors(curves: Sequence[Curve], prefix_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """(last, S) per curve: the sanitised last prefix value, and the target's scale S,
    the median of the curve scales s among the curves of its task in this call.

    One scale per task keeps ``last + S * r`` order-preserving: a correction
    shared by every curve (an offset) moves them all alike instead of
    reordering curves that started at different values.
    """
    pre = _prefixes(curves, prefix_frac)
    last = np.array([v[-1] for v, _ in pre])
    own = np.array([_scale(v) for v, _ in pre])
    scale = np.empty(len(pre))
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(curves):
        groups.setdefault(c.task, []).append(i)
    for ix in groups.values():
        scale[ix] = float(np.median(own[ix]))
    return last, scale


def targets(curves: Sequence[Curve], prefix_frac: float) -> np.ndarray:
    """The scale-free target r = (final - last) / s of complete curves (finite, clipped to +-1e6)."""
    last, s = prefix_anchors(curves, prefix_frac)
    final = sanitise(np.array([c.values[-1] for c in curves]))
    with np.errstate(all="ignore"):
        return np.clip((final - last) / s, -1e6, 1e6)


def to_final(r: np.ndarray, last: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Predicted final values from scale-free outputs r: last + s * r."""
    return last + scale * np.asarray(r, dtype=np.float64)


def feature_matrix(curves: Sequence[Curve], prefix_frac: float, names: Sequence[str] | None = None,
                   config_keys: dict | None = None, cohort: dict | None = None) -> dict[str, np.ndarray]:
    """One finite float64 column per named feature, one row per curve.

    ``cohort`` (``cohort_reference``): the cohort features rank each curve against
    that fixed reference of its task (a mid-rank fraction in [0, 1]) instead of among
    the curves of this call.

    ``names`` defaults to the curve features; a name that is no fixed feature is
    a config feature (``config_keys`` maps it to its key; by default the name
    itself, or the name without ``log10_`` for a log-scaled key). Each curve is
    seen through its first prefix_length(curve.n, prefix_frac) values, or all of
    them if it has fewer (an early run's prefix). A curve lacking what a
    feature reads is a DataError naming it.
    """
    names = CURVE_FEATURES if names is None else tuple(names)
    keys = dict(config_keys or {})
    for nm in names:
        if nm not in FEATURES and nm not in keys:
            keys[nm] = nm[len(LOG_PREFIX):] if nm.startswith(LOG_PREFIX) else nm
    with np.errstate(all="ignore"):  # hostile values must not flood the terminal; columns are cleaned below
        return _feature_matrix(list(curves), prefix_frac, names, keys, cohort)


def cohort_reference(curves: Sequence[Curve], prefix_frac: float, train: bool = True) -> dict:
    """task -> {source: sorted finite values} of the quantities the cohort features rank
    (``COHORT_OF``), over ``curves`` seen through their prefixes: a reference a curve can be
    ranked against whatever else is passed with it (a search's every started config).
    ``train``: also the mean training loss (every curve must then carry training values)."""
    raw: dict = {}
    names = tuple(n for n in COHORT_OF if train or n != "cohort_rank_train")
    with np.errstate(all="ignore"):
        _feature_matrix(list(curves), prefix_frac, names, {}, None, raw)
    out: dict = {}
    for task, ix in group_by_task(list(curves)).items():
        out[task] = {}
        for name in names:
            source = COHORT_OF[name][0]
            values = np.asarray(raw[source], dtype=np.float64)[ix]
            out[task][source] = np.sort(values[np.isfinite(values)])
    return out


def _against(tasks: Sequence[str], column: np.ndarray, reference: dict, source: str) -> np.ndarray:
    """Each value's rank among its task's reference values as ``_cohort`` ranks within a call
    ((average rank - 1) / (count - 1), in [0, 1]), the value counted once: a member of the
    reference is ranked among it, any other as if added to it. Within the call (``_cohort``)
    for a task the reference lacks."""
    out = _cohort(tasks, column, "rank")
    for task in set(tasks):
        ref = (reference.get(task) or {}).get(source)
        if ref is None or not len(ref):
            continue
        ix = np.array([i for i, t in enumerate(tasks) if t == task])
        x = column[ix]
        left, right = np.searchsorted(ref, x, "left"), np.searchsorted(ref, x, "right")
        member = right > left
        n = len(ref) - member.astype(float)        # the others: the reference without the value itself
        out[ix] = np.where(n > 0, (left + np.where(member, (right - left - 1) / 2.0, 0.0)) / np.maximum(n, 1), 0.5)
    return out


def _feature_matrix(curves, prefix_frac, names, keys, cohort=None, raw_out=None):
    m = len(curves)
    fixed = [nm for nm in names if nm in FEATURES]
    needs = {FEATURES[nm].needs for nm in fixed} | {FEATURES[COHORT_OF[nm][0]].needs
                                                    for nm in fixed if nm in COHORT_OF
                                                    and COHORT_OF[nm][0] in FEATURES}
    if "cohort_rank_train" in names:
        needs.add("train")
    for need, what in (("train", "train_values"), ("schedule", "x and config max_iters, warmup_iters")):
        if need in needs:
            lacking = [c for c in curves if (c.train_values is None if need == "train" else
                       (c.x is None or not all(k in c.config for k in SCHEDULE_KEYS)))]
            if lacking:
                c = lacking[0]
                raise DataError(f"curve {c.task}/{c.config_id} has no {what}, which the predictor reads "
                                f"({', '.join(nm for nm in fixed if FEATURES[nm].needs == need) or 'cohort'}); "
                                "give every curve that or refit without it")
    cols = {nm: np.zeros(m) for nm in fixed}
    raw = {"rel_last_raw": np.zeros(m), "best_raw": np.zeros(m), "slope_recent": np.zeros(m),
           "train_mean_raw": np.zeros(m)}
    pre = _prefixes(curves, prefix_frac)
    raw["rel_last_raw"] = np.array([v[-1] for v, _ in pre])
    raw["best_raw"] = np.array([v.min() for v, _ in pre])
    by_k: dict[int, list[int]] = {}
    for i, (v, _) in enumerate(pre):
        by_k.setdefault(len(v), []).append(i)
    schedule = "schedule" in needs
    for k, ix in by_k.items():
        ix = np.array(ix)
        V = np.stack([pre[i][0] for i in ix])
        s = np.array([_scale(pre[i][0]) for i in ix])
        first = V[:, 0]
        R = np.clip((V - first[:, None]) / s[:, None], -REL_CLIP, REL_CLIP)
        T = None
        if "train" in needs:
            U = np.stack([sanitise(curves[i].train_values[:k]) for i in ix])
            T = np.clip((U - first[:, None]) / s[:, None], -REL_CLIP, REL_CLIP)
            raw["train_mean_raw"][ix] = U.mean(axis=1)
        b = _Batch(V=V, R=R, n=np.array([pre[i][1] for i in ix], dtype=np.float64), scale=s, T=T,
                   x_cut=np.array([curves[i].x[k - 1] for i in ix]) if schedule else None,
                   config={key: np.array([float(curves[i].config[key]) for i in ix]) for key in SCHEDULE_KEYS}
                   if schedule else {})
        raw["slope_recent"][ix] = _slope(R, k // 2, k)
        for nm in fixed:
            if FEATURES[nm].needs != "cohort":
                cols[nm][ix] = FEATURES[nm].func(b)
    tasks = [c.task for c in curves]
    if raw_out is not None:
        raw_out.update(raw)
    for nm in fixed:
        if FEATURES[nm].needs == "cohort":
            source, how = COHORT_OF[nm]
            cols[nm] = _cohort(tasks, raw[source], how) if cohort is None else _against(tasks, raw[source],
                                                                                         cohort, source)
    config = {nm: keys[nm] for nm in names if nm not in FEATURES}
    cols.update(config_columns(config, curves))
    for nm in names:  # belt and braces: every column finite
        cols[nm] = np.nan_to_num(cols[nm], nan=0.0, posinf=REL_CLIP, neginf=-REL_CLIP)
    return {nm: cols[nm] for nm in names}
