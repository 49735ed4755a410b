"""Breeding operators: the cross-gender mating operator and its within-gender
ablation.

``mate(father, mother, ctx) -> (son, daughter)``; each child inherits from
both parents:

- the **son** is the best of m candidate neighbours of the father
  (``son_candidates``): each candidate changes one or two genes by one step in
  the gene's own units (a discrete gene moves to the neighbouring allowed
  value, by index: n_embd 48 -> 32 or 64 whatever the numbers; a continuous gene
  moves by ``guided_step`` of its range, times U(0.5, 1.5)). The mother ranks
  the candidates with her own formula, evaluated on each candidate's
  hyperparameters and the father's curve features: she chooses the direction.
  The son is *guided* when her predictions differ among the candidates (he is
  then the candidate she predicts lowest, ties at random), *random* otherwise
  (a candidate drawn uniformly). Evaluating the formula, rather than its
  symbolic derivative, works for piecewise formulas (``Min(-0.161, -dropout)``
  has derivative 0 on most of the range but still separates candidates across
  its kink) and for discrete genes, where a derivative means nothing. Guided
  and random sons come from the same candidates, so their early losses compare
  the mother's choice with chance and nothing else. ``ga.son_ranker`` may
  hand the ranking to another: the female who best ranks the configs the run
  started near the father by their early values (``judged``), the run's chosen
  predictor, or the surrogate of the run's early values.
- the **daughter** is the mother's tree crossed with the tree of the female
  that predicted the father's completed curve best (his "choice"), judged on
  training curves only, so held-out curves never shape a female; ties at
  random. A father without a completed training curve chooses by tournament.
  Then mutated.

The within-gender ablation (``breed_within``) replaces all of this with DEAP's
ordinary operators and random pairing.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
from deap import tools
from scipy import stats

from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.predict.curves import Curve
from gpnas.search import females as fem
from gpnas.search.males import cx_genome, decode, hyperparameter_features, mut_genome
from gpnas.search.space import as_space
from gpnas.search.surrogate import config_values, numeric_keys

# predictions closer than this (in r, the scale-free correction) are the same prediction
SAME = 1e-12


@dataclass
class Father:
    """What the mother sees of a father: his early curve and its feature row (as
    predicted in this generation). Either may be missing (all his evaluations failed)."""

    curve: Curve | None
    row: dict | None


@dataclass
class MatingContext:
    """What the operator needs beyond the two parents, for one generation (or one
    pass over the females)."""

    space: object                      # the preset's search space
    pset: object                       # the female primitive set
    rng: random.Random
    gp_config: trees.GPConfig          # tree limits and operator rates
    prefix_frac: float                 # the early prefix the females read
    n_candidates: int                  # m: the son's candidate neighbours
    step_scale: float                  # a candidate's step in a continuous gene, in units of its range
    mutation_scale: float              # within-gender: Gaussian mutation, in units of each gene's range
    p_guided: float                    # chance the son is the mother's choice when she has one
    cx_prob: float                     # within-gender: crossover probability per pair
    mut_prob: float                    # within-gender: mutation probability per child
    female_predictions: np.ndarray     # (n_females, n_completed) tree outputs r on completed curves
    completed_targets: np.ndarray      # (n_completed,) true r (see features.targets)
    completed_index: dict              # architecture key -> column in the two arrays above
    females: list                      # the females the father chooses among
    training: np.ndarray | None = None  # (n_completed,) bool: a training curve (None: all are)
    ranges: dict = dataclasses.field(default_factory=dict)  # feature -> training range (the mother clips to it)
    tournament_size: int = 3
    # a genome's config as a curve's config (what the females read of it); by default nanoGPT's
    curve_config: Callable = None
    features: fem.Features = fem.NANOGPT
    # the instrument of the coupling (a table ablation turns it on): every son's candidates
    # with the outputs of each ranker (the mother, the run's chosen ``predictor``, the
    # ``surrogate``) are appended to ``rankings``; only ``ranker``'s picks the son
    predictor: object = None
    rankings: list | None = None
    ranker: str = "mother"             # who picks the son: mother, judged, predictor or surrogate (ga.son_ranker)
    surrogate: object = None           # search.surrogate.Surrogate of the run's early values, or None
    early: list | None = None          # (curve config, early value) of every config the run started ("judged")

    def __post_init__(self):
        if self.curve_config is None:
            self.curve_config = lambda genome: hyperparameter_features(decode(genome, self.space))


# ------------------------------------------------------------------ sons

def son_candidates(father, space, rng: random.Random, m: int, step_scale: float) -> list:
    """Up to ``m`` distinct neighbours of the father (genomes), each one or two genes
    away, none equal to him (``Space.neighbours``: a discrete gene moves to the
    adjacent allowed value by index, a continuous one by ``step_scale`` of its range)."""
    return as_space(space).neighbours(father, rng, m, step_scale)


def candidate_columns(father: Father, candidates: list, ctx: "MatingContext") -> dict:
    """``config_columns`` of the candidates' configs."""
    return config_columns(father, [ctx.curve_config(c) for c in candidates], ctx)


