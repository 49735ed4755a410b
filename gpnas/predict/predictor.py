"""Evolved learning-curve predictors as an estimator (PySR style), chosen so they do no harm.

``CurvePredictor(config).fit(curves)``:

    features  <- those the curves support (features.available), constant ones dropped
    problem   <- the curves seen through their prefix (fitness.Problem)
    population <- one tree per feature and the constant, then random trees
    repeat generations: population <- evolution.generation(...)   (linear scaling + objective)
    front     <- the best tree of each size (complexity/objective Pareto front)
    choice    <- K-fold cross-validation of every front tree, the linear model
                 (r = a0 + sum_j b_j feature_j, ridge-penalised) and the baselines
                 (last value, last value + fitted offset, power law): each
                 candidate's coefficients are refitted without the fold it predicts
    best_     <- among the eligible candidates, the simplest whose cross-validated
                 objective is within one standard error of the lowest. Eligible: the
                 trees that rank better than the last value fold by fold (Spearman
                 and regret, by more than ``rank_margin`` standard errors) and the
                 linear model if its leave-one-out predictions come closer to the
                 curves' targets than the last value + offset's by more than
                 ``linear_margin`` standard errors and rank the curves at least as
                 well as the last value does; when none is, the last value and the
                 last value + offset (both rank as the last value does).
                 With validation curves (``from_trees``: the engine's held-out
                 quarter), a tree evolved on the training curves must also rank
                 them no worse than the last value (``validated``): its structure
                 never saw them, so that test is honest where the cross-validation
                 (next paragraph) is not
    ensemble_ <- the chosen tree and up to two dissimilar runners-up; the
                 spread of their predictions is the uncertainty

The tree search is run once on all curves and the cross-validation refits only
the linear coefficients, so the cross-validated figures of evolved trees are
somewhat optimistic; the choice is still made on predictions of curves each
scaling has not seen, which is what protects against constant corrections and
overfitted formulas. The linear model's structure is fixed before it sees a
curve (every feature, one coefficient each), so its cross-validated figures
are honest. Its test asks two things of them: that they explain how the curves
differ beyond their last value (a paired test of squared errors, measured on
every curve: on 40 curves it has the power a Spearman difference lacks) and
that they rank the curves no worse than the last value (a lower error alone
proves nothing for a search). On gpnas's own curves it passes and ranks best;
on foreign curves it fails (results/predictors/margins.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import sympy

from gpnas.errors import ConfigError, DataError, FileFormatError
from gpnas.predict import closedform, trees
from gpnas.predict import evolution as evo
from gpnas.predict import fitness as fit
from gpnas.predict.baselines import BASELINES, MIN_RANKED, predict_last, predict_power_law, score_predictions
from gpnas.predict.curves import group_by_task
from gpnas.predict.features import available, feature_matrix, prefix_anchors

FORMAT = "gpnas-female-predictor"
VERSION = 2
MIN_CURVES = 8
PREFIX_RULE = ("a curve of n evaluations is seen through its first k = max(4, ceil(frac * n)) "
               "values (capped at n); time is the evaluation index 1..k; the target is the final value")
TARGET_RULE = ("final = last + scale * clip(a0 + sum_i b_i gene_i, lo, hi), last = v_k, scale = |v_1|, "
               "genes = the terms joined by add/sub at the tree's root (see gpnas.predict.fitness)")
OFFSET_TREE = "0.0"
BASELINE_KINDS = ("last", "last+offset", "power_law")
KINDS = ("tree", "linear", *BASELINE_KINDS)
CV_KEYS = ("objective", "error", "spearman", "regret", "rank_z", "error_z")  # a candidate's saved figures
VALIDATION_KEYS = ("error", "spearman", "regret", "curves")   # ... on the held-out curves


@dataclass
class PredictorConfig:
    prefix_frac: float = 0.2
    population: int = 200
    generations: int = 30
    seed: int = 0
    elites: int = 4
    holdout_frac: float = 0.0    # of each task's curves, scored after fitting when fit() gets no holdout
    folds: int = 5
    ensemble: int = 3
    nested: bool = False         # also check the chosen formula by nested cross-validation (slower)
    nested_repeats: int = 2
    rank_margin: float = 4.0    # standard errors by which an evolved formula must rank better than the last value
    prior_margin: float = 1.0   # ... and a prior's formula, whose structure never saw the curves (no optimism;
                                # 1 was chosen on the tuning part of the cpu-small table: results/predictors/prior.md)
    linear_margin: float = 2.0  # ... and the linear model, by its leave-one-out squared-error gain
    simplify_timeout_s: float = 2.0
    gp: trees.GPConfig = field(default_factory=lambda: trees.GPConfig(max_size=25, max_depth=6))

    def validate(self):
        if not 0 < self.prefix_frac <= 1:
            raise ConfigError(f"prefix fraction {self.prefix_frac} must be in (0, 1]; try 0.2")
        if self.population < 4 or self.generations < 0:
            raise ConfigError("population must be >= 4 and generations >= 0")
        if not 0 <= self.holdout_frac < 1:
            raise ConfigError("the holdout fraction must be in [0, 1)")
        if self.folds < 2:
            raise ConfigError("cross-validation needs at least 2 folds")
        if not (self.rank_margin >= 0 and math.isfinite(self.rank_margin)):
            raise ConfigError(f"rank margin {self.rank_margin} must be a number >= 0 (standard errors); try 4")
        if not (self.prior_margin >= 0 and math.isfinite(self.prior_margin)):
            raise ConfigError(f"prior margin {self.prior_margin} must be a number >= 0 (standard errors)")
        if not (self.linear_margin >= 0 and math.isfinite(self.linear_margin)):
            raise ConfigError(f"linear margin {self.linear_margin} must be a number >= 0 (standard errors); try 2")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "PredictorConfig":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known and k != "gp"}
        g = d.get("gp") or {}
        gp_known = {f.name for f in fields(trees.GPConfig)}
        return cls(**kw, gp=trees.GPConfig(**{k: v for k, v in g.items() if k in gp_known}))


def check_fittable(curves) -> None:
    """At least MIN_CURVES completed curves and at least 2 per task, else one line saying so."""
    if len(curves) < MIN_CURVES:
        raise DataError(f"{len(curves)} completed curve{'s' if len(curves) != 1 else ''} to fit on; "
                        f"a predictor needs at least {MIN_CURVES}")
    for task, ix in group_by_task(curves).items():
        if len(ix) < 2:
            raise DataError(f"task {task!r} has 1 curve; every task needs at least 2 "
                            "(curves are ranked against the others of their task)")


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


def seed_trees(pset) -> list:
    """The constant (last value + offset) and one tree per terminal (one-variable regressions)."""
    return [trees.parse_tree(text, pset) for text in (OFFSET_TREE, *pset.arguments)]


@dataclass
class Candidate:
    """A row of the equations table: a baseline or an evolved tree, with its CV scores."""

    kind: str                      # one of KINDS: "tree", "linear" or a baseline
    tree: str | None = None
    complexity: int = 1
    train_fitness: float = math.nan
    cv: dict = field(default_factory=dict)   # objective, error, spearman, regret (out of fold)
    scaling: fit.Scaling | None = None       # fitted on all training curves (trees, last+offset)
    formula: str = ""
    prior: bool = False                      # a prior's formula: its structure never saw these curves
    validation: dict | None = None           # spearman, regret, error, curves on curves no tree saw (or None)


def cross_validate(candidates: list, pset, problem: fit.Problem, k: int, seed: int, prefix_frac: float,
                   repeats: int = 3) -> None:
    """Cross-validated objective, error, Spearman and regret of every candidate (in place):
    ``repeats`` times K folds, scored within each fold (``fitness.cv_parts``)."""
    k = max(2, min(k, problem.m // 8))  # folds of at least 8 curves: a Spearman needs some
    splits = [f for r in range(repeats) for f in fit.folds(problem, k, seed + r)]
    for c in candidates:
        if c.kind == "last":
            c.cv = fit.cv_parts(None, problem, splits, fixed=problem.last)
            c.cv["_pred"] = problem.last
            continue
        if c.kind == "power_law":
            pred = predict_power_law(problem.curves, prefix_frac)
            c.cv = fit.cv_parts(None, problem, splits, fixed=pred)
            c.cv["_pred"] = pred
            continue
        ridge = fit.LINEAR_RIDGE if c.kind == "linear" else fit.RIDGE
        G = genes_of(c, pset, problem.columns)
        c.scaling = fit.fit_scaling(G, problem.y, ridge)
        c.cv = fit.cv_parts(G, problem, splits, ridge=ridge)
        c.cv["_pred"] = fit.finals_of(c.scaling.apply(G), problem)
        if c.kind == "linear":  # its structure saw no curve: leave-one-out predictions are honest
            loo = fit.loo_finals(G, problem, ridge)
            offset = fit.loo_finals(np.zeros((0, problem.m)), problem)   # the last value + offset, left out too
            c.cv["error_z"] = fit.error_gain_z(loo, offset, problem)
            c.cv["rank_z"] = fit.rank_gain_z(loo, problem, seed)


def candidates_for(rows, features) -> list:
    """The equations table before cross-validation: the baselines, the linear model
    over every feature, and the evolved front (``(size, fitness, tree)`` rows)."""
    out = [Candidate(kind) for kind in BASELINE_KINDS]
    out.append(Candidate("linear", complexity=2 * len(features) - 1))  # the size of f1 + f2 + ... as a tree
    return out + [Candidate("tree", text, size, value) for size, value, text in rows if text != OFFSET_TREE]


def genes_of(c: Candidate, pset, columns) -> np.ndarray:
    """The genes a candidate's scaling combines: a tree's, the features (linear), or none (last + offset)."""
    if c.kind == "linear":
        return fit.linear_matrix(columns, pset.arguments)
    return fit.gene_matrix(trees.parse_tree(c.tree if c.kind == "tree" else OFFSET_TREE, pset), pset, columns)


def rank_score(cv: dict) -> float:
    """The ranking part of the objective (lower is better); NaN ranks count as the worst."""
    if math.isnan(cv.get("spearman", math.nan)):
        return math.inf
    return fit.RANK_WEIGHT * (1 - cv["spearman"]) + fit.REGRET_WEIGHT * min(cv["regret"], 1.0)


def ranks_better(cv: dict, bar: dict, margin: float) -> bool:
    """Whether a candidate ranks better than the bar (the last value) fold by fold:
    its rank score is lower on average by more than ``margin`` standard errors of
    the paired differences. The folds of repeated K-fold overlap, so their
    standard error is optimistic; and the best of many candidates on noisy folds
    (a fold of a few curves gives a noisy Spearman) looks better than it is: the
    default margin asks for four standard errors; a smaller one takes more of the
    gains and is less safe on small archives (results/predictors/margins.md)."""
    diff = np.array([rank_score(a) - rank_score(b) for a, b in zip(cv["_folds"], bar["_folds"])])
    diff = diff[np.isfinite(diff)]
    if len(diff) < 2:
        return False
    return float(diff.mean()) < -margin * float(diff.std(ddof=1)) / math.sqrt(len(diff))


def one_standard_error(candidates: list, eligible: list[int]) -> int:
    """The simplest candidate whose cross-validated objective is within one standard
    error (over the folds) of the lowest: the usual guard against choosing, among
    many, the formula that fits the folds' noise best (Hastie et al., ESL 7.10)."""
    best = min(eligible, key=lambda i: (candidates[i].cv["objective"], candidates[i].complexity))
    folds = np.array([f["objective"] for f in candidates[best].cv["_folds"]])
    se = float(folds.std(ddof=1) / math.sqrt(len(folds))) if len(folds) > 1 else 0.0
    near = [i for i in eligible if candidates[i].cv["objective"] <= candidates[best].cv["objective"] + se]
    return min(near, key=lambda i: (candidates[i].complexity, candidates[i].cv["objective"], i))


