"""The female population inside the engine: scoring trees on the archive's
completed curves, predicting males, and plain GP steps between matings.

Females are fitted on completed curves seen through exactly the prefix that an
early-trained male shows (``prefix_frac``), so a formula's inputs mean the same
thing when it scores itself and when it judges a male. As everywhere in gpnas
(see ``predictor``), a tree outputs the scale-free correction r and the
predicted final loss is ``last + scale * r``; fitness is measured on r, the
held-out error reported to users in loss units.
"""

from __future__ import annotations

import copy
import hashlib
import random
from dataclasses import dataclass

import numpy as np

from gpnas.predict import trees
from gpnas.predict.curves import Curve
from gpnas.predict.features import feature_matrix, prefix_anchors, targets, to_final
from gpnas.predict.predictor import R_BOUND, SEED_TREES, fitness_error

WORST = 1e9  # fitness of a female that cannot be scored, or a male that failed


def is_holdout(key: str, fraction: float = 0.25) -> bool:
    """A stable split: a curve's side never changes as the archive grows."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


@dataclass
class CurveSet:
    """Completed curves with their prefix features and true finals."""

    curves: list[Curve]
    columns: dict               # feature name -> (n,) array
    targets: np.ndarray         # (n,) true r = (final - last) / scale
    finals: np.ndarray          # (n,) true final values
    last: np.ndarray            # (n,) last value of each curve's prefix
    scale: np.ndarray           # (n,) the curves' scales
    holdout: np.ndarray         # (n,) bool

    @classmethod
    def build(cls, curves: list[Curve], prefix_frac: float) -> "CurveSet":
        if not curves:
            return cls([], {}, *(np.zeros(0) for _ in range(4)), np.zeros(0, dtype=bool))
        last, scale = prefix_anchors(curves, prefix_frac)
        return cls(
            curves=curves,
            columns=feature_matrix(curves, prefix_frac),
            targets=targets(curves, prefix_frac),
            finals=np.array([c.values[-1] for c in curves], dtype=np.float64),
            last=last,
            scale=scale,
            holdout=np.array([is_holdout(c.config_id) for c in curves], dtype=bool),
        )

    @property
    def index(self) -> dict:
        return {c.config_id: i for i, c in enumerate(self.curves)}


def initial_population(n: int, pset, rng: random.Random, config) -> list:
    """The predictor module's seed trees (last value, best so far, log-linear
    extrapolation), then ramped half-and-half trees."""
    seeds = [trees.parse_tree(text, pset) for text in SEED_TREES][:n]
    return seeds + [trees.random_tree(pset, rng, config) for _ in range(n - len(seeds))]


def predict_finals(trees, curves: list[Curve], prefix_frac: float, pset) -> tuple[np.ndarray, dict]:
    """(n_trees, n_curves) predicted final losses of (prefix) curves, and the feature columns."""
    columns = feature_matrix(curves, prefix_frac)
    last, scale = prefix_anchors(curves, prefix_frac)
    return to_final(predict_all(trees, columns, pset), last, scale), columns


def predict_all(trees, columns: dict, pset) -> np.ndarray:
    """(n_trees, n_rows) tree outputs r, bounded to +-R_BOUND as the predictor
    module bounds them; each tree compiled once, applied to all rows."""
    n_rows = len(next(iter(columns.values()))) if columns else 0
    out = np.empty((len(trees), n_rows))
    for i, tree in enumerate(trees):
        out[i] = compiled(tree, pset)(columns)
    return np.clip(out, -R_BOUND, R_BOUND)


_COMPILED: dict = {}


def compiled(tree, pset):
    """Compile each distinct tree once per process (trees recur across generations)."""
    text = str(tree)
    if text not in _COMPILED:
        if len(_COMPILED) > 20000:
            _COMPILED.clear()
        _COMPILED[text] = trees.compile_tree(tree, pset)
    return _COMPILED[text]


def score(females, curve_set: CurveSet, pset) -> tuple[np.ndarray, np.ndarray]:
    """Set every female's fitness to her error on the training curves.

    Returns (tree outputs r (n_females, n_curves), held-out mean absolute error
    of the final loss per female; NaN where the held-out split is still empty).
    """
    if not curve_set.curves:
        for female in females:
            female.fitness.values = (WORST,)
        return np.empty((len(females), 0)), np.full(len(females), np.nan)
    predictions = predict_all(females, curve_set.columns, pset)
    train, held = ~curve_set.holdout, curve_set.holdout
    if not train.any():  # too few curves to split: fit on all, report nothing held out
        train, held = np.ones_like(train), np.zeros_like(held)
    holdout_error = np.full(len(females), np.nan)
    for i, female in enumerate(females):
        female.fitness.values = (fitness_error(predictions[i, train], curve_set.targets[train]),)
        if held.any():
            finals = to_final(predictions[i, held], curve_set.last[held], curve_set.scale[held])
            holdout_error[i] = float(np.mean(np.abs(finals - curve_set.finals[held])))
    return predictions, holdout_error


def best(females, k: int):
    """The k fittest females, smaller trees first among equals."""
    return sorted(females, key=lambda f: (f.fitness.values[0], len(f)))[:k]


def clone(female):
    return copy.deepcopy(female)


def vary(parents, pset, rng: random.Random, config: trees.GPConfig) -> list:
    """DEAP's varAnd for trees: pairwise crossover and mutation at the config's rates."""
    children = []
    for i in range(0, len(parents), 2):
        a, b = parents[i], parents[(i + 1) % len(parents)]
        if rng.random() < config.p_cx:
            a, b = trees.cx_tree(a, b, rng, config)
        for child in (a, b):
            children.append(trees.mut_tree(child, pset, rng, config) if rng.random() < config.p_mut else clone(child))
    return children[: len(parents)]


def gp_step(females, curve_set: CurveSet, pset, rng: random.Random, elites: int, config: trees.GPConfig) -> list:
    """One generation of ordinary GP among females (a double tournament weighs
    error and size; offspring keep the depth and size limits), elites kept."""
    keep = [clone(f) for f in best(females, elites)]
    parents = trees.sel_parsimony(females, len(females) - len(keep), rng, config)
    population = keep + vary(parents, pset, rng, config)
    score(population, curve_set, pset)
    return population
