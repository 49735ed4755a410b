"""Breeding operators: the cross-gender mating operator and its within-gender
ablation.

``mate(father, mother, ctx) -> (son, daughter)``; each child inherits from
both parents:

- the **son** is the father's genome moved one step in the direction that the
  mother's formula says lowers the predicted final loss. The direction comes
  from sympy derivatives of her closed form with respect to her
  hyperparameter terminals, evaluated at the father's own feature row, and
  chained to genes (log lr -> log10_lr, log n_embd and log n_params -> n_embd
  and n_layer). Then ordinary random mutation. Where her formula uses no
  hyperparameter (or its gradient vanishes at the father) the step is random;
  the run counts both cases.
- the **daughter** is the mother's tree crossed with the tree of the female
  that predicted the father's completed curve best (his "choice"); a father
  without a completed curve chooses by tournament. Then mutated.

The within-gender ablation (``breed_within``) replaces all of this with DEAP's
ordinary operators and random pairing.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field

import numpy as np
import sympy
from deap import tools

from gpnas.predict import closedform, trees
from gpnas.predict import fitness as fit
from gpnas.search import females as fem
from gpnas.search.males import GENES, cx_genome, decode, gene_span, hyperparameter_features, mut_genome, step_genome

# gene -> the mother's terminals that move with it


@dataclass
class MatingContext:
    """What the operator needs beyond the two parents, for one generation."""

    space: object                      # the preset's search space
    pset: object                       # the female primitive set
    rng: random.Random
    gp_config: trees.GPConfig             # tree limits and operator rates
    step_scale: float                  # guided step length, in normalised gene units
    mutation_scale: float              # random mutation, in normalised gene units
    p_guided: float                    # chance the son follows a gradient that exists
    cx_prob: float                     # within-gender: crossover probability per pair
    mut_prob: float                    # within-gender: mutation probability per child
    female_predictions: np.ndarray     # (n_females, n_completed) tree outputs r on completed curves
    completed_targets: np.ndarray      # (n_completed,) true r (see features.targets)
    completed_index: dict              # architecture key -> column in the two arrays above
    females: list                      # the current female population
    tournament_size: int = 3
    derivatives: dict = field(default_factory=dict)  # tree string -> {terminal: sympy derivative}


def hyperparameter_gradient(mother, row: dict, ctx: MatingContext) -> dict:
    """d(predicted final loss)/d(terminal) at the father's feature row, for
    every hyperparameter terminal the mother's formula uses."""
    scaling = getattr(mother, "scaling", None)
    text = f"{mother} {scaling.coef if scaling else ''}"
    if text not in ctx.derivatives:
        # her prediction is a0 + sum b_i gene_i (linear scaling), so differentiate that
        genes = fit.genes(mother)
        if scaling is not None and len(scaling.coef) == len(genes) + 1:
            expr = sum((sympy.Float(b) * closedform.to_sympy(g) for b, g in zip(scaling.coef[1:], genes) if b),
                       sympy.Integer(0))
        else:  # a hand-built mother, never scored: her tree as it is
            expr = closedform.to_sympy(mother)
        hyper = set(trees.config_terminals(ctx.pset))
        used = [s for s in expr.free_symbols if s.name in hyper]
        ctx.derivatives[text] = {s.name: sympy.diff(expr, s) for s in used}
    subs = {closedform.symbol(name): float(value) for name, value in row.items()}
    gradient = {}
    for name, derivative in ctx.derivatives[text].items():
        value = complex(derivative.evalf(subs=subs))
        if math.isfinite(value.real) and value.imag == 0 and value.real != 0:
            gradient[name] = value.real
    return gradient


