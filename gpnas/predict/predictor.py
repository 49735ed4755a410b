"""Evolved learning-curve predictors as an estimator, their scores, and the baselines.

``CurvePredictor(config).fit(curves)`` evolves female trees that read a curve's
prefix features and predict its scale-free correction r (features.py):

    predicted final = last + s * tree(features)

so a tree of 0 is the last-value baseline, and the error is measured in the
curve's own units. The tree's output is bounded to |r| <= 1 (``R_BOUND``): no
prediction moves further from the last value than the curve's first value.

The robust error (``fitness_error``) is the mean *capped* absolute error,
mean(min(|r_hat - r|, 0.1)): a unit is the curve's first value, so a
blown-up curve (r of 1e6) costs at most 0.1, as much as a prediction 10 %
of the initial loss off, and cannot dominate; unlike the median it still
counts every curve (with a median, the flat never-learning curves that make
up most of a real search would decide alone). The fitness used in ``fit``
(``Objective``) adds rank quality, because a search uses predictions to rank
curves. Selection is a double tournament on that fitness and then on tree
size (parsimony).

Scores (``score_predictions``) are per task and then averaged over tasks:
mean and median absolute error of the final value, Spearman rank correlation
between predicted and true finals, and regret: the true final of the curve
the predictor ranks best minus the best true final in the task.
"""

from __future__ import annotations

import json
import math
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import sympy

from gpnas.errors import ConfigError, FileFormatError
from gpnas.predict import closedform, trees
from gpnas.predict.curves import group_by_task, prefix_length
from gpnas.predict.features import FEATURE_NAMES, feature_matrix, prefix_anchors, rankdata, sanitise, targets, to_final

ERROR_CAP = 0.1
R_BOUND = 1.0
FORMAT = "gpnas-female-predictor"
PREFIX_RULE = ("a curve of n evaluations is seen through its first k = max(4, ceil(frac * n)) "
               "values (capped at n); time is the evaluation index 1..k; the target is the final value")
TARGET_RULE = "final = last + scale * tree, last = v_k, scale = |v_1| (see gpnas.predict.features)"
# physically motivated starting points: last value, best so far, log-linear extrapolation
SEED_TREES = ("0.0", "neg(gap_best)", "mul(slope_recent, log_horizon)")
BASELINE_TREE = "0.0"  # r = 0: the last-value baseline


def fitness_error(tree_predictions, targets, cap: float = ERROR_CAP) -> float:
    """Mean capped absolute error, mean(min(|p - t|, cap)), in the curve's own units (see module doc)."""
    err = np.abs(np.asarray(tree_predictions, dtype=np.float64) - np.asarray(targets, dtype=np.float64))
    return float(np.mean(np.minimum(np.nan_to_num(err, nan=cap), cap)))


class Objective:
    """The female fitness on a fixed set of curves (lower is better).

        fitness = fitness_error(r_hat, r)
                + rank_weight * (1 - mean_task Spearman(pred, true finals)
                                 + worst_weight * max_task max(0, Spearman_last - Spearman))

    The error alone rewards getting values right; a search uses predictions to
    *rank* curves, and last value is a strong ranker that small, noisy
    corrections easily spoil, so the rank term keeps a correction only where
    it reorders curves for the better. The worst-task term charges a formula
    for the task where it ranks worse than the last value: a correction must
    help across tasks, not on average over them, which is what carries to
    unseen tasks. Tasks with fewer than 3 curves or constant finals are left
    out of the rank terms.
    """

    def __init__(self, curves, prefix_frac, cap=ERROR_CAP, rank_weight=0.0, worst_weight=0.0,
                 r_bound=None):
        self.y = targets(curves, prefix_frac)
        self.last, self.scale = prefix_anchors(curves, prefix_frac)
        self.cap, self.rank_weight, self.r_bound = cap, rank_weight, r_bound
        self.worst_weight = worst_weight
        final = sanitise(np.array([c.values[-1] for c in curves]))
        self.groups = []
        for ix in group_by_task(curves).values():
            if len(ix) >= 3:
                r = rankdata(final[ix])
                r -= r.mean()
                norm = math.sqrt(float(r @ r))
                if norm > 0:
                    self.groups.append((ix, r / norm))
        # each task's Spearman of the last-value baseline (r = 0): the bar per task
        self.base = [self._spearman(self.last[ix], truth) for ix, truth in self.groups]

    @staticmethod
    def _spearman(p, truth):
        r = rankdata(p)
        r -= r.mean()
        norm = math.sqrt(float(r @ r))
        return float(r @ truth) / norm if norm > 0 else 0.0

    def __call__(self, r_hat) -> float:
        if self.r_bound is not None:
            r_hat = np.clip(r_hat, -self.r_bound, self.r_bound)
        err = fitness_error(r_hat, self.y, self.cap)
        if not self.rank_weight or not self.groups:
            return err
        pred = self.last + self.scale * r_hat
        total = worst = 0.0
        for (ix, truth), base in zip(self.groups, self.base):
            sp = self._spearman(pred[ix], truth)
            total += sp
            worst = max(worst, base - sp)
        return err + self.rank_weight * (1.0 - total / len(self.groups) + self.worst_weight * worst)