def linear_passes(cv: dict, margin: float) -> bool:
    """The linear model's test (module doc): leave-one-out squared error lower than the last
    value + offset's by more than ``margin`` standard errors, and leave-one-out Spearman no lower
    than the last value's."""
    return cv.get("error_z", -math.inf) > margin and cv.get("rank_z", -math.inf) >= 0


def validated(c: Candidate, last: Candidate) -> bool:
    """Whether an evolved formula holds on curves its structure never saw: with validation
    curves (``from_trees(validation=...)``: the run's held-out quarter), a formula evolved on the
    run's curves must rank them no worse than the last value does (Spearman and regret, by
    ``rank_score``); fewer than MIN_RANKED (5), and it is not chosen yet. A prior's formula (its structure
    never saw any of the run's curves, so its cross-validation is honest) and a fit without
    validation curves pass."""
    if c.kind != "tree" or c.prior or c.validation is None:
        return True
    mine, bar = rank_score(c.validation), rank_score(last.validation or {})
    return c.validation.get("curves", 0) >= MIN_RANKED and math.isfinite(mine) and mine <= bar


def choose(candidates: list, ensemble_size: int, margin: float,
           linear_margin: float, prior_margin: float | None = None) -> tuple[int, list[int], bool]:
    """(chosen index, ensemble indices, whether a tree or the linear model beat the last value): the module doc."""
    last = next(i for i, c in enumerate(candidates) if c.kind == "last")
    bar = candidates[last].cv
    same_order = {"last", "last+offset"}  # rank exactly as the last value does
    same = [i for i, c in enumerate(candidates) if c.kind in same_order]
    better = [i for i, c in enumerate(candidates)
              if (c.kind == "tree" and ranks_better(c.cv, bar, prior_margin if c.prior and prior_margin is not None
                                                    else margin) and validated(c, candidates[last]))
              or (c.kind == "linear" and linear_passes(c.cv, linear_margin))]
    eligible = better or same
    chosen = one_standard_error(candidates, eligible)
    beat = candidates[chosen].kind not in same_order
    if candidates[chosen].kind != "tree":
        return chosen, [chosen], beat
    members = [chosen]
    for i in sorted((i for i in eligible if candidates[i].kind == "tree" and i != chosen),
                    key=lambda i: candidates[i].cv["objective"]):
        if len(members) >= ensemble_size:
            break
        p = candidates[i].cv["_pred"]
        if all(abs(np.corrcoef(p, candidates[j].cv["_pred"])[0, 1]) < 0.995 for j in members):
            members.append(i)
    return chosen, members, beat


