"""The female population inside the engine: the same trees, features, linear
scaling, objective and GP generation as ``gpnas predictors fit``
(``gpnas.predict``), applied to the run's completed curves.

Females are fitted on completed curves seen through exactly the prefix that an
early-trained male shows (``prefix_frac``), so a formula's inputs mean the same
thing when it scores itself and when it judges a male. A female's raw output
is linearly scaled on the training curves when she is scored (her
``scaling``), and the predicted final loss is ``last + S * r``. A stable
quarter of the completed curves (by key) is held out: no female is scored or
scaled on it, so it gives the error the run reports and the choice's honest
test of formulas evolved on the rest (``choose``).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpnas.predict import evolution as evo
from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.predict.curves import Curve
from gpnas.predict.features import CURVE_FEATURES, FEATURES, config_name
from gpnas.predict.predictor import MIN_CURVES, CurvePredictor, seed_trees
from gpnas.runs.tasks import HYPERPARAMETER_KEYS

WORST = evo.WORST  # fitness of a female that cannot be scored, or a male that failed
best, clone, vary = evo.best, evo.clone, evo.vary



@dataclass(frozen=True)
class Features:
    """The terminals the females of one run read: the curve features, the training-loss
    features where the task records training losses, the cohort features, and every
    config key of the task (``config_keys``: feature name -> key; log10 where the task
    says so). Curves of one search share one horizon and one schedule, so those
    features (constant) are left out."""

    names: tuple[str, ...]
    config_keys: dict

    @classmethod
    def of(cls, keys: dict, has_train: bool = True) -> "Features":
        """From the task's config keys (key -> log10-scaled)."""
        config_keys = {config_name(key, log): key for key, log in keys.items()}
        needs = ("train", "cohort") if has_train else ("cohort",)
        names = tuple(n for n in CURVE_FEATURES if n != "log_horizon") + tuple(
            n for n, f in FEATURES.items() if f.needs in needs and (has_train or n != "cohort_rank_train"))
        return cls(names + tuple(config_keys), config_keys)

    @classmethod
    def of_task(cls, task) -> "Features":
        return cls.of(task.config_keys, task.has_train_values)

    def pset(self):
        return trees.make_pset(self.names)


# gpnas's own curves: training losses at every evaluation, and the male's hyperparameters
NANOGPT = Features.of(HYPERPARAMETER_KEYS)
CONFIG_KEYS, FEATURE_NAMES = NANOGPT.config_keys, NANOGPT.names


def make_pset():
    return NANOGPT.pset()


def is_holdout(key: str, fraction: float = 0.25) -> bool:
    """A stable split: a curve's side never changes as the archive grows."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


@dataclass
class CurveSet:
    """The run's completed curves: the training problem and the held-out one."""

    curves: list[Curve]
    holdout: np.ndarray          # (n,) bool, by curve
    train: fit.Problem           # the curves not held out
    held: fit.Problem            # the held-out curves
    prefix_frac: float

    features: Features = NANOGPT
    cohort: dict | None = None   # features.cohort_reference the cohort features rank against (None: each call)
    cohort_size: int = 0         # how many curves that reference holds (it only grows within a run)

    @classmethod
    def build(cls, curves: list[Curve], prefix_frac: float, features: Features = NANOGPT,
              cohort: dict | None = None, cohort_size: int = 0) -> "CurveSet":
        holdout = np.array([is_holdout(c.config_id) for c in curves], dtype=bool)
        if curves and holdout.all():
            holdout[:] = False   # too few to split: fit on all, report nothing held out
        pick = lambda side: [c for c, h in zip(curves, holdout) if h == side]  # noqa: E731
        build = lambda side: fit.Problem.build(pick(side), prefix_frac, features.names,  # noqa: E731
                                               features.config_keys, cohort)
        return cls(list(curves), holdout, build(False), build(True), prefix_frac, features, cohort, cohort_size)

    @property
    def keys(self) -> tuple:
        """The training curves' keys, in order, and the size of the cohort reference: what
        the females' scores on these curves depend on."""
        return tuple(c.config_id for c in self.train.curves) + ((self.cohort_size,) if self.cohort else ())

    @property
    def index(self) -> dict:
        """config_id -> row of the training problem (the curves a daughter's choice may use)."""
        return {c.config_id: i for i, c in enumerate(self.train.curves)}

    @property
    def columns(self) -> dict:
        return self.train.columns

    @property
    def targets(self) -> np.ndarray:
        return self.train.y


def initial_population(n: int, pset, rng: random.Random, config, prior: tuple = ()) -> list:
    """A prior's formulas (``prior_formulas``) first, the constant and one tree per feature
    (the predictor's seeds), then ramped half-and-half trees."""
    seeds = ([trees.parse_tree(text, pset) for text in prior] + seed_trees(pset))[:n]
    return seeds + [trees.random_tree(pset, rng, config) for _ in range(n - len(seeds))]


PRIORS_DIR = Path(__file__).resolve().parent.parent / "priors"


def prior_path(name_or_path) -> Path:
    """A prior's predictor file: a path (a file, or a folder holding predictor.json), or the
    name of one gpnas ships (``gpnas/priors/NAME.json``: ``cpu-small``)."""
    path = Path(name_or_path)
    if path.is_dir():
        path = path / "predictor.json"
    if not path.exists() and (PRIORS_DIR / f"{name_or_path}.json").is_file():
        return PRIORS_DIR / f"{name_or_path}.json"
    if not path.is_file():
        from gpnas.errors import ConfigError

        shipped = ", ".join(sorted(p.stem for p in PRIORS_DIR.glob("*.json")))
        raise ConfigError(f"prior {name_or_path}: no such file; give a predictor file of 'gpnas predictors fit' "
                          f"or a shipped prior ({shipped})")
    return path


