"""The search space as data: typed genes and their geometry, in one place.

A space is a preset's (or a table's) ``config.SpaceConfig``: an ordered tuple
of ``GeneSpec`` (integer range, choices, float, log float) and the constraints
its evaluation task declares. ``Space`` wraps it with everything the search
does to genomes; males, mating, the standard methods and the report use this
module and nothing else for gene geometry.

A genome (``individuals.Male``) is a list of floats, one per gene in the
space's order, in *genome units*: the value itself, or its log10 for a log
gene. Operators work in *normalised units*: each gene's range mapped to 0..1;
for a discrete gene (integers, choices) the fractional index into its sorted
values, so ``{256, 384, 512}`` is evenly spaced whatever the numbers.

Every operator repairs its result, so every genome decodes to a valid
config: values inside the bounds, integers whole, choices exact, and the
task's constraints met. Nothing is ever rejected. The one constraint kind
today is ``("multiple", a, b)``: gene ``a`` is a multiple of gene ``b``
(nanoGPT's n_embd of n_head).

Decoding rounds what a person would not tell apart, so genomes that differ by
less are the same config and share cache entries: a log gene to 4
significant digits, a linear float gene to 3 significant digits of its range
(dropout in [0, 0.2]: 3 decimals).

All randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import bisect
import copy
import math
import random
from functools import lru_cache
from typing import Mapping, Sequence

import numpy as np

from gpnas.config import GeneSpec, SpaceConfig
from gpnas.search.individuals import Male


class Gene:
    """One gene's geometry in genome units (log10 for a log gene)."""

    def __init__(self, spec: GeneSpec):
        self.spec, self.name = spec, spec.name
        # string choices (a table's categories) are carried as their index
        self.labels = spec.values() if spec.choices is not None and any(isinstance(c, str) for c in spec.choices) \
            else None
        self.discrete, self.integer, self.log = spec.discrete, spec.integer, spec.log
        self.values = tuple(self.genome_value(v) for v in spec.values())   # sorted, discrete genes only
        self.low, self.high = ((self.values[0], self.values[-1]) if self.discrete
                               else (self.genome_value(spec.low), self.genome_value(spec.high)))
        # a table's continuous gene: normalised units follow its recorded values (a quantile warp)
        self.warp = (None if self.discrete or spec.quantiles is None else
                     (np.array([self.genome_value(v) for v in spec.quantiles]), np.linspace(0, 1, len(spec.quantiles))))
        span = 0 if self.discrete else spec.high - spec.low
        # a linear float keeps 3 significant digits of its range
        self.decimals = 2 - math.floor(math.log10(span)) if span > 0 and not self.log else None

    def genome_value(self, v) -> float:
        if self.labels is not None:
            return float(self.labels.index(v)) if v in self.labels else 0.0
        return (math.log10(v) if v > 0 else -math.inf) if self.log else float(v)

    @property
    def movable(self) -> bool:
        return len(self.values) > 1 if self.discrete else self.high > self.low

    def sample(self, rng: random.Random) -> float:
        if self.warp is not None:
            return self.from_unit(rng.random())
        return rng.choice(self.values) if self.discrete else rng.uniform(self.low, self.high)

    def snap(self, x: float) -> float:
        """Clip to the bounds (NaN: the middle) and, if discrete, move to the nearest allowed value."""
        x = (self.low + self.high) / 2 if math.isnan(x) else min(max(x, self.low), self.high)
        return _nearest(self.values, x) if self.discrete else x

    def to_unit(self, x: float) -> float:
        """Genome units -> 0..1 (fractional index for discrete genes)."""
        if self.discrete:
            vals = self.values
            if len(vals) == 1:
                return 0.0
            x = min(max(x, vals[0]), vals[-1])
            i = bisect.bisect_right(vals, x) - 1
            frac = 0.0 if i == len(vals) - 1 else (x - vals[i]) / (vals[i + 1] - vals[i])
            return (i + frac) / (len(vals) - 1)
        if self.warp is not None:
            return float(np.interp(x, *self.warp))
        return 0.0 if self.high == self.low else (min(max(x, self.low), self.high) - self.low) / (self.high - self.low)

    def from_unit(self, u: float) -> float:
        """0..1 -> genome units (linear between neighbouring values of a discrete gene)."""
        u = min(max(u, 0.0), 1.0)
        if self.discrete:
            vals = self.values
            pos = u * (len(vals) - 1)
            i = min(int(pos), len(vals) - 1)
            return vals[i] if i == len(vals) - 1 else vals[i] + (pos - i) * (vals[i + 1] - vals[i])
        if self.warp is not None:
            return float(np.interp(u, self.warp[1], self.warp[0]))
        return self.low + u * (self.high - self.low)

    def decode(self, x: float):
        """The config value of a (snapped) genome value."""
        spec = self.spec
        if self.labels is not None:
            return self.labels[int(round(x))]
        if spec.choices is not None:
            return min(spec.choices, key=lambda c: abs(self.genome_value(c) - x))
        if self.integer:
            return int(round(x))
        if self.log:
            return min(max(float(f"{10 ** x:.4g}"), spec.low), spec.high)
        return min(max(round(x, self.decimals) if self.decimals is not None else x, spec.low), spec.high)

    def step(self, value, rng: random.Random, step_scale: float):
        """``value`` (config units) moved one step: a discrete gene to an adjacent allowed
        value (by index), a continuous one by ``step_scale`` of its range times
        U(0.5, 1.5), reflected at a bound."""
        if self.discrete:
            values = list(self.spec.values())
            i = (values.index(value) if self.labels is not None
                 else min(range(len(values)), key=lambda j: abs(values[j] - value)))
            moves = [j for j in (i - 1, i + 1) if 0 <= j < len(values)]
            return values[rng.choice(moves)] if moves else value
        if self.warp is not None:   # the step is in normalised units
            lo, hi, x = 0.0, 1.0, self.to_unit(self.genome_value(value))
        else:
            lo, hi, x = self.low, self.high, self.genome_value(value)
        delta = rng.choice((-1.0, 1.0)) * step_scale * (hi - lo) * rng.uniform(0.5, 1.5)
        y = x + delta if lo <= x + delta <= hi else x - delta  # reflect at a bound
        y = min(max(y, lo), hi)
        y = self.from_unit(y) if self.warp is not None else y
        return 10 ** y if self.log else y

    def other_value(self, value, rng: random.Random, sigma: float):
        """A mutation of one gene (Real et al.): a discrete gene takes another allowed
        value uniformly, a continuous one moves by N(0, sigma) of its range, clipped."""
        if self.discrete:
            values = self.spec.values()
            return rng.choice([v for v in values if v != value] or values)
        if self.warp is not None:
            x = self.from_unit(min(max(self.to_unit(self.genome_value(value)) + rng.gauss(0.0, sigma), 0.0), 1.0))
        else:
            x = min(max(self.genome_value(value) + rng.gauss(0.0, sigma * (self.high - self.low)), self.low),
                    self.high)
        return 10 ** x if self.log else x


