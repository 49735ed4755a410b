"""How a predictor tree is scored: linear scaling and the objective a search needs.

A tree's raw output is never used as it is. Its root is split into *genes*,
the terms joined by ``add`` and ``sub`` at the top (``add(g1, sub(g2, g3))``
has three), and the scale-free target r = (final - last) / s is fitted as

    r = a0 + b1 g1 + ... + bG gG         (least squares on the training curves)

(linear scaling, Keijzer 2003, here multi-gene). So a constant tree is the
last value plus a fitted offset, one feature is a one-variable regression,
and evolution is paid only for explaining how curves differ. The fitted r is
clipped to the range the training targets span, widened by half that span
(and never beyond +-1): a prediction stays within what the prefix and the
training curves make plausible, and a blown-up curve cannot send it anywhere.
Targets are clipped to +-1 before the fit, so a blown-up training curve
weighs no more than a curve that doubled its loss.

The objective (lower is better), per task and then averaged over tasks:

    error          mean capped |predicted final - final| / s  (cap 0.1: a blow-up costs 0.1)
    + RANK_WEIGHT  (1 - Spearman of predicted vs true finals)
    + REGRET_WEIGHT  regret: mean true final of the predicted top k minus the
                   mean of the true top k, / s   (k = max(1, round(0.1 n)))

The error keeps values right; the other two terms are what a search uses a
prediction for: the order of the curves and the quality of the top. Tasks
with fewer than 3 curves are left out of the rank terms.

``Problem`` holds the columns, targets and groups once, so scoring one tree is
a compiled numpy closure per gene (cached by text) and a small least-squares
solve: thousands of trees per second on a few hundred curves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpnas.predict import trees
from gpnas.predict.curves import Curve, group_by_task
from gpnas.predict.features import feature_matrix, prefix_anchors, sanitise, targets

ERROR_CAP = 0.1
RANK_WEIGHT = 0.5
REGRET_WEIGHT = 1.0
R_BOUND = 1.0
MAX_GENES = 4
RIDGE = 1e-6      # relative Tikhonov term: keeps collinear genes' coefficients finite
LINEAR_RIDGE = 0.3  # the linear model's relative penalty on its standardised features (set once, not tuned)
MIN_RANK_GROUP = 3
# A scaling read from a file has coefficients of at most this magnitude: with genes clipped to
# +-OUTPUT_CLIP and features to ranges of at most MAX_COEF, a prediction stays finite.
MAX_COEF = 1e100


@dataclass
class Problem:
    """Curves seen through their prefix, as arrays a tree is scored on."""

    curves: list
    columns: dict          # feature name -> (m,) array
    y: np.ndarray          # (m,) scale-free targets, clipped to +-R_BOUND
    last: np.ndarray       # (m,) last prefix value
    scale: np.ndarray      # (m,) s
    finals: np.ndarray     # (m,) true final values (sanitised)
    groups: list           # per task: row indices

    def __post_init__(self):
        # what the rank terms need, once: each row's group, its true rank, each group's true top k
        self.gid = np.full(self.m, -1, dtype=np.int64)
        ranked = [g for g in self.groups if len(g) >= MIN_RANK_GROUP]
        for j, g in enumerate(ranked):
            self.gid[g] = j
        self.n_ranked = len(ranked)
        self.sizes = np.array([len(g) for g in ranked], dtype=np.float64)
        self.k = np.array([top_k(len(g)) for g in ranked], dtype=np.int64)
        self.truth = np.zeros(self.m)       # centred, normalised true ranks within the group
        self.top_true = np.zeros(self.n_ranked)
        self.group_scale = np.ones(self.n_ranked)
        for j, g in enumerate(ranked):
            r = _ranks(self.finals[g])
            r = r - r.mean()
            norm = math.sqrt(float(r @ r))
            self.truth[g] = r / norm if norm > 0 else 0.0
            self.top_true[j] = float(np.mean(np.sort(self.finals[g])[: self.k[j]]))
            self.group_scale[j] = float(np.mean(self.scale[g]))
        self.in_rank = self.gid >= 0

    @classmethod
    def build(cls, curves: list[Curve], prefix_frac: float, names, config_keys=None, cohort=None) -> "Problem":
        """``cohort``: a ``features.cohort_reference`` the cohort features rank against."""
        curves = list(curves)
        last, scale = prefix_anchors(curves, prefix_frac)
        finals = sanitise(np.array([c.values[-1] for c in curves], dtype=np.float64))
        return cls(curves, feature_matrix(curves, prefix_frac, names, config_keys, cohort),
                   np.clip(targets(curves, prefix_frac), -R_BOUND, R_BOUND), last, scale, finals,
                   [ix for ix in group_by_task(curves).values()])

    @property
    def m(self) -> int:
        return len(self.y)

    def rows(self, ix) -> "Problem":
        """The same problem on a subset of rows (a cross-validation fold); groups follow."""
        ix = np.asarray(ix, dtype=np.int64)
        where = {int(i): j for j, i in enumerate(ix)}
        groups = [np.array([where[int(i)] for i in g if int(i) in where], dtype=np.int64) for g in self.groups]
        return Problem([self.curves[i] for i in ix], {k: v[ix] for k, v in self.columns.items()},
                       self.y[ix], self.last[ix], self.scale[ix], self.finals[ix],
                       [g for g in groups if len(g)])


# ---- genes and linear scaling ----

def genes(tree) -> list:
    """The tree's genes: maximal subtrees joined by add/sub at the root (at most
    MAX_GENES; the remainder is kept whole as the last gene)."""
    out, stack = [], [tree]
    while stack:
        t = stack.pop(0)
        if t[0].name in ("add", "sub") and len(out) + len(stack) + 2 <= MAX_GENES:
            left = t.searchSubtree(1)
            right = t.searchSubtree(left.stop)
            stack[:0] = [trees.Tree(t[left]), trees.Tree(t[right])]
        else:
            out.append(t)
    return out


_COMPILED: dict = {}
_GENES: dict = {}
CACHE_LIMIT = 50000


def compiled(tree, pset):
    """Each distinct (sub)tree compiled once per process (genes recur across trees)."""
    key = (id(pset), str(tree))
    fn = _COMPILED.get(key)
    if fn is None:
        if len(_COMPILED) > CACHE_LIMIT:
            _COMPILED.clear()
        fn = _COMPILED[key] = trees.compile_tree(tree, pset)
    return fn


def gene_functions(tree, pset, text: str | None = None) -> tuple:
    """The genes of a tree as (their texts, their compiled functions), split and looked up
    once per distinct tree (``text``: the tree's ``str``, where the caller has it already)."""
    key = (id(pset), str(tree) if text is None else text)
    found = _GENES.get(key)
    if found is None:
        if len(_GENES) > CACHE_LIMIT:
            _GENES.clear()
        parts = genes(tree)
        found = _GENES[key] = (tuple((id(pset), str(g)) for g in parts), tuple(compiled(g, pset) for g in parts))
    return found


_OUTPUTS: dict = {}   # id(columns) -> (columns, {gene key: its output on them}); a few column sets


def gene_matrix(tree, pset, columns, text: str | None = None) -> np.ndarray:
    """(G, m) outputs of the tree's genes on the feature columns. A gene met before on the
    same columns (the same dict: a daughter keeps most of her parents' genes) is not
    computed again."""
    keys, fns = gene_functions(tree, pset, text)
    slot = _OUTPUTS.get(id(columns))
    if slot is None or slot[0] is not columns:      # the dict is held, so its id is not reused
        if len(_OUTPUTS) >= 8:
            _OUTPUTS.clear()
        slot = _OUTPUTS[id(columns)] = (columns, {})
    known = slot[1]
    if len(known) > CACHE_LIMIT:
        known.clear()
    rows = []
    for key, fn in zip(keys, fns):
        out = known.get(key)
        if out is None:
            out = known[key] = fn(columns)
        rows.append(out)
    return np.stack(rows)


def linear_matrix(columns: dict, names) -> np.ndarray:
    """(p, m) the features themselves (finite columns, ``features.feature_matrix``): the linear model's genes."""
    return np.stack([columns[n] for n in names])


@dataclass(frozen=True)
class Scaling:
    """r = clip(a0 + b . g, lo, hi): the fitted linear map of a tree's genes."""

    coef: tuple            # (a0, b1, ..., bG)
    lo: float = -R_BOUND
    hi: float = R_BOUND

    def apply(self, G: np.ndarray) -> np.ndarray:
        c = np.asarray(self.coef)
        r = c[0] + c[1:] @ G if G.shape[0] == len(c) - 1 else np.full(G.shape[1], c[0])
        return np.clip(r, self.lo, self.hi)  # genes are finite (compile_tree), so r is

    def to_dict(self) -> dict:
        return {"coef": [float(c) for c in self.coef], "lo": float(self.lo), "hi": float(self.hi)}

    @classmethod
    def from_dict(cls, d) -> "Scaling":
        coef = tuple(float(c) for c in d["coef"])
        lo, hi = float(d["lo"]), float(d["hi"])
        if not coef or not all(math.isfinite(c) for c in (*coef, lo, hi)) or lo > hi:
            raise ValueError("a scaling needs finite coefficients and lo <= hi")
        if max(abs(c) for c in coef) > MAX_COEF:
            raise ValueError(f"a scaling coefficient of {max(coef, key=abs):g} is beyond the limit of +-{MAX_COEF:g} "
                             "(a fit never makes one; the file was edited or damaged)")
        return cls(coef, lo, hi)


def output_range(y: np.ndarray) -> tuple[float, float]:
    """The training targets' range widened by half its span, within +-R_BOUND."""
    if len(y) == 0:
        return -R_BOUND, R_BOUND
    lo, hi = float(np.min(y)), float(np.max(y))
    pad = 0.5 * (hi - lo) + 1e-3
    return max(-R_BOUND, lo - pad), min(R_BOUND, hi + pad)


def _solve(G: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> tuple[float, np.ndarray]:
    """Least squares of y on [1, G] with the penalty ``ridge * m * |b|^2`` on the
    standardised genes (constant genes dropped; the default is a tiny ridge that
    only keeps collinear genes finite)."""
    m = len(y)                                                 # means as sums / m: the hot path of scoring
    mean = G.sum(axis=1) / m
    Gc = G - mean[:, None]
    spread = np.sqrt((Gc * Gc).sum(axis=1) / m)
    live = spread > 1e-9 * (1.0 + np.abs(mean))
    b = np.zeros(G.shape[0])
    y_mean = y.sum() / m
    if live.any():
        Z = Gc[live] / spread[live, None]                      # standardised genes (G', m)
        A = Z @ Z.T + ridge * m * np.eye(int(live.sum()))
        with np.errstate(all="ignore"):
            w = np.linalg.solve(A, Z @ (y - y_mean))
        if np.all(np.isfinite(w)):
            b[live] = w / spread[live]
    a0 = float(y_mean - b @ mean)
    if not math.isfinite(a0):
        return float(y_mean), np.zeros(G.shape[0])
    return a0, b


def _median(x: np.ndarray) -> float:
    """``np.median`` of a 1-D array (NaN if any value is), without its generality's overhead."""
    n, h = len(x), len(x) // 2
    if np.isnan(x).any():
        return math.nan
    if n % 2:
        return float(np.partition(x, h)[h])
    p = np.partition(x, (h - 1, h))
    return float((p[h - 1] + p[h]) / 2)


def fit_scaling(G: np.ndarray, y: np.ndarray, ridge: float = RIDGE) -> Scaling:
    """Least squares of y on [1, genes], refitted once without the rows whose
    residual is an outlier (beyond 3 robust standard deviations): a few
    blown-up or odd curves must not decide the map for the rest."""
    lo, hi = output_range(y)
    if len(y) == 0:
        return Scaling((0.0,) + (0.0,) * G.shape[0], lo, hi)
    a0, b = _solve(G, y, ridge)
    with np.errstate(all="ignore"):
        spread = np.abs(y - a0 - b @ G)               # least-squares residuals are centred
    keep = spread <= max(3 * 1.4826 * _median(spread), 1e-3)
    if 3 <= keep.sum() < len(y):
        a0, b = _solve(G[:, keep], y[keep], ridge)
    return Scaling((a0, *map(float, b)), lo, hi)


def feature_ranges(columns: dict) -> dict:
    """Each feature's [min, max] over the training curves."""
    return {name: (float(np.min(v)), float(np.max(v))) for name, v in columns.items() if len(v)}


def clip_columns(columns: dict, ranges: dict) -> dict:
    """Features clipped to the ranges the formula was fitted on: a formula is never
    extrapolated beyond what it has seen (a curve far outside the training curves
    gets the prediction of the nearest one it resembles, not a runaway value)."""
    return {name: np.clip(v, *ranges[name]) if name in ranges else v for name, v in columns.items()}


# ---- the objective ----

def _ranks(x: np.ndarray) -> np.ndarray:
    r = np.empty(len(x))
    r[np.argsort(x, kind="mergesort")] = np.arange(len(x))
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (ties broken by order); 0 where either side is constant."""
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra, rb = _ranks(a), _ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    return float(ra @ rb / math.sqrt(float(ra @ ra) * float(rb @ rb)))


def top_k(n: int) -> int:
    return max(1, int(round(0.1 * n)))


def objective_parts(pred_finals: np.ndarray, problem: Problem) -> dict:
    """error, spearman and regret (in units of S) of predicted finals, averaged over tasks.

    Vectorised over tasks: one lexsort ranks the predictions within every task.
    """
    with np.errstate(all="ignore"):
        err = np.minimum(np.abs(pred_finals - problem.finals) / problem.scale, ERROR_CAP)
    error = float(np.mean(np.where(np.isnan(err), ERROR_CAP, err)))
    if problem.n_ranked == 0:
        return {"error": error, "spearman": math.nan, "regret": math.nan}
    rows = np.flatnonzero(problem.in_rank)
    gid, pred = problem.gid[rows], np.nan_to_num(pred_finals[rows], nan=np.inf)
    order = rows[np.lexsort((pred, gid))]               # by task, then by prediction
    g_sorted = problem.gid[order]
    starts = np.searchsorted(g_sorted, np.arange(problem.n_ranked))
    within = np.arange(len(order)) - starts[g_sorted]   # rank of the prediction within its task
    centred = within - (problem.sizes[g_sorted] - 1) / 2.0
    norm = np.sqrt(problem.sizes * (problem.sizes ** 2 - 1) / 12.0)   # sqrt(sum of centred ranks^2)
    rho = np.bincount(g_sorted, centred * problem.truth[order], problem.n_ranked) / norm
    top = within < problem.k[g_sorted]
    top_pred = np.bincount(g_sorted[top], problem.finals[order][top], problem.n_ranked) / problem.k
    regret = (top_pred - problem.top_true) / problem.group_scale
    return {"error": error, "spearman": float(np.mean(rho)), "regret": float(np.mean(regret))}


def objective(pred_finals: np.ndarray, problem: Problem) -> float:
    parts = objective_parts(pred_finals, problem)
    value = parts["error"]
    if not math.isnan(parts["spearman"]):
        value += RANK_WEIGHT * (1.0 - parts["spearman"]) + REGRET_WEIGHT * min(parts["regret"], 1.0)
    return value


def finals_of(r: np.ndarray, problem: Problem) -> np.ndarray:
    return problem.last + problem.scale * r


def score_tree(tree, pset, problem: Problem, text: str | None = None) -> tuple[float, Scaling, np.ndarray]:
    """(objective, fitted scaling, scaled outputs r on the problem's curves) of one tree."""
    G = gene_matrix(tree, pset, problem.columns, text)
    scaling = fit_scaling(G, problem.y)
    r = scaling.apply(G)
    return objective(finals_of(r, problem), problem), scaling, r


def loo_finals(G: np.ndarray, problem: Problem, ridge: float = RIDGE) -> np.ndarray:
    """Each curve's predicted final by the scaling fitted on all the other curves (leave one out)."""
    r = np.empty(problem.m)
    everything = np.arange(problem.m)
    for i in everything:
        rest = np.delete(everything, i)
        r[i] = fit_scaling(G[:, rest], problem.y[rest], ridge).apply(G[:, i:i + 1])[0]
    return finals_of(r, problem)


def in_standard_errors(gain: float, se: float) -> float:
    """A gain over its standard error; +-inf for a gain with no spread at all (0 counts as no gain)."""
    return gain / se if se > 0 else (math.inf if gain > 0 else -math.inf)


def rank_gain_z(pred_finals: np.ndarray, problem: Problem, seed: int = 0, draws: int = 200) -> float:
    """How much better predictions rank the curves than their last values do, in
    standard errors: the Spearman difference (within each task of at least
    MIN_RANK_GROUP curves, averaged over tasks) divided by its bootstrap standard
    error (curves resampled within their task, both rankings on the same draw).
    The predictions must be out of sample (``loo_finals``) for this to mean anything."""
    groups = [np.asarray(g) for g in problem.groups if len(g) >= MIN_RANK_GROUP]
    if not groups:
        return -math.inf

    def gain(draw):
        return float(np.mean([spearman(pred_finals[g], problem.finals[g]) - spearman(problem.last[g], problem.finals[g])
                              for g in draw]))
    rng = np.random.default_rng(seed)
    boot = np.array([gain([rng.choice(g, len(g)) for g in groups]) for _ in range(draws)])
    return in_standard_errors(gain(groups), float(boot.std(ddof=1)))


def error_gain_z(pred_finals: np.ndarray, base_finals: np.ndarray, problem: Problem) -> float:
    """How much closer predictions come to the curves' scale-free targets than the
    base predictions do, in standard errors: the mean paired reduction of the
    squared error of r = (final - last) / s (targets clipped to +-R_BOUND, as when
    fitting) divided by its standard error over the curves. Both must be out of
    sample (``loo_finals``); with the last value + offset as the base this asks
    whether the features explain how the curves differ beyond their last value."""
    def sq(pred):
        with np.errstate(all="ignore"):
            return (np.clip((pred - problem.last) / problem.scale, -R_BOUND, R_BOUND) - problem.y) ** 2
    d = sq(base_finals) - sq(pred_finals)
    d = d[np.isfinite(d)]
    if len(d) < 2:
        return -math.inf
    return in_standard_errors(float(d.mean()), float(d.std(ddof=1)) / math.sqrt(len(d)))


def folds(problem: Problem, k: int, seed: int = 0) -> list[np.ndarray]:
    """K folds of row indices, stratified by task (each task's curves spread over the folds)."""
    rng = np.random.default_rng(seed)
    out = [[] for _ in range(k)]
    j = 0
    for ix in group_by_task(problem.curves).values():
        for i in rng.permutation(ix):
            out[j % k].append(int(i))
            j += 1
    return [np.array(sorted(f), dtype=np.int64) for f in out if f]


def cv_parts(G: np.ndarray | None, problem: Problem, fold_rows: list[np.ndarray], fixed=None,
             ridge: float = RIDGE) -> dict:
    """Cross-validated objective and its parts, computed within each fold and averaged.

    A scaling is fitted without the fold and predicts it (``G`` genes), or the
    predictions are ``fixed`` (a baseline). Ranks are compared within a fold,
    never across folds: pooled out-of-fold predictions would reorder curves by
    the folds' slightly different offsets.
    """
    everything = np.arange(problem.m)
    parts = []
    for rows in fold_rows:
        held = problem.rows(rows)
        if fixed is not None:
            pred = fixed[rows]
        else:
            train = np.setdiff1d(everything, rows)
            scaling = fit_scaling(G[:, train], problem.y[train], ridge)
            pred = held.last + held.scale * scaling.apply(G[:, rows])
        parts.append({**objective_parts(pred, held), "objective": objective(pred, held)})
    out = {}
    for key in ("objective", "error", "spearman", "regret"):
        values = [p[key] for p in parts if not math.isnan(p[key])]
        out[key] = float(np.mean(values)) if values else math.nan
    out["_folds"] = parts
    return out