def config_columns(father: Father, configs: list, ctx: "MatingContext") -> dict:
    """Feature columns, one row per candidate: the father's own feature row, with
    every column that depends on the hyperparameters recomputed for the candidate.

    The columns that depend on them are found, not listed: the father's curve
    is featurised once with each candidate's hyperparameters, and whatever
    column varies is the candidate's; every other column is the father's row
    (which also keeps cohort features as they were computed among his
    generation).
    """
    probes = [dataclasses.replace(father.curve, config=father.curve.config)]
    probes += [dataclasses.replace(father.curve, config=config) for config in configs]
    computed = fit.Problem.build(probes, ctx.prefix_frac, ctx.features.names, ctx.features.config_keys).columns
    n = len(configs)
    columns = {}
    for name, value in father.row.items():
        col = computed.get(name)
        varies = col is not None and np.ptp(col) > 0
        columns[name] = np.array(col[1:], dtype=np.float64) if varies else np.full(n, float(value))
    return columns


def mother_ranking(mother, father: Father, candidates: list, ctx: MatingContext) -> np.ndarray | None:
    """The mother's outputs r for the candidates (lower r: lower predicted final loss,
    since final = last + s * r with the father's last and s > 0); None when she
    cannot see the father (no early curve)."""
    if father is None or father.curve is None or not father.row or not candidates:
        return None
    columns = candidate_columns(father, candidates, ctx)
    return fem.predict_all([mother], fit.clip_columns(columns, ctx.ranges), ctx.pset)[0]


NEIGHBOURHOOD = 16   # the started configs nearest the father a judged mother is chosen on
MIN_NEIGHBOURS = 6  # fewer started configs than this, and no mother is judged


def neighbourhood(father: Father, ctx: MatingContext) -> tuple[list, np.ndarray]:
    """The NEIGHBOURHOOD configs the run started nearest the father's (config keys
    standardised over every started config, log10 where the task says so), with their
    early values: what the run knows of how the father's surroundings start."""
    rows = [(c, v) for c, v in ctx.early or () if np.isfinite(v)]
    keys, log = numeric_keys([*(c for c, _ in rows), father.curve.config], ctx.features.config_keys)
    if len(rows) < MIN_NEIGHBOURS or not keys:
        return [], np.empty(0)
    X = config_values([c for c, _ in rows], keys, log)
    me = config_values([father.curve.config], keys, log)[0]
    scale = np.nanstd(X, axis=0)
    scale[~(scale > 0)] = 1.0
    distance = np.nansum(((X - me) / scale) ** 2, axis=1)
    near = np.argsort(distance, kind="stable")[:NEIGHBOURHOOD]
    return [rows[i][0] for i in near], np.array([rows[i][1] for i in near])