class Space:
    """A space's genes and constraints, with every operator the search applies to genomes."""

    def __init__(self, config: SpaceConfig):
        self.config = config
        self.genes = tuple(Gene(spec) for spec in config.genes)
        self.names = tuple(g.name for g in self.genes)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.constraints = tuple(config.constraints)

    def __len__(self) -> int:
        return len(self.genes)

    def gene(self, name: str) -> Gene:
        return self.genes[self.index[name]]

    @property
    def movable(self) -> list[str]:
        return [g.name for g in self.genes if g.movable]

    # ---------------------------------------------------------- genome <-> config
    def sample(self, rng: random.Random) -> Male:
        """A random genome: discrete genes uniform over their values, others uniform in their (log) range."""
        return self.repair(Male(g.sample(rng) for g in self.genes))

    def repair(self, genome: list) -> list:
        """Fix ``genome`` in place so it decodes to a valid config, and return it: each
        gene clipped and snapped, then each constraint met (``_multiple``)."""
        if len(genome) != len(self.genes):
            raise ValueError(f"a genome has {len(self.genes)} genes {self.names}, got {len(genome)}")
        for i, g in enumerate(self.genes):
            genome[i] = float(g.snap(float(genome[i])))
        for kind, a, b in self.constraints:
            if kind == "multiple" and a in self.index and b in self.index:
                self._multiple(genome, self.index[a], self.index[b])
        return genome

    def _multiple(self, genome: list, ia: int, ib: int) -> None:
        """Make gene ``ia`` a multiple of gene ``ib``: move ``ia`` to the nearest allowed
        multiple; failing that, ``ib`` to the nearest allowed divisor; failing that, both to
        the nearest valid pair in normalised units (the preset guarantees one exists)."""
        ga, gb = self.genes[ia], self.genes[ib]
        e, h = int(genome[ia]), int(genome[ib])
        if not e % h:
            return
        multiples = [v for v in ga.values if int(v) % h == 0]
        divisors = [v for v in gb.values if e % int(v) == 0]
        if multiples:
            e = min(multiples, key=lambda v: (abs(v - e), v))
        elif divisors:
            h = min(divisors, key=lambda v: (abs(v - h), v))
        else:
            uh, ue = gb.to_unit(h), ga.to_unit(e)
            pairs = [(x, y) for x in gb.values for y in ga.values if int(y) % int(x) == 0]

            def distance(pair):  # in normalised units, ties to the smaller pair
                return abs(gb.to_unit(pair[0]) - uh) + abs(ga.to_unit(pair[1]) - ue), pair
            h, e = min(pairs, key=distance)
        genome[ia], genome[ib] = float(e), float(h)

    def decode(self, genome: Sequence[float]) -> dict:
        """The config a genome stands for: {gene name: value}, rounded (module docstring)."""
        g = self.repair(list(genome))
        return {gene.name: gene.decode(x) for gene, x in zip(self.genes, g)}

    def encode(self, config: Mapping) -> Male:
        """The (repaired) genome of a config; keys outside the space are ignored."""
        return self.repair(Male(self.gene(name).genome_value(config[name]) for name in self.names))

    def unit(self, genome: Sequence[float]) -> np.ndarray:
        """The genome in normalised units, shape (n_genes,)."""
        return np.array([g.to_unit(float(x)) for g, x in zip(self.genes, genome)])

    def config_unit(self, config: Mapping) -> np.ndarray:
        """A config (not necessarily in the space) in normalised units, unrepaired."""
        return np.array([g.to_unit(g.genome_value(config[g.name])) for g in self.genes])

    def distance(self, a: Sequence[float], b: Sequence[float]) -> float:
        """Euclidean distance of two genomes in normalised units."""
        return float(np.linalg.norm(self.unit(a) - self.unit(b)))

    # ----------------------------------------------------------------- operators
    def crossover(self, a: list, b: list, rng: random.Random) -> tuple[list, list]:
        """In place (DEAP style): discrete genes swap with probability 1/2, continuous
        genes blend (BLX-0.5) in normalised units; both repaired."""
        for i, g in enumerate(self.genes):
            if g.discrete:
                if rng.random() < 0.5:
                    a[i], b[i] = b[i], a[i]
            else:
                ua, ub = g.to_unit(a[i]), g.to_unit(b[i])
                gamma = 2.0 * rng.random() - 0.5  # uniform in [-0.5, 1.5]
                a[i] = g.from_unit((1 - gamma) * ua + gamma * ub)
                b[i] = g.from_unit(gamma * ua + (1 - gamma) * ub)
        self.repair(a)
        self.repair(b)
        return a, b

    def mutate(self, genome: list, rng: random.Random, scale: float | Mapping[str, float]) -> list:
        """Gaussian mutation in place: every gene moves by N(0, sigma) in normalised units,
        sigma = ``scale`` (one number, or gene name -> sigma; missing genes stay)."""
        for i, g in enumerate(self.genes):
            sigma = scale.get(g.name, 0.0) if isinstance(scale, Mapping) else scale
            if sigma > 0:
                genome[i] = g.from_unit(g.to_unit(g.snap(float(genome[i]))) + rng.gauss(0.0, sigma))
        return self.repair(genome)

    def neighbour(self, config: dict, names: Sequence[str], rng: random.Random, step_scale: float) -> dict:
        """``config`` with each gene of ``names`` moved one step (``Gene.step``)."""
        out = dict(config)
        for name in names:
            out[name] = self.gene(name).step(config[name], rng, step_scale)
        return out

    def neighbours(self, genome, rng: random.Random, m: int, step_scale: float) -> list:
        """Up to ``m`` distinct neighbours (genomes) of ``genome``, each one or two genes
        away (a repair may move a constrained gene with it), none equal to it."""
        config = self.decode(genome)
        names = self.movable
        seen, out = {_key(config)}, []
        for _ in range(8 * m):  # a small space may have fewer than m neighbours
            if len(out) == m or not names:
                break
            chosen = rng.sample(names, min(len(names), rng.choice((1, 2))))
            candidate = self.encode(self.neighbour(config, chosen, rng, step_scale))
            key = _key(self.decode(candidate))
            if key not in seen:
                seen.add(key)
                out.append(candidate)
        return out

    def mutate_one(self, genome, rng: random.Random, sigma: float):
        """A new genome with one gene mutated (``Gene.other_value``), the gene drawn
        uniformly among the movable ones; redrawn until the config changes (a space of
        one config returns an unchanged copy)."""
        config = self.decode(genome)
        names = self.movable
        for _ in range(20):
            if not names:
                break
            name = rng.choice(names)
            child = dict(config)
            child[name] = self.gene(name).other_value(config[name], rng, sigma)
            mutated = self.encode(child)
            if self.decode(mutated) != config:
                return mutated
        return copy.deepcopy(genome)


@lru_cache(maxsize=64)
def space_of(config: SpaceConfig) -> Space:
    """The ``Space`` of a space config (cached: a config is frozen)."""
    return Space(config)


def as_space(space) -> Space:
    return space if isinstance(space, Space) else space_of(space)


def _nearest(vals: tuple[float, ...], x: float) -> float:
    """The element of sorted ``vals`` nearest to ``x`` (ties: the lower)."""
    i = bisect.bisect_left(vals, x)
    if i == 0:
        return vals[0]
    if i == len(vals):
        return vals[-1]
    return vals[i - 1] if x - vals[i - 1] <= vals[i] - x else vals[i]


def _key(config: dict) -> tuple:
    return tuple(sorted(config.items()))
