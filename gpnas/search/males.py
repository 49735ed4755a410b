"""Males: the architecture genome, its repair, decoding and DEAP operators.

A male is ``individuals.Male``, a list of five floats in natural units, one per
gene of ``GENES``; the learning rate is carried as log10(lr). The preset's
``SpaceConfig`` gives each gene's allowed values. Operators work in
*normalised* units: each gene's range mapped to 0..1 (for a gene with choices,
the fractional index into its sorted choices, so ``{256, 384, 512}`` is evenly
spaced whatever the numbers). Every operator repairs its result, so every
genome decodes to a valid architecture: values inside the bounds, integers
whole, choices exact, n_embd a multiple of n_head. Nothing is ever rejected.

All randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import bisect
import math
import random
from functools import lru_cache
from typing import Mapping

from gpnas.config import (
    BudgetConfig,
    GeneSpec,
    SpaceConfig,
    hyperparameter_features,  # noqa: F401 (the predictor sees a male through it)
)
from gpnas.search.individuals import Male

GENES = ("n_layer", "n_head", "n_embd", "dropout", "log10_lr")
# The space gene behind each genome gene.
SPACE_GENE = dict(zip(GENES, ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")))
WORST_EARLY_SCORE = float("-inf")


# ---------------------------------------------------------------- per-gene geometry

@lru_cache(maxsize=None)
def _values(spec: GeneSpec) -> tuple[float, ...]:
    """Allowed values of a discrete gene in genome units (log10 for the learning rate)."""
    return tuple(math.log10(v) if spec.log else float(v) for v in spec.values())


def _bounds(spec: GeneSpec) -> tuple[float, float]:
    lo, hi = spec.low, spec.high
    return (math.log10(lo), math.log10(hi)) if spec.log else (float(lo), float(hi))


def _snap(spec: GeneSpec, x: float) -> float:
    """Clip to the bounds and, for a discrete gene, move to the nearest allowed value (ties: lower)."""
    lo, hi = _bounds(spec)
    x = (lo + hi) / 2 if math.isnan(x) else min(max(x, lo), hi)
    return _nearest(_values(spec), x) if spec.discrete else x


def _nearest(vals: tuple[float, ...], x: float) -> float:
    """The element of sorted ``vals`` nearest to ``x`` (ties: the lower)."""
    i = bisect.bisect_left(vals, x)
    if i == 0:
        return vals[0]
    if i == len(vals):
        return vals[-1]
    return vals[i - 1] if x - vals[i - 1] <= vals[i] - x else vals[i]


def _to_unit(spec: GeneSpec, x: float) -> float:
    """Genome units -> 0..1 (fractional index for discrete genes)."""
    if spec.discrete:
        vals = _values(spec)
        if len(vals) == 1:
            return 0.0
        x = min(max(x, vals[0]), vals[-1])
        i = bisect.bisect_right(vals, x) - 1
        frac = 0.0 if i == len(vals) - 1 else (x - vals[i]) / (vals[i + 1] - vals[i])
        return (i + frac) / (len(vals) - 1)
    lo, hi = _bounds(spec)
    return 0.0 if hi == lo else (min(max(x, lo), hi) - lo) / (hi - lo)


def _from_unit(spec: GeneSpec, u: float) -> float:
    """0..1 -> genome units (linear between neighbouring choices)."""
    u = min(max(u, 0.0), 1.0)
    if spec.discrete:
        vals = _values(spec)
        pos = u * (len(vals) - 1)
        i = min(int(pos), len(vals) - 1)
        return vals[i] if i == len(vals) - 1 else vals[i] + (pos - i) * (vals[i + 1] - vals[i])
    lo, hi = _bounds(spec)
    return lo + u * (hi - lo)


def _spec(space: SpaceConfig, gene: str) -> GeneSpec:
    return space.gene(SPACE_GENE[gene])


# ---------------------------------------------------------------- genome <-> architecture

def sample_genome(space: SpaceConfig, rng: random.Random) -> Male:
    """A random male: discrete genes uniform over their values, others uniform in their (log) range."""
    genes = []
    for gene in GENES:
        spec = _spec(space, gene)
        genes.append(rng.choice(_values(spec)) if spec.discrete else rng.uniform(*_bounds(spec)))
    return repair(Male(genes), space)


def repair(genome: list, space: SpaceConfig) -> list:
    """Fix ``genome`` in place so it decodes to a valid architecture, and return it.

    Each gene is clipped to its bounds (NaN goes to the middle of the range) and
    snapped to its nearest allowed value. If n_embd is then not a multiple of
    n_head, n_embd moves to the nearest allowed multiple of n_head; failing
    that, n_head moves to the nearest allowed divisor of n_embd; failing that,
    both move to the nearest valid pair (the preset guarantees one exists).
    """
    if len(genome) != len(GENES):
        raise ValueError(f"a genome has {len(GENES)} genes {GENES}, got {len(genome)}")
    for i, gene in enumerate(GENES):
        genome[i] = float(_snap(_spec(space, gene), float(genome[i])))
    h, e = int(genome[1]), int(genome[2])
    if e % h:
        embds = [v for v in _values(space.n_embd) if int(v) % h == 0]
        heads = [v for v in _values(space.n_head) if e % int(v) == 0]
        if embds:
            e = min(embds, key=lambda v: (abs(v - e), v))
        elif heads:
            h = min(heads, key=lambda v: (abs(v - h), v))
        else:
            uh, ue = _to_unit(space.n_head, h), _to_unit(space.n_embd, e)
            pairs = [(a, b) for a in _values(space.n_head) for b in _values(space.n_embd) if int(b) % int(a) == 0]

            def distance(pair):  # in normalised units, ties to the smaller pair
                return abs(_to_unit(space.n_head, pair[0]) - uh) + abs(_to_unit(space.n_embd, pair[1]) - ue), pair
            h, e = min(pairs, key=distance)
        genome[1], genome[2] = float(h), float(e)
    return genome


def decode(genome: list, space: SpaceConfig, budget: BudgetConfig | None = None) -> dict:
    """The architecture a genome stands for: n_layer, n_head, n_embd, dropout, learning_rate.

    Dropout is rounded to 3 decimals and the learning rate to 4 significant
    digits (both kept inside the bounds), so genomes that differ by less are
    the same architecture and share cache entries. With ``budget``, returns
    the whole TrainConfig field dict instead (``train_config_dict``).
    """
    g = repair(list(genome), space)
    lr_spec, dr_spec = space.learning_rate, space.dropout
    lr = float(f"{10 ** g[4]:.4g}")
    if lr_spec.choices is not None:
        lr = min(lr_spec.choices, key=lambda c: abs(math.log10(c) - g[4]))
    arch = {
        "n_layer": int(g[0]),
        "n_head": int(g[1]),
        "n_embd": int(g[2]),
        "dropout": min(max(round(g[3], 3), dr_spec.low), dr_spec.high) if dr_spec.choices is None else g[3],
        "learning_rate": min(max(lr, lr_spec.low), lr_spec.high),
    }
    return train_config_dict(arch, budget) if budget is not None else arch


def encode(arch: Mapping, space: SpaceConfig) -> Male:
    """The (repaired) genome of an architecture dict; extra keys are ignored."""
    lr = float(arch["learning_rate"])
    log_lr = math.log10(lr) if lr > 0 else -math.inf
    genes = [arch["n_layer"], arch["n_head"], arch["n_embd"], arch["dropout"], log_lr]
    return repair(Male(float(v) for v in genes), space)


def train_config_dict(arch: Mapping, budget: BudgetConfig) -> dict:
    """The TrainConfig fields of a full run of ``arch``: ``TrainConfig(**d)`` (max_iters = full budget)."""
    return {
        "n_layer": int(arch["n_layer"]),
        "n_head": int(arch["n_head"]),
        "n_embd": int(arch["n_embd"]),
        "dropout": float(arch["dropout"]),
        "learning_rate": float(arch["learning_rate"]),
        "block_size": budget.block_size,
        "batch_size": budget.batch_size,
        "max_iters": budget.full_iters,
        "eval_interval": budget.eval_interval,
        "eval_batches": budget.eval_batches,
        "warmup_iters": budget.warmup_iters,
    }


# ---------------------------------------------------------------- operators

def _invalidate(genome) -> None:
    if hasattr(genome, "fitness"):
        del genome.fitness.values


def cx_genome(a: list, b: list, space: SpaceConfig, rng: random.Random) -> tuple[list, list]:
    """Crossover in place (DEAP style, returns ``(a, b)``): discrete genes swap with
    probability 1/2 (uniform crossover); continuous genes blend (BLX-0.5) in
    normalised units. Both children are repaired, their fitness invalidated."""
    for i, gene in enumerate(GENES):
        spec = _spec(space, gene)
        if spec.discrete:
            if rng.random() < 0.5:
                a[i], b[i] = b[i], a[i]
        else:
            ua, ub = _to_unit(spec, a[i]), _to_unit(spec, b[i])
            gamma = 2.0 * rng.random() - 0.5  # uniform in [-0.5, 1.5]
            a[i] = _from_unit(spec, (1 - gamma) * ua + gamma * ub)
            b[i] = _from_unit(spec, gamma * ua + (1 - gamma) * ub)
    for child in (a, b):
        repair(child, space)
        _invalidate(child)
    return a, b


def mut_genome(genome: list, space: SpaceConfig, rng: random.Random,
               scale: float | Mapping[str, float]) -> tuple[list]:
    """Gaussian mutation in place (DEAP style, returns ``(genome,)``).

    Every gene moves by N(0, sigma) in normalised units, sigma = ``scale`` (one
    number, or a mapping gene -> sigma where missing genes stay), then repair.
    """
    for i, gene in enumerate(GENES):
        sigma = scale.get(gene, 0.0) if isinstance(scale, Mapping) else scale
        if sigma > 0:
            spec = _spec(space, gene)
            genome[i] = _from_unit(spec, _to_unit(spec, _snap(spec, float(genome[i]))) + rng.gauss(0.0, sigma))
    repair(genome, space)
    _invalidate(genome)
    return (genome,)


# ---------------------------------------------------------------- early score

def early_score(val_loss_values, steps=None, tokens: float | None = None) -> float:
    """Early learning speed: how far the validation loss fell per million training tokens.

        score = (first - last of the early validation curve) / (tokens / 1e6)

    ``val_loss_values`` is the early run's validation curve and ``steps`` its
    eval steps (or None; if given, it must match in length), ``tokens`` the tokens
    trained to reach its last point (steps * batch_size * block_size). Higher
    is better. A curve with fewer than 2 points, or any NaN or infinite value
    (a diverged run), scores WORST_EARLY_SCORE (-inf).
    """
    if tokens is None or isinstance(steps, (int, float)):
        raise TypeError("call early_score(values, steps, tokens) or early_score(values, tokens=N)")
    values = [float(v) for v in val_loss_values]
    if steps is not None and len(steps) != len(values):
        raise ValueError(f"early_score: {len(values)} values but {len(steps)} steps")
    if not tokens > 0:
        raise ValueError(f"early_score: tokens must be > 0, got {tokens}")
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        return WORST_EARLY_SCORE
    return (values[0] - values[-1]) / (tokens / 1e6)