def prior_record(path, features: Features) -> dict:
    """What a run or an ablation records of a prior: its file, the file's sha256 and its formulas
    (``prior_formulas``, checked against ``features``)."""
    formulas = prior_formulas(path, features)
    file = prior_path(path)
    return {"path": str(file.resolve()), "sha256": hashlib.sha256(file.read_bytes()).hexdigest(),
            "formulas": list(formulas)}


def prior_formulas(path, features: Features) -> tuple[str, ...]:
    """The evolved formulas of a predictor file (``gpnas predictors fit``) as tree texts a
    run's females can start from: its front, chosen one first. Read as predictor files
    always are (parsed token by token; nothing in the file runs). ConfigError, naming
    them, when the formulas read features the run's curves do not have."""
    from gpnas.errors import ConfigError

    path = prior_path(path)
    model = CurvePredictor.load(path)
    front = sorted((c for c in model.equations_ if c.kind == "tree" and c.tree),
                   key=lambda c: (c is not model.best_, c.cv.get("objective", 0.0)))
    if not front:
        raise ConfigError(f"prior {path}: the file holds no evolved formula; fit one with 'gpnas predictors fit' "
                          "(and --generations above 0)")
    used = {node.value for c in front for node in trees.parse_tree(c.tree, model.pset)
            if isinstance(getattr(node, "value", None), str)}
    missing = sorted(used - set(features.names))
    if missing:
        raise ConfigError(f"prior {path}: its formulas read {', '.join(missing)}, which this run's curves do not "
                          f"have (they have {', '.join(sorted(features.config_keys))} among their config "
                          "features); fit the prior on curves with the run's config keys")
    return tuple(c.tree for c in front)


def score(females, curve_set: CurveSet, pset, cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Set every female's fitness and scaling on the training curves (a tree scored
    before on these curves comes from ``cache``, ``evolution.score``'s).

    Returns (her scaled outputs r on the training curves (n_females, n_train),
    held-out mean absolute error of the final loss per female; NaN where
    nothing is held out yet).
    """
    cache = {} if cache is None else cache
    evo.score(females, pset, curve_set.train, cache)
    held = curve_set.held
    errors = np.full(len(females), np.nan)
    if held.m:
        columns = fit.clip_columns(held.columns, fit.feature_ranges(curve_set.train.columns))
        for i, female in enumerate(females):
            r = female.scaling.apply(fit.gene_matrix(female, pset, columns))
            errors[i] = float(np.mean(np.abs(held.last + held.scale * r - held.finals)))
    return predict_all(females, curve_set.train.columns, pset, cache), errors


def rescore(females, curve_set: CurveSet, pset, cache: dict) -> None:
    """Fitness and scaling on the training curves only, for a mating pass (nothing
    held out is reported); a tree scored before on the same curves comes from ``cache``."""
    evo.score(females, pset, curve_set.train, cache)


def predict_all(females, columns: dict, pset, cache: dict | None = None) -> np.ndarray:
    """(n_females, n_rows) scaled outputs r of each female on feature columns
    (a female not scored yet has no scaling and predicts r = 0, the last value).
    ``cache`` (``evolution.score``'s, of the training curves whose ``columns`` these
    are) supplies the outputs of a female whose scaling was fitted there."""
    n_rows = len(next(iter(columns.values()))) if columns else 0
    out = np.zeros((len(females), n_rows))
    for i, female in enumerate(females):
        scaling = getattr(female, "scaling", None)
        if scaling is None or not n_rows:
            continue
        known = cache.get(str(female)) if cache else None
        out[i] = known[2] if known is not None and known[1] is scaling else \
            scaling.apply(fit.gene_matrix(female, pset, columns))
    return out


def predict_finals(females, curves: list[Curve], prefix_frac: float, pset, ranges=None,
                   features: Features = NANOGPT, cohort: dict | None = None) -> tuple[np.ndarray, dict]:
    """(n_females, n_curves) predicted final losses of (prefix) curves, and the feature
    columns; features clipped to ``ranges`` (the training curves') when given, cohort
    features ranked against ``cohort`` when given."""
    problem = fit.Problem.build(curves, prefix_frac, features.names, features.config_keys, cohort)
    r = predict_all(females, fit.clip_columns(problem.columns, ranges or {}), pset)
    return problem.last + problem.scale * r, problem.columns


def gp_step(females, curve_set: CurveSet, pset, rng: random.Random, elites: int, config: trees.GPConfig,
            cache: dict | None = None) -> list:
    """One generation of ordinary GP among the females (``predict.evolution.generation``)."""
    return evo.generation(females, pset, curve_set.train, rng, config, elites, cache)


def choose(females, curve_set: CurveSet, formulas: bool = True, scored: bool = False,
           prior=()) -> CurvePredictor | None:
    """The predictor the run uses and reports: the choice by cross-validation among
    the females' Pareto front and the baselines (as ``gpnas predictors fit``
    makes it), with one more test for a formula evolved on the run's curves: on the
    held-out curves, which no female was scored on, it must rank no worse than the last
    value (``predictor.validated``; too few held out to rank, and it is not chosen);
    None while fewer than MIN_CURVES training curves are complete.
    ``scored=True``: the females were just scored on ``curve_set`` (``score``), so
    their fitness is not computed again."""
    train = curve_set.train.curves
    if len(train) < MIN_CURVES or not females:
        return None
    return CurvePredictor.from_trees([clone(f) for f in females], train, curve_set.prefix_frac,
                                     curve_set.features.names, curve_set.features.config_keys,
                                     formulas=formulas, scored=scored, prior=prior,
                                     validation=curve_set.held.curves, cohort=curve_set.cohort)