class CurvePredictor:
    """Evolve, choose, apply and export learning-curve predictors.

    Fitted attributes: ``features_`` (terminal names), ``config_keys_`` (config
    feature -> key), ``left_out_`` (config keys not in every curve),
    ``equations_`` (``Candidate`` rows: the baselines, then the Pareto front by
    size, each with cross-validated scores), ``best_index_`` / ``best_`` (the
    choice), ``ensemble_`` (indices), ``beats_last_`` (whether a formula ranked
    better than the last value in cross-validation), ``holdout_scores_``
    (scores on held-out curves, when there are any), ``history_`` (best
    training objective per generation).
    """

    def __init__(self, config: PredictorConfig | None = None, **overrides):
        self.config = config or PredictorConfig(**overrides)
        self.config.validate()

    # -- fitting --
    def fit(self, curves, holdout=None) -> "CurvePredictor":
        cfg = self.config
        rng = random.Random(cfg.seed)
        curves = [c for c in curves]
        if holdout is None:
            curves, holdout = _split(curves, cfg.holdout_frac, rng) if cfg.holdout_frac else (curves, [])
        check_fittable(curves)
        found = available(curves, cfg.prefix_frac)
        self.features_, self.config_keys_, self.left_out_ = found.names, found.config_keys, found.left_out
        self.pset = trees.make_pset(self.features_)
        problem = fit.Problem.build(curves, cfg.prefix_frac, self.features_, self.config_keys_)
        front, self.history_, self.n_evaluated_ = self._evolve(problem, rng)
        self._choose_from(front, problem)
        self.nested_ = self._nested_check(problem, rng) if cfg.nested and self.best_.kind == "tree" else {}
        if self.nested_ and not self.nested_["better"]:
            self._fall_back()
        self.holdout_scores_ = self._holdout_scores(list(holdout)) if holdout else {}
        return self

    def _evolve(self, problem, rng):
        """The GP on one problem: (front rows, best objective per generation, trees scored)."""
        cfg = self.config
        cache: dict = {}
        population = seed_trees(self.pset)[: cfg.population]
        population += [trees.random_tree(self.pset, rng, cfg.gp) for _ in range(cfg.population - len(population))]
        evo.score(population, self.pset, problem, cache)
        front = evo.Front()
        front.add(population)
        history = [evo.best(population, 1)[0].fitness.values[0]]
        for _ in range(cfg.generations):
            population = evo.generation(population, self.pset, problem, rng, cfg.gp, cfg.elites, cache)
            front.add(population)
            history.append(evo.best(population, 1)[0].fitness.values[0])
        return front.rows(), history, len(cache)

    def _nested_check(self, problem, rng) -> dict:
        """Does the whole procedure (evolve, then choose by cross-validation) rank
        better than the last value on curves it never saw? Outer folds: the
        procedure runs on the rest and predicts the fold (nested cross-validation,
        so the trees' structure is judged too, not only their coefficients)."""
        cfg = self.config
        k = max(2, min(3, problem.m // 8))
        outer = [f for r in range(cfg.nested_repeats) for f in fit.folds(problem, k, cfg.seed + 100 + r)]
        mine, last = [], []
        everything = np.arange(problem.m)
        for rows in outer:
            train, held = problem.rows(np.setdiff1d(everything, rows)), problem.rows(rows)
            front, _, _ = self._evolve(train, rng)
            candidates = candidates_for(front, self.features_)
            cross_validate(candidates, self.pset, train, cfg.folds, cfg.seed, cfg.prefix_frac)
            chosen = candidates[choose(candidates, 1, cfg.rank_margin, cfg.linear_margin)[0]]
            pred = self._problem_finals(chosen, held, cfg.prefix_frac)
            mine.append({**fit.objective_parts(pred, held), "objective": fit.objective(pred, held)})
            last.append({**fit.objective_parts(held.last, held), "objective": fit.objective(held.last, held)})
        mean = {who: {key: float(np.nanmean([p[key] for p in parts])) for key in ("objective", "spearman", "regret")}
                for who, parts in (("procedure", mine), ("last", last))}
        better = ranks_better({"_folds": mine}, {"_folds": last}, cfg.rank_margin)
        return {**mean, "folds": len(outer), "better": bool(better)}

    def _problem_finals(self, c: Candidate, problem, frac, columns=None) -> np.ndarray:
        """A candidate's predicted finals of a problem's curves (``columns``: its feature
        columns as the candidate should read them, by default the problem's own)."""
        if c.kind == "last":
            return problem.last.copy()
        if c.kind == "power_law":
            return predict_power_law(problem.curves, frac)
        return fit.finals_of(c.scaling.apply(genes_of(c, self.pset, problem.columns if columns is None else columns)),
                             problem)

    def _fall_back(self) -> None:
        """The last value, or the last value plus its offset (the same order), whichever
        has the lower cross-validated objective: nested cross-validation said no."""
        same = [i for i, c in enumerate(self.equations_) if c.kind in ("last", "last+offset")]
        self.best_index_ = min(same, key=lambda i: self.equations_[i].cv["objective"])
        self.ensemble_, self.beats_last_ = [self.best_index_], False

    @classmethod
    def from_trees(cls, population, curves, prefix_frac: float, features, config_keys=None,
                   formulas: bool = True, scored: bool = False, prior=(), validation=None,
                   cohort=None, **config) -> "CurvePredictor":
        """The choice among an already evolved population (the engine's females);
        ``formulas=False`` skips the closed forms (the engine's per-generation choice);
        ``scored=True`` says the trees' fitness is already on exactly these curves;
        ``prior``: tree texts of a prior, judged with ``prior_margin``;
        ``validation``: curves no tree was evolved or scaled on (the run's held-out quarter),
        on which every candidate is scored and an evolved formula must rank no worse than
        the last value to be chosen (``validated``; an empty list: none is held out yet, and
        no evolved formula is chosen); None: no such test. ``cohort``: a
        ``features.cohort_reference`` the cohort features rank against, here and in
        ``predict`` (a search's every started config; not saved with the predictor)."""
        self = cls(PredictorConfig(prefix_frac=prefix_frac, generations=0, **config))
        check_fittable(curves)
        self.features_, self.config_keys_, self.left_out_ = tuple(features), dict(config_keys or {}), ()
        self.pset = trees.make_pset(self.features_)
        self.cohort_ = cohort
        problem = fit.Problem.build(list(curves), prefix_frac, self.features_, self.config_keys_, cohort)
        front = evo.Front()
        if not scored:
            evo.score(population, self.pset, problem)
        front.add(population)
        self.history_, self.n_evaluated_ = [], len(population)
        rows, prior = front.rows(), set(prior)
        shown = {text for _, _, text in rows}
        rows += sorted({(len(t), t.fitness.values[0], str(t)) for t in population
                        if str(t) in prior and str(t) not in shown})   # a prior's formulas are all judged
        held = fit.Problem.build(list(validation), prefix_frac, self.features_, self.config_keys_, cohort) \
            if validation is not None else None
        self._choose_from(rows, problem, formulas, prior=prior, held=held)
        self.holdout_scores_, self.nested_ = {}, {}
        return self

    def _choose_from(self, rows, problem, formulas: bool = True, prior=frozenset(), held=None) -> None:
        cfg = self.config
        candidates = candidates_for(rows, self.features_)
        for c in candidates:
            c.prior = c.kind == "tree" and c.tree in prior
        cross_validate(candidates, self.pset, problem, cfg.folds, cfg.seed, cfg.prefix_frac)
        self.ranges_ = fit.feature_ranges(problem.columns)
        if held is not None:
            self._validate_on(candidates, held)
        self.best_index_, self.ensemble_, self.beats_last_ = choose(candidates, cfg.ensemble, cfg.rank_margin,
                                                                    cfg.linear_margin, cfg.prior_margin)
        last = next(c for c in candidates if c.kind == "last")
        self.held_back_ = sum(c.kind == "tree" and not c.prior and ranks_better(c.cv, last.cv, cfg.rank_margin)
                              and not validated(c, last) for c in candidates)
        for c in candidates:
            c.cv.pop("_pred", None)
            c.cv.pop("_folds", None)
            if c.kind == "linear" and formulas:
                c.formula = self._linear_text(c)
            elif c.kind == "tree" and formulas:  # short simplify for the table; full for the chosen
                chosen = c is candidates[self.best_index_]
                c.formula = closedform.as_text(self._sympy_r(c, None if chosen else 0.3))
        self.equations_ = candidates
        self.train_curves_ = problem.curves

    def _validate_on(self, candidates, held: fit.Problem) -> None:
        """Every candidate's error, Spearman and regret on curves no tree was evolved or scaled
        on (its coefficients are the ones fitted on the training curves), for ``validated``."""
        if not held.m:
            for c in candidates:
                c.validation = {"error": math.nan, "spearman": math.nan, "regret": math.nan, "curves": 0}
            return
        columns = fit.clip_columns(held.columns, self.ranges_)
        for c in candidates:
            with np.errstate(all="ignore"):
                pred = self._problem_finals(c, held, self.config.prefix_frac, columns)
            c.validation = {**fit.objective_parts(pred, held), "curves": held.m}

    def _holdout_scores(self, holdout) -> dict:
        out = {"gpnas": score_predictions(self.predict(holdout), holdout)["mean"]}
        for name, baseline in BASELINES.items():
            out[name] = score_predictions(baseline(holdout, self.config.prefix_frac), holdout)["mean"]
        return out

    # -- using --
    @property
    def best_(self) -> Candidate:
        return self.equations_[self.best_index_]

    def _finals(self, c: Candidate, curves, columns, frac) -> np.ndarray:
        if c.kind == "last":
            return predict_last(curves, frac)
        if c.kind == "power_law":
            return predict_power_law(curves, frac)
        last, scale = prefix_anchors(curves, frac)
        return last + scale * c.scaling.apply(genes_of(c, self.pset, columns))

    def predict(self, curves, i=None, prefix_frac=None, return_std=False):
        """Predicted final values (lower is better) of ``curves``, seen through their
        prefixes; with ``return_std`` also the ensemble's spread (0 for one member).
        Cohort features compare the curves passed in this call (same task), or rank them
        against the reference the predictor was chosen with (``from_trees(cohort=...)``)."""
        frac = self.config.prefix_frac if prefix_frac is None else prefix_frac
        curves = list(curves)
        columns = fit.clip_columns(feature_matrix(curves, frac, self.features_, self.config_keys_,
                                                  getattr(self, "cohort_", None)), self.ranges_)
        members = self.ensemble_ if i is None else [i]
        with np.errstate(all="ignore"):  # extreme curve values overflow to inf/NaN, which callers check
            preds = np.stack([self._finals(self.equations_[j], curves, columns, frac) for j in members])
            return (preds[0], preds.std(axis=0)) if return_std else preds[0]

    def r_of_columns(self, columns: dict) -> np.ndarray:
        """The ensemble's mean scale-free correction r (final = last + s * r) on feature
        columns given directly (clipped to the training ranges): how the predictor ranks
        rows that share one curve and differ in their config. The baselines have no
        r of their own and count 0."""
        columns = fit.clip_columns(columns, self.ranges_)
        n = len(next(iter(columns.values())))
        rs = [self.equations_[j].scaling.apply(genes_of(self.equations_[j], self.pset, columns))
              if self.equations_[j].kind in ("tree", "linear") else np.zeros(n) for j in self.ensemble_]
        with np.errstate(all="ignore"):
            return np.mean(rs, axis=0)

    def score(self, curves, i=None, prefix_frac=None) -> dict:
        return score_predictions(self.predict(curves, i, prefix_frac), curves)

    # -- closed forms --
    def _sympy_r(self, c: Candidate, timeout_s: float | None = None):
        """r as a sympy expression: a0 + sum b_i gene_i (before the clip)."""
        if c.kind == "linear":
            parts = [closedform.symbol(name) for name in self.features_]
        else:
            tree = trees.parse_tree(c.tree if c.kind == "tree" else OFFSET_TREE, self.pset)
            timeout_s = self.config.simplify_timeout_s if timeout_s is None else timeout_s
            parts = [closedform.simplify_bounded(closedform.to_sympy(g), timeout_s) for g in fit.genes(tree)]
        coef = c.scaling.coef
        expr = sympy.Float(coef[0])
        for b, g in zip(coef[1:], parts):
            if b != 0:
                expr += sympy.Float(b) * g
        return expr

    def _linear_terms(self, c: Candidate) -> list:
        """(feature, coefficient, how far the term moves r over the feature's training range)."""
        return [(name, float(b), abs(float(b)) * (self.ranges_[name][1] - self.ranges_[name][0])
                 if name in self.ranges_ else math.inf) for name, b in zip(self.features_, c.scaling.coef[1:])]

    def _linear_text(self, c: Candidate) -> str:
        return closedform.linear_text(float(c.scaling.coef[0]), self._linear_terms(c))

    @property
    def plausible_range_(self) -> tuple[float, float] | None:
        """[lo, hi] every formula's r is clipped to (the training curves' r widened by half its
        span; the same for every candidate, as all are fitted on the same curves)."""
        scaled = [c.scaling for c in self.equations_ if c.scaling is not None]
        return (float(scaled[0].lo), float(scaled[0].hi)) if scaled else None

    def formula_text(self, i=None) -> str:
        """The prediction as people read it: ``last + scale*(r)`` without the clip (stated
        once as ``plausible_range_``), the linear model with its largest terms only."""
        c = self.equations_[self.best_index_ if i is None else i]
        if c.kind == "power_law":
            return "power law c + a t^-alpha fitted to the prefix"
        if c.kind == "last":
            return "last"
        r = self._linear_text(c) if c.kind == "linear" else closedform.as_text(self._sympy_r(c))
        return f"last + scale*({r})"

    def formula_latex(self, i=None) -> str:
        """``formula_text`` in LaTeX (the linear model's smaller terms as an ellipsis)."""
        c = self.equations_[self.best_index_ if i is None else i]
        if c.kind == "power_law":
            return ""
        last, scale = closedform.symbol("last"), closedform.symbol("scale")
        if c.kind == "last":
            return closedform.as_latex(last)
        more = ""
        if c.kind == "linear":
            terms = sorted((t for t in self._linear_terms(c) if t[1] != 0), key=lambda t: -t[2])
            r = sum((sympy.Float(b) * closedform.symbol(n) for n, b, _ in terms[:5]), sympy.Float(c.scaling.coef[0]))
            more = r" + \ldots" if len(terms) > 5 else ""
        else:
            r = self._sympy_r(c)
        return (f"{closedform.as_latex(last)} + {closedform.as_latex(scale)} "
                f"\\left({closedform.as_latex(r)}{more}\\right)")

    def sympy(self, i=None, final=True):
        """The closed form of ``last + scale * clip(r, lo, hi)`` (same numbers as
        ``predict``), or of r itself with ``final=False``."""
        c = self.equations_[self.best_index_ if i is None else i]
        last, scale = closedform.symbol("last"), closedform.symbol("scale")
        if c.kind == "last":
            return last if final else sympy.Integer(0)
        if c.kind == "power_law":
            raise ValueError("the power-law baseline has no closed form over the features")
        r = self._sympy_r(c)
        if not final:
            return r
        if not (r.is_number and c.scaling.lo <= float(r) <= c.scaling.hi):
            r = sympy.Min(sympy.Max(r, sympy.Float(c.scaling.lo)), sympy.Float(c.scaling.hi))
        return last + scale * r

    def latex(self, i=None) -> str:
        return closedform.as_latex(self.sympy(i))

    def python(self, i=None, name="predict_final") -> str:
        c = self.equations_[self.best_index_ if i is None else i]
        rng = (c.scaling.lo, c.scaling.hi) if c.scaling else None
        return closedform.as_python(self.sympy(i, final=False), name, target="final", r_range=rng,
                                    input_ranges=self.ranges_)

    def describe_choice(self) -> str:
        """One line for people: what was chosen, the criterion that decided, then its figures.

        Each kind is chosen by its own test (``choose``): a formula by ranking better than the
        last value fold by fold, the linear model by its leave-one-out test, the last value (or
        its offset) when neither passes; the cross-validated Spearman and regret follow as
        figures, never as the reason (a linear model may pass its test with a lower Spearman).
        """
        c, last = self.best_, next(x for x in self.equations_ if x.kind == "last")
        cfg = self.config
        vs = (f"cross-validated Spearman {c.cv['spearman']:.3f} vs last value {last.cv['spearman']:.3f}, "
              f"regret {c.cv['regret']:.4f} vs {last.cv['regret']:.4f}")
        linear = next((x for x in self.equations_ if x.kind == "linear"), None)
        ez, rz = (linear.cv.get(k, math.nan) for k in ("error_z", "rank_z")) if linear else (math.nan, math.nan)
        test = (f"leave-one-out squared error {ez:+.2f} standard errors better than the last value + offset's "
                f"(needs > {cfg.linear_margin:g}), Spearman {rz:+.2f} standard errors (needs >= 0)"
                if math.isfinite(ez) and math.isfinite(rz) else "")
        held = self.describe_validation()
        if c.kind == "tree" and c.prior:
            return (f"chosen: a formula of the prior, because it ranked better than the last value fold by fold by "
                    f"more than {cfg.prior_margin:g} standard errors ({vs}){held}")
        if c.kind == "tree":
            also = " and no worse than it on the held-out curves" if c.validation is not None else ""
            return (f"chosen: an evolved formula, because it ranked better than the last value fold by fold by more "
                    f"than {cfg.rank_margin:g} standard errors{also} ({vs}){held}")
        if c.kind == "linear":
            return (f"chosen: the linear model over the {len(self.features_)} features, because it passed its "
                    f"leave-one-out test ({test}); {vs}{held}")
        failed_linear = f"; the linear model's test failed ({test})" if test else ""
        back = getattr(self, "held_back_", 0)
        held_back = (f" and held on the held-out curves ({back} that ranked better fold by fold ranked the held-out "
                     "curves worse than the last value, or too few were held out to rank)" if back else "")
        return (f"chosen: {c.kind}, because no evolved formula ranked better than the last value fold by fold by "
                f"{cfg.rank_margin:g} standard errors{held_back}{failed_linear}; {vs}{held}")

    def describe_validation(self) -> str:
        """'; on the 6 held-out curves ...: Spearman 0.900 vs last value 0.700, regret ...' (or '')."""
        c, last = self.best_, next(x for x in self.equations_ if x.kind == "last")
        v, bar = c.validation, last.validation
        if v is None or bar is None:
            return ""
        n = v.get("curves", 0)
        if not n >= MIN_RANKED or not math.isfinite(v.get("spearman", math.nan)):
            return f"; {n:.0f} held-out curves, too few to rank (an evolved formula needs {MIN_RANKED})"
        return (f"; on the {n:.0f} held-out curves, which no formula was evolved or scaled on: Spearman "
                f"{v['spearman']:.3f} vs last value {bar['spearman']:.3f}, regret {v['regret']:.4f} vs "
                f"{bar['regret']:.4f}")

    # -- files --
    def to_dict(self) -> dict:
        rows = []
        for c in self.equations_:
            rows.append({"kind": c.kind, "tree": c.tree, "complexity": c.complexity,
                         "train_fitness": _finite(c.train_fitness), "formula": c.formula,
                         "cv": {k: _finite(v) for k, v in c.cv.items()},
                         "scaling": c.scaling.to_dict() if c.scaling else None, "prior": c.prior,
                         "validation": {k: _finite(v) for k, v in c.validation.items()} if c.validation else None})
        return {"format": FORMAT, "version": VERSION, "features": list(self.features_),
                "config_keys": dict(self.config_keys_), "left_out": list(self.left_out_),
                "prefix": {"frac": self.config.prefix_frac, "rule": PREFIX_RULE}, "target": TARGET_RULE,
                "ranges": {k: list(v) for k, v in self.ranges_.items()},
                "best_index": self.best_index_, "ensemble": list(self.ensemble_),
                "beats_last": bool(self.beats_last_), "equations": rows, "config": self.config.to_dict(),
                "fitted_on": sorted({curve_fingerprint(c) for c in getattr(self, "train_curves_", ())})}

    def save(self, path) -> Path:
        """Write ``predictor.json`` (+ ``.tex``, ``.py`` of a formula) into a folder, or to a ``.json`` path;
        each file is written whole or not at all (temporary file, then rename)."""
        path = Path(path)
        if path.suffix != ".json":
            path.mkdir(parents=True, exist_ok=True)
            path = path / "predictor.json"
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n")
        if self.best_.kind != "power_law":
            _write_atomic(path.with_suffix(".tex"), self.latex() + "\n")
            _write_atomic(path.with_suffix(".py"), self.python())
        return path

    @classmethod
    def load(cls, path) -> "CurvePredictor":
        """Read a saved predictor; every tree is parsed token by token, nothing is evaluated."""
        path = Path(path)
        if path.is_dir():
            path = path / "predictor.json"
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
            raise FileFormatError(f"{path}: cannot read predictor ({type(error).__name__}); "
                                  "pass the folder or predictor.json written by 'predictors fit'") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or d.get("version") != VERSION:
            raise FileFormatError(f"{path}: not a gpnas predictor file (format {FORMAT}, version {VERSION}); "
                                  "refit it with 'gpnas predictors fit'")
        try:
            feats = d["features"]
            keys = d.get("config_keys") or {}
            if not (isinstance(feats, list) and all(isinstance(f, str) and f.isidentifier() for f in feats)
                    and isinstance(keys, dict) and all(isinstance(v, str) for v in keys.values())):
                raise ValueError("'features' must be a list of feature names and 'config_keys' an object of strings")
            config = PredictorConfig.from_dict(d.get("config") or {})
            config.prefix_frac = float(d["prefix"]["frac"])
            self = cls(config)
            self.features_, self.config_keys_ = tuple(feats), {str(k): v for k, v in keys.items()}
            self.left_out_ = tuple(str(k) for k in d.get("left_out") or ())
            self.pset = trees.make_pset(self.features_)
            self.ranges_ = _ranges(d.get("ranges") or {}, self.features_)
            self.equations_ = [_candidate(row, self.pset) for row in d["equations"]]
            self.best_index_ = _index(d["best_index"], len(self.equations_))
            self.ensemble_ = [_index(i, len(self.equations_)) for i in d.get("ensemble") or [self.best_index_]]
            self.beats_last_ = bool(d.get("beats_last", False))
            self.holdout_scores_, self.history_ = {}, []
            fitted = d.get("fitted_on") or []
            if not (isinstance(fitted, list) and all(isinstance(x, str) and len(x) <= 64 for x in fitted)):
                raise ValueError("'fitted_on' must be a list of curve fingerprints")
            self.fitted_on_ = frozenset(fitted)
        except FileFormatError as error:
            raise FileFormatError(f"{path}: {error}") from None
        except (TypeError, ValueError, KeyError, ConfigError, AttributeError) as error:
            raise FileFormatError(f"{path}: bad predictor file ({error}); refit it with 'gpnas predictors fit'") \
                from None
        return self


def curve_fingerprint(curve) -> str:
    """16 hex digits of SHA-256 over a curve's task, config id and values: how a predictor
    file remembers the curves it was fitted on without holding them (``fitted_on``)."""
    h = hashlib.sha256(f"{curve.task}\x00{curve.config_id}\x00".encode())
    h.update(np.ascontiguousarray(curve.values, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def in_sample(model, curves) -> int:
    """How many of ``curves`` the predictor was fitted on (0 for a file without ``fitted_on``)."""
    fitted = getattr(model, "fitted_on_", None)
    if fitted is None:
        fitted = frozenset(curve_fingerprint(c) for c in getattr(model, "train_curves_", ()))
    return sum(curve_fingerprint(c) in fitted for c in curves)


def _finite(v):
    return v if isinstance(v, (int, float)) and math.isfinite(v) else None


def _ranges(d: dict, features) -> dict:
    out = {}
    for name, pair in d.items():
        if name not in features or not (isinstance(pair, list) and len(pair) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) <= fit.MAX_COEF for v in pair)
                and pair[0] <= pair[1]):
            raise ValueError(f"'ranges' of {name!r} must be [lo, hi] of a feature the predictor reads, "
                             f"within +-{fit.MAX_COEF:g}")
        out[name] = (float(pair[0]), float(pair[1]))
    return out


def _index(i, n: int) -> int:
    if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n:
        raise ValueError(f"index {i!r} is not one of the {n} equations")
    return i


def _candidate(row, pset) -> Candidate:
    if not isinstance(row, dict) or row.get("kind") not in KINDS:
        raise ValueError(f"every equation needs a kind: {', '.join(KINDS)}")
    text = row.get("tree")
    if row["kind"] == "tree":
        if not isinstance(text, str):
            raise ValueError("a tree equation needs its tree string")
        text = str(trees.parse_tree(text, pset))  # token by token; nothing evaluated
    scaling = fit.Scaling.from_dict(row["scaling"]) if row.get("scaling") is not None else None
    if row["kind"] in ("tree", "linear", "last+offset") and scaling is None:
        raise ValueError(f"a {row['kind']} equation needs its scaling")
    if row["kind"] == "linear" and len(scaling.coef) != 1 + len(pset.arguments):
        raise ValueError("the linear equation needs one coefficient per feature and the constant")
    cv = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
          for k, v in (row.get("cv") or {}).items() if k in CV_KEYS}
    validation = row.get("validation")
    if validation is not None:
        if not isinstance(validation, dict):
            raise ValueError("'validation' must be an object of numbers")
        validation = {k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
                      for k, v in validation.items() if k in VALIDATION_KEYS}
    return Candidate(row["kind"], text, int(row.get("complexity") or 1),
                     float(row["train_fitness"]) if isinstance(row.get("train_fitness"), (int, float)) else math.nan,
                     cv, scaling, str(row.get("formula") or ""), row.get("prior") is True, validation)


def _write_atomic(path: Path, text: str) -> None:
    """The text whole or not at all: a fsynced temporary file renamed into place; a failed
    write (a full disk) removes its temporary file and leaves the old file as it was."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