def judged_mother(father: Father, ctx: MatingContext):
    """The female who judges the father's neighbourhood best: her outputs on the father's
    curve with each nearby started config's hyperparameters (``neighbourhood``) ranked
    against their recorded early values (Spearman); the highest wins. None
    when no female's ranking agrees with them (Spearman <= 0), there is too little to
    judge on, or the father has no curve."""
    if father is None or father.curve is None or not father.row or not ctx.females:
        return None
    configs, values = neighbourhood(father, ctx)
    if len(configs) < MIN_NEIGHBOURS or float(np.ptp(values)) <= SAME:
        return None
    columns = fit.clip_columns(config_columns(father, configs, ctx), ctx.ranges)
    r = fem.predict_all(ctx.females, columns, ctx.pset)
    truth = stats.rankdata(values)
    truth = truth - truth.mean()
    ranks = stats.rankdata(r, axis=1)            # Spearman = Pearson of the ranks, every female at once
    ranks -= ranks.mean(axis=1, keepdims=True)
    with np.errstate(all="ignore"):
        agree = (ranks @ truth) / (np.linalg.norm(ranks, axis=1) * np.linalg.norm(truth))
    agree = np.where(np.isfinite(agree) & (np.ptp(r, axis=1) > SAME), agree, -np.inf)
    if agree.max() <= 0:
        return None
    return ctx.females[int(np.argmax(agree))]   # ties: the first (no draw: the instrument must not move the rng)


def judged_ranking(father: Father, candidates: list, ctx: MatingContext) -> np.ndarray | None:
    """The judged mother's outputs r for the candidates (``judged_mother``), or None."""
    mother = judged_mother(father, ctx)
    return None if mother is None else mother_ranking(mother, father, candidates, ctx)


def predictor_ranking(predictor, father: Father, candidates: list, ctx: MatingContext) -> np.ndarray | None:
    """The chosen predictor's outputs r for the candidates, as ``mother_ranking`` (None
    without a predictor or a view of the father)."""
    if predictor is None or father is None or father.curve is None or not father.row or not candidates:
        return None
    return predictor.r_of_columns(candidate_columns(father, candidates, ctx))


def make_son(father, mother, view: Father | None, ctx: MatingContext):
    """The best of the father's candidate neighbours by the mother's formula (or, by
    ``ctx.ranker``, the formula of the female who judges his neighbourhood best, the
    run's chosen predictor, or the surrogate of its early values);
    returns (son, guided)."""
    candidates = son_candidates(father, ctx.space, ctx.rng, ctx.n_candidates, ctx.step_scale)
    if not candidates:  # a space of one architecture: nothing to move to
        son = copy.deepcopy(father)
        mut_genome(son, ctx.space, ctx.rng, ctx.mutation_scale)
        return son, False
    ranked = {"mother": mother_ranking(mother, view, candidates, ctx)}
    if ctx.rankings is not None or ctx.ranker == "predictor":
        ranked["predictor"] = predictor_ranking(ctx.predictor, view, candidates, ctx)
    if ctx.rankings is not None or ctx.ranker == "judged":
        ranked["judged"] = judged_ranking(view, candidates, ctx)
    if ctx.rankings is not None or ctx.ranker == "surrogate":
        ranked["surrogate"] = (ctx.surrogate.predict([ctx.curve_config(c) for c in candidates])
                               if ctx.surrogate is not None else None)
    if ctx.rankings is not None:
        ctx.rankings.append({"candidates": candidates, **ranked})
    r = ranked[ctx.ranker]
    guided = r is not None and bool(np.all(np.isfinite(r))) and float(np.ptp(r)) > SAME \
        and ctx.rng.random() < ctx.p_guided
    if guided:
        best = [i for i in range(len(r)) if r[i] <= r.min() + SAME]
        son = candidates[ctx.rng.choice(best)]
    else:
        son = candidates[ctx.rng.randrange(len(candidates))]
    son = copy.deepcopy(son)
    _invalidate(son)
    return son, guided


def _invalidate(genome) -> None:
    if hasattr(genome, "fitness") and genome.fitness.valid:
        del genome.fitness.values


