"""One GP generation of predictor trees, shared by ``CurvePredictor.fit`` and
the engine's female population, so both evolve by the same code and objective.

    offspring = double tournament (fitness, then size) from the population
    pairwise subtree crossover with p_cx, then one mutation with p_mut
    score the offspring with invalid fitness (linear scaling + objective)
    population = elites + offspring

Every tree carries ``fitness`` (the objective on the training problem) and
``scaling`` (its fitted linear map, ``fitness.Scaling``).
"""

from __future__ import annotations

import copy
import random

import numpy as np

from gpnas.predict import fitness as fit
from gpnas.predict import trees

WORST = 1e9  # fitness of a tree that cannot be scored


def score(population, pset, problem, cache: dict | None = None) -> None:
    """Set every tree's fitness and scaling on ``problem`` (trees with the same
    text share one score; ``cache`` keeps them across calls on the same problem:
    text -> (fitness, scaling, scaled outputs r on the problem's curves))."""
    cache = {} if cache is None else cache
    for tree in population:
        key = str(tree)
        if key not in cache:
            if problem.m == 0:
                cache[key] = (WORST, fit.Scaling((0.0,)), np.zeros(0))
            else:
                cache[key] = fit.score_tree(tree, pset, problem, key)
        value, scaling, _ = cache[key]
        tree.fitness.values = (value,)
        tree.scaling = scaling


def best(population, k: int) -> list:
    """The k fittest trees, smaller first among equals."""
    return sorted(population, key=lambda t: (t.fitness.values[0], len(t)))[:k]


def clone(tree):
    return copy.deepcopy(tree)


def vary(parents, pset, rng: random.Random, config: trees.GPConfig) -> list:
    """DEAP's varAnd for trees: pairwise crossover and mutation at the config's rates."""
    children = []
    for i in range(0, len(parents), 2):
        a, b = parents[i], parents[(i + 1) % len(parents)]
        if rng.random() < config.p_cx:
            a, b = trees.cx_tree(a, b, rng, config)
        for child in (a, b):
            children.append(trees.mut_tree(child, pset, rng, config) if rng.random() < config.p_mut
                            else clone(child))
    return children[: len(parents)]


def generation(population, pset, problem, rng: random.Random, config: trees.GPConfig, elites: int,
               cache: dict | None = None) -> list:
    """The next population (see the module's pseudocode); every tree scored."""
    keep = [clone(t) for t in best(population, elites)]
    parents = trees.sel_parsimony(population, len(population) - len(keep), rng, config)
    offspring = vary(parents, pset, rng, config)
    score(offspring, pset, problem, cache)
    return keep + offspring


class Front:
    """The best tree of each size seen so far: the complexity/error Pareto front."""

    def __init__(self):
        self.by_size: dict[int, tuple[float, str]] = {}

    def add(self, population) -> None:
        for t in population:
            value, size = t.fitness.values[0], len(t)
            if size not in self.by_size or value < self.by_size[size][0]:
                self.by_size[size] = (value, str(t))

    def rows(self) -> list[tuple[int, float, str]]:
        """(size, fitness, tree) with each row strictly better than every smaller one."""
        out, best_value = [], float("inf")
        for size in sorted(self.by_size):
            value, text = self.by_size[size]
            if value < best_value:
                out.append((size, value, text))
                best_value = value
        return out