def gene_gradient(terminal_gradient: dict, arch: dict) -> dict:
    """Chain d(prediction)/d(terminal) to d(prediction)/d(gene), in gene units."""
    g = dict.fromkeys(GENES, 0.0)
    g["log10_lr"] = terminal_gradient.get("log10_learning_rate", 0.0)   # the gene is log10 lr
    for gene in ("dropout", "n_layer", "n_head", "n_embd"):
        g[gene] = terminal_gradient.get(gene, 0.0)
    d_log_params = terminal_gradient.get("log10_n_params", 0.0)
    if d_log_params:
        # d log10 n_params / d gene by a central difference of the exact count
        for gene in ("n_layer", "n_embd"):
            lo, hi = dict(arch), dict(arch)
            lo[gene], hi[gene] = arch[gene] - 1, arch[gene] + 1
            slope = (math.log10(hyperparameter_features(hi)["n_params"])
                     - math.log10(hyperparameter_features(lo)["n_params"])) / 2.0
            g[gene] += d_log_params * slope
    return {gene: value for gene, value in g.items() if value != 0.0}


def descent_direction(gradient: dict, space) -> dict:
    """Steepest descent in normalised gene units, expressed in natural units.

    With u = (gene - lo) / span, d(pred)/du = gradient * span, so descent in u
    moves each gene by -gradient * span**2 in natural units (``step_genome``
    rescales by span and normalises the length).
    """
    return {gene: -d * gene_span(space, gene) ** 2 for gene, d in gradient.items()}


def make_son(father, mother, row: dict, ctx: MatingContext):
    """The father's genome, moved along the mother's gradient; returns (son, guided)."""
    arch = decode(father, ctx.space)
    gradient = gene_gradient(hyperparameter_gradient(mother, row, ctx), arch)
    son = copy.deepcopy(father)
    guided = bool(gradient) and ctx.rng.random() < ctx.p_guided
    if guided:
        step_genome(son, descent_direction(gradient, ctx.space), ctx.space, ctx.rng, ctx.step_scale)
    else:
        mut_genome(son, ctx.space, ctx.rng, ctx.step_scale)
    if ctx.mutation_scale > 0:
        mut_genome(son, ctx.space, ctx.rng, ctx.mutation_scale)
    return son, guided


def father_choice(father_key: str | None, ctx: MatingContext):
    """The female whose prediction of the father's completed curve was best,
    or a tournament winner when he has none."""
    column = ctx.completed_index.get(father_key)
    if column is not None and len(ctx.females) and ctx.female_predictions.shape[1] > column:
        errors = np.abs(ctx.female_predictions[:, column] - ctx.completed_targets[column])
        return ctx.females[int(np.argmin(errors))], True
    return sel_tournament(ctx.females, 1, ctx.tournament_size, ctx.rng)[0], False


def make_daughter(mother, father_key: str | None, ctx: MatingContext):
    """The mother's tree crossed with the father's choice, then mutated."""
    choice, chose = father_choice(father_key, ctx)
    daughter, _ = trees.cx_tree(mother, choice, ctx.rng, ctx.gp_config)
    daughter = trees.mut_tree(daughter, ctx.pset, ctx.rng, ctx.gp_config)
    return daughter, chose


def mate(father, mother, row: dict, father_key: str | None, ctx: MatingContext):
    """The cross-gender operator: (son, daughter, stats) from one pair.

    ``row`` is the father's feature row (the columns the mother's terminals
    read, as used when the generation's males were predicted).
    """
    son, guided = make_son(father, mother, row, ctx)
    daughter, chose = make_daughter(mother, father_key, ctx)
    return son, daughter, {"guided": guided, "chose": chose}


def sel_tournament(individuals, k: int, size: int, rng: random.Random) -> list:
    """Plain fitness tournaments (either sex), drawing from ``rng``."""
    with trees.deap_random(rng):
        return tools.selTournament(individuals, k, tournsize=size)


def breed_within(male_parents, female_parents, ctx: MatingContext):
    """The ablation: ordinary DEAP variation inside each sex.

    Parents come already selected (tournaments); consecutive parents pair up,
    so no male is matched with a female at all. Sons: crossover with
    ``cx_prob``, mutation with ``mut_prob`` (varAnd); daughters likewise with
    subtree crossover and mutation.
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
    daughters = fem.vary(female_parents, ctx.pset, ctx.rng, ctx.gp_config) if female_parents else []
    return sons[: len(male_parents)], daughters