def tree_finals(tree, pset, curves, prefix_frac, r_bound=R_BOUND) -> np.ndarray:
    """Predicted final values of ``curves`` by one female tree (what the engine ranks males by)."""
    names = list(pset.arguments)
    r = trees.compile_tree(tree, pset)(feature_matrix(curves, prefix_frac, names))
    if r_bound is not None:
        r = np.clip(r, -r_bound, r_bound)
    last, scale = prefix_anchors(curves, prefix_frac)
    return to_final(r, last, scale)


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties); 0 where either side is constant."""
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb / den) if den > 0 else 0.0


def score_predictions(pred, curves) -> dict:
    """Per task and averaged over tasks: mae, median_ae, spearman, regret of predicted finals."""
    pred = sanitise(np.asarray(pred, dtype=np.float64))
    final = sanitise(np.array([c.values[-1] for c in curves]))
    per_task = {}
    for task, ix in group_by_task(curves).items():
        p, f = pred[ix], final[ix]
        with np.errstate(all="ignore"):
            err = np.abs(p - f)
        per_task[task] = {"n": int(len(ix)), "mae": float(np.mean(err)),
                          "median_ae": float(np.median(err)), "spearman": spearman(p, f),
                          "regret": float(f[int(np.argmin(p))] - f.min())}
    keys = ("mae", "median_ae", "spearman", "regret")
    mean = {k: float(np.mean([s[k] for s in per_task.values()])) for k in keys}
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


# ---- the estimator ----

@dataclass
class PredictorConfig:
    prefix_frac: float = 0.2
    population: int = 300
    generations: int = 30
    seed: int = 0
    elites: int = 5
    holdout_frac: float = 0.2    # of each task's curves, when fit() gets no holdout
    validation_frac: float = 0.2  # of the training tasks, kept out of evolution to choose the equation
    simplify_timeout_s: float = 2.0
    error_cap: float = ERROR_CAP
    rank_weight: float = 1.0
    r_bound: float | None = R_BOUND
    worst_weight: float = 1.0
    features: tuple = FEATURE_NAMES
    gp: trees.GPConfig = field(default_factory=trees.GPConfig)

    def validate(self):
        if not 0 < self.prefix_frac <= 1:
            raise ConfigError(f"prefix fraction {self.prefix_frac} must be in (0, 1]; try 0.2")
        if self.population < 4 or self.generations < 0:
            raise ConfigError("population must be >= 4 and generations >= 0")
        if not 0 <= self.holdout_frac < 1 or not 0 <= self.validation_frac < 1:
            raise ConfigError("holdout and validation fractions must be in [0, 1)")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["features"] = list(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PredictorConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k != "gp"}
        if "features" in kw:
            kw["features"] = tuple(str(x) for x in kw["features"])
        g = d.get("gp") or {}
        gp_known = {f.name for f in fields(trees.GPConfig)}
        return cls(**kw, gp=trees.GPConfig(**{k: v for k, v in g.items() if k in gp_known}))


def _split_tasks(curves, frac, rng: random.Random):
    """Whole tasks (round(frac * tasks), at least 1) apart when there are >= 3 tasks, else _split."""
    tasks = sorted({c.task for c in curves})
    if frac <= 0:
        return list(curves), []
    if len(tasks) < 3:
        return _split(curves, frac, rng)
    chosen = set(rng.sample(tasks, max(1, int(round(frac * len(tasks))))))
    return [c for c in curves if c.task not in chosen], [c for c in curves if c.task in chosen]


def _split(curves, frac, rng: random.Random):
    """Per task, a random ``frac`` of the curves held out (at least 1 when a task has >= 5)."""
    train, hold = [], []
    for ix in group_by_task(curves).values():
        ix = list(ix)
        rng.shuffle(ix)
        h = int(round(frac * len(ix))) if len(ix) >= 5 else 0
        hold += ix[:h]
        train += ix[h:]
    return [curves[i] for i in sorted(train)], [curves[i] for i in sorted(hold)]


class CurvePredictor:
    """Evolve, score and export female predictors (an estimator, PySR style).

    Fitted attributes: ``equations_`` (list of dicts: tree, complexity,
    train_error (fitness on the evolution curves), valid_fitness (on the
    validation tasks), holdout_error, spearman, regret (on the held-out
    curves), formula; the last-value baseline r = 0 first, then one row per
    size on the fitness/size Pareto front), ``best_`` (the row chosen on the
    validation tasks, see ``fit``), ``baselines_`` (baseline scores on the
    held-out curves), ``history_`` (best training fitness per generation).
    """

    def __init__(self, config: PredictorConfig | None = None, **overrides):
        self.config = config or PredictorConfig(**overrides)
        self.config.validate()
        self.pset = trees.make_pset(self.config.features)
        self.features_ = tuple(self.config.features)

    # -- fitting --
    def fit(self, curves, holdout=None) -> "CurvePredictor":
        """Evolve on ``curves``; score on ``holdout`` (default: a per-task split of ``curves``).

        A ``validation_frac`` of the training tasks is kept out of evolution;
        the equation reported as ``best_`` is the simplest whose fitness on
        those tasks is within 0.001 of the lowest, among the Pareto front and
        the last-value baseline (r = 0). So the predictor departs from the last
        value only where unseen tasks confirm that it helps.

        Pseudocode of the loop:
            population = seed trees + ramped half-and-half trees
            evaluate(population)
            repeat generations times:
                offspring = select(population, P - elites) by double tournament
                crossover pairs with p_cx, mutate each with p_mut
                evaluate(offspring with invalid fitness)
                population = elites + offspring; record the best of each size
        """
        cfg = self.config
        rng = random.Random(cfg.seed)
        curves = list(curves)
        if holdout is None:
            curves, holdout = _split(curves, cfg.holdout_frac, rng)
        if not curves:
            raise ConfigError("no training curves left; hold out fewer tasks or add curves")
        self.train_curves_, self.holdout_curves_ = curves, list(holdout)
        # the equation is chosen on training tasks evolution never saw
        curves, self.validation_curves_ = _split_tasks(curves, cfg.validation_frac, rng)
        X = feature_matrix(curves, cfg.prefix_frac, cfg.features)
        # a feature constant over the training curves (a hyperparameter nobody
        # varied) would only act as a disguised constant that means something
        # else on other curves: leave it out of the primitive set
        self.features_ = tuple(n for n in cfg.features if np.ptp(X[n]) > 0) or tuple(cfg.features[:1])
        self.pset = trees.make_pset(self.features_)
        objective = Objective(curves, cfg.prefix_frac, cfg.error_cap, cfg.rank_weight,
                              cfg.worst_weight, cfg.r_bound)
        cache: dict[str, float] = {}

        def evaluate(tree):
            key = str(tree)
            if key not in cache:
                cache[key] = objective(trees.compile_tree(tree, self.pset)(X))
            tree.fitness.values = (cache[key],)

        pop = [trees.parse_tree(s, self.pset) for s in SEED_TREES if self._usable(s)]
        pop += [trees.random_tree(self.pset, rng, cfg.gp) for _ in range(cfg.population - len(pop))]
        for t in pop:
            evaluate(t)
        front: dict[int, tuple[float, str]] = {}
        self.history_ = []

        def record(population):
            for t in population:
                err, size = t.fitness.values[0], len(t)
                if size not in front or err < front[size][0]:
                    front[size] = (err, str(t))
            self.history_.append(min(t.fitness.values[0] for t in population))

        record(pop)
        for _ in range(cfg.generations):
            elites = sorted(pop, key=lambda t: (t.fitness.values[0], len(t)))[:cfg.elites]
            chosen = trees.sel_parsimony(pop, cfg.population - len(elites), rng, cfg.gp)
            offspring = [trees.Tree(list(t)) for t in chosen]
            for t, src in zip(offspring, chosen):
                t.fitness.values = src.fitness.values
            for i in range(1, len(offspring), 2):
                if rng.random() < cfg.gp.p_cx:
                    offspring[i - 1], offspring[i] = trees.cx_tree(offspring[i - 1], offspring[i], rng, cfg.gp)
            for i in range(len(offspring)):
                if rng.random() < cfg.gp.p_mut:
                    offspring[i] = trees.mut_tree(offspring[i], self.pset, rng, cfg.gp)
            for t in offspring:
                if not t.fitness.valid:
                    evaluate(t)
            pop = elites + offspring
            record(pop)
        self.n_evaluated_ = len(cache)
        self._train_fitness = lambda tree: objective(trees.compile_tree(tree, self.pset)(X))
        self._build_table(front)
        return self

    def _usable(self, text):
        try:
            trees.parse_tree(text, self.pset)
            return True
        except FileFormatError:
            return False

    def _build_table(self, front):
        rows, best_err = [], math.inf
        for size in sorted(front):  # Pareto front: each row strictly better than all smaller ones
            err, text = front[size]
            if err < best_err:
                rows.append((size, err, text))
                best_err = err
        if BASELINE_TREE not in [text for _, _, text in rows]:
            rows.insert(0, (1, math.nan, BASELINE_TREE))  # last value, always a candidate
        cfg, hold, valid = self.config, self.holdout_curves_, self.validation_curves_
        Xh = feature_matrix(hold, cfg.prefix_frac, self.features_) if hold else None
        yh = targets(hold, cfg.prefix_frac) if hold else None
        Xv = feature_matrix(valid, cfg.prefix_frac, self.features_) if valid else None
        objective = Objective(valid, cfg.prefix_frac, cfg.error_cap, cfg.rank_weight,
                              cfg.worst_weight, cfg.r_bound) if valid else None
        self.equations_ = []
        for size, err, text in rows:
            tree = trees.parse_tree(text, self.pset)
            if math.isnan(err):
                err = self._train_fitness(tree)
            row = {"complexity": size, "train_error": err, "valid_fitness": math.nan,
                   "holdout_error": math.nan, "spearman": math.nan, "regret": math.nan, "tree": text}
            if valid:
                row["valid_fitness"] = objective(self._r(tree, Xv))
            if hold:
                r = self._r(tree, Xh)
                row["holdout_error"] = fitness_error(r, yh, cfg.error_cap)
                s = score_predictions(self._finals(r, hold), hold)["mean"]
                row["spearman"], row["regret"] = s["spearman"], s["regret"]
            expr = closedform.simplify_bounded(closedform.to_sympy(tree), cfg.simplify_timeout_s)
            row["formula"] = closedform.as_text(expr)
            self.equations_.append(row)
        if valid:
            lowest = min(r["valid_fitness"] for r in self.equations_)
            ok = [i for i, r in enumerate(self.equations_) if r["valid_fitness"] <= lowest + 1e-3]
        else:
            lowest = min(r["train_error"] for r in self.equations_)
            ok = [i for i, r in enumerate(self.equations_) if r["train_error"] <= lowest * 1.01 + 1e-12]
        self.best_index_ = min(ok, key=lambda i: (self.equations_[i]["complexity"], i))
        self.baselines_ = score_baselines(hold, cfg.prefix_frac) if hold else {}

    # -- using --
    @property
    def best_(self) -> dict:
        return self.equations_[self.best_index_]

    def tree(self, i=None):
        return trees.parse_tree(self.equations_[self.best_index_ if i is None else i]["tree"], self.pset)

    def _r(self, tree, X):
        r = trees.compile_tree(tree, self.pset)(X)
        b = self.config.r_bound
        return r if b is None else np.clip(r, -b, b)

    def _finals(self, r, curves):
        last, scale = prefix_anchors(curves, self.config.prefix_frac)
        return to_final(r, last, scale)

    def predict(self, curves, i=None, prefix_frac=None) -> np.ndarray:
        """Predicted final values (lower is better) of ``curves``, seen through their prefixes."""
        frac = self.config.prefix_frac if prefix_frac is None else prefix_frac
        X = feature_matrix(curves, frac, self.features_)
        r = self._r(self.tree(i), X)
        last, scale = prefix_anchors(curves, frac)
        return to_final(r, last, scale)

    def score(self, curves, i=None, prefix_frac=None) -> dict:
        return score_predictions(self.predict(curves, i, prefix_frac), curves)

    def sympy(self, i=None, final=True):
        """The closed form (simplified under the time bound): of the final value
        ``last + scale * clip(r, -r_bound, r_bound)`` by default, of r itself
        with ``final=False``; the same numbers as ``predict``."""
        r = closedform.simplify_bounded(closedform.to_sympy(self.tree(i)), self.config.simplify_timeout_s)
        if not final:
            return r
        b = self.config.r_bound
        if b is not None and not (r.is_number and abs(float(r)) <= b):
            r = sympy.Min(sympy.Max(r, -sympy.Float(b)), sympy.Float(b))
        return closedform.symbol("last") + closedform.symbol("scale") * r

    def latex(self, i=None) -> str:
        return closedform.as_latex(self.sympy(i))

    def python(self, i=None, name="predict_final") -> str:
        return closedform.as_python(self.sympy(i, final=False), name, target="final",
                                    r_bound=self.config.r_bound)

    # -- files --
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "tree": self.best_["tree"],
                "features": list(self.features_),
                "prefix": {"frac": self.config.prefix_frac, "rule": PREFIX_RULE},
                "target": TARGET_RULE, "formula": closedform.as_text(self.sympy()),
                "best_index": self.best_index_, "equations": self.equations_,
                "config": self.config.to_dict()}

    def save(self, path) -> Path:
        """Write ``predictor.json`` (+ ``.tex``, ``.py``) into a folder, or to a ``.json`` path."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "predictor.json"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        d = self.to_dict()
        d["equations"] = [{k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                           for k, v in row.items()} for row in d["equations"]]
        # each file to a temporary name, then renamed: a kill or a full disk mid-save leaves
        # the old file or the new one, never half of one; predictor.json (what load reads) last
        _write_atomic(path.with_suffix(".tex"), self.latex() + "\n")
        _write_atomic(path.with_suffix(".py"), self.python())
        _write_atomic(path, json.dumps(d, indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "CurvePredictor":
        """Read a saved predictor; every tree is parsed token by token, nothing is evaluated."""
        path = Path(path)
        if path.is_dir():
            path = path / "predictor.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise FileFormatError(f"{path}: cannot read predictor ({error}); "
                                  "pass the folder or predictor.json written by 'predictors fit'") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != 1:
            raise FileFormatError(f"{path}: not a gpnas predictor file (format {FORMAT}, version 1)")
        feats = d.get("features")
        if not isinstance(feats, list) or not all(isinstance(f, str) and f in FEATURE_NAMES for f in feats):
            raise FileFormatError(f"{path}: 'features' must list known feature names: {', '.join(FEATURE_NAMES)}")
        try:
            config = PredictorConfig.from_dict({**(d.get("config") or {}), "features": feats})
            config.prefix_frac = float(d["prefix"]["frac"])
            self = cls(config)
        except (TypeError, ValueError, KeyError, ConfigError) as error:
            raise FileFormatError(f"{path}: bad predictor settings ({error})") from None
        rows = d.get("equations") or [{"tree": d.get("tree")}]
        self.equations_ = []
        for row in rows:
            if not isinstance(row, dict) or not isinstance(row.get("tree"), str):
                raise FileFormatError(f"{path}: every equation needs a 'tree' string")
            try:
                tree = trees.parse_tree(row["tree"], self.pset)
            except FileFormatError as error:
                raise FileFormatError(f"{path}: {error}") from None
            clean = {k: (v if isinstance(v, (int, float)) and v is not None else math.nan)
                     for k, v in row.items() if k in ("complexity", "train_error", "holdout_error",
                                                      "spearman", "regret", "valid_fitness")}
            clean.update(tree=str(tree), complexity=len(tree), formula=str(row.get("formula", "")))
            self.equations_.append(clean)
        best = d.get("best_index", 0)
        self.best_index_ = best if isinstance(best, int) and 0 <= best < len(self.equations_) else 0
        if isinstance(d.get("tree"), str) and d["tree"] != self.equations_[self.best_index_]["tree"]:
            tree = trees.parse_tree(d["tree"], self.pset)
            self.equations_.insert(0, {"tree": str(tree), "complexity": len(tree), "formula": ""})
            self.best_index_ = 0
        return self


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a fsynced temporary file renamed into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