def son_statistics(sons: list) -> dict:
    """Guided against random sons: counts, and their mean early loss once trained.

    ``sons`` are the state's son records ({generation, guided, early_loss}).
    The paired figure compares guided and random sons of the same generation
    (both bred from the same population): the mean over generations with both
    kinds trained of mean(guided) - mean(random); negative means the mother's
    choice learned faster early.
    """
    guided = [s for s in sons if s.get("guided")]
    rand = [s for s in sons if not s.get("guided")]

    def mean_loss(group):
        losses = [s["early_loss"] for s in group if isinstance(s.get("early_loss"), (int, float))]
        return (float(np.mean(losses)) if losses else None), len(losses)

    by_generation = {}
    for s in sons:
        if isinstance(s.get("early_loss"), (int, float)):
            by_generation.setdefault(s["generation"], ([], []))[0 if s.get("guided") else 1].append(s["early_loss"])
    diffs = [float(np.mean(g) - np.mean(r)) for g, r in by_generation.values() if g and r]
    g_mean, g_n = mean_loss(guided)
    r_mean, r_n = mean_loss(rand)
    return {
        "guided": len(guided), "random": len(rand),
        "guided_fraction": len(guided) / len(sons) if sons else None,
        "guided_early_loss": g_mean, "guided_trained": g_n,
        "random_early_loss": r_mean, "random_trained": r_n,
        "paired_generations": len(diffs),
        "paired_difference": float(np.mean(diffs)) if diffs else None,
        "guided_lower_generations": sum(d < 0 for d in diffs),
    }


# ------------------------------------------------------------------ daughters

def father_choice(father_key: str | None, ctx: MatingContext):
    """The female whose prediction of the father's completed training curve was
    best (ties at random), or a tournament winner when he has none."""
    column = ctx.completed_index.get(father_key)
    training = column is not None and (ctx.training is None or bool(ctx.training[column]))
    if training and len(ctx.females) and ctx.female_predictions.shape[1] > column:
        errors = np.abs(ctx.female_predictions[:, column] - ctx.completed_targets[column])
        best = np.flatnonzero(errors <= errors.min() + SAME)
        return ctx.females[int(best[ctx.rng.randrange(len(best))])], True
    return sel_tournament(ctx.females, 1, ctx.tournament_size, ctx.rng)[0], False


def make_daughter(mother, father_key: str | None, ctx: MatingContext):
    """The mother's tree crossed with the father's choice, then mutated."""
    choice, chose = father_choice(father_key, ctx)
    daughter, _ = trees.cx_tree(mother, choice, ctx.rng, ctx.gp_config)
    daughter = trees.mut_tree(daughter, ctx.pset, ctx.rng, ctx.gp_config)
    return daughter, chose


def mate(father, mother, view: Father | None, father_key: str | None, ctx: MatingContext):
    """The cross-gender operator: (son, daughter, stats) from one pair."""
    son, guided = make_son(father, mother, view, ctx)
    daughter, chose = make_daughter(mother, father_key, ctx)
    return son, daughter, {"guided": guided, "chose": chose}


def sel_tournament(individuals, k: int, size: int, rng: random.Random) -> list:
    """Plain fitness tournaments (either sex), drawing from ``rng``."""
    with trees.deap_random(rng):
        return tools.selTournament(individuals, k, tournsize=size)


def breed_within(male_parents, ctx: MatingContext) -> list:
    """The ablation's sons: ordinary DEAP variation, no female involved.

    Parents come already selected (tournaments); consecutive parents pair up.
    Crossover with ``cx_prob``, mutation with ``mut_prob`` (varAnd). The
    ablation's females vary by plain GP steps (``females.gp_step``), as many
    passes as combined makes mating passes.
    """
    sons = []
    for i in range(0, len(male_parents), 2):
        children = (copy.deepcopy(male_parents[i]), copy.deepcopy(male_parents[(i + 1) % len(male_parents)]))
        if ctx.rng.random() < ctx.cx_prob:
            cx_genome(*children, ctx.space, ctx.rng)
        for child in children:
            if ctx.rng.random() < ctx.mut_prob:
                mut_genome(child, ctx.space, ctx.rng, ctx.mutation_scale)
            sons.append(child)
    return sons[: len(male_parents)]
