"""Males: the genome's DEAP-style operators and the early score.

A male is ``individuals.Male``, a list of floats, one per gene of the search
space, in genome units (log10 for a log gene). All gene geometry (sampling,
repair, decoding, normalised units, neighbours) lives in ``search.space``;
these functions are the DEAP-style entry points the engine and the
operators call (in place, invalidating fitness), and accept a
``config.SpaceConfig`` or a ``space.Space``.

All randomness comes from the ``random.Random`` passed in.
"""

from __future__ import annotations

import math
import random
from typing import Mapping

from gpnas.config import (
    BudgetConfig,
    hyperparameter_features,  # noqa: F401 (the predictor sees a male through it)
)
from gpnas.runs.tasks import ARCH_KEYS, train_config_dict  # noqa: F401 (the nanoGPT task's, re-exported)
from gpnas.search.individuals import Male
from gpnas.search.space import as_space

WORST_EARLY_SCORE = float("-inf")


# ---------------------------------------------------------------- genome <-> architecture

def sample_genome(space, rng: random.Random) -> Male:
    """A random male (``Space.sample``)."""
    return as_space(space).sample(rng)


def repair(genome: list, space) -> list:
    """Fix ``genome`` in place so it decodes to a valid config, and return it (``Space.repair``)."""
    return as_space(space).repair(genome)


def decode(genome: list, space, budget: BudgetConfig | None = None) -> dict:
    """The config a genome stands for (``Space.decode``). With ``budget``, the whole
    TrainConfig field dict instead (``train_config_dict``)."""
    arch = as_space(space).decode(genome)
    return train_config_dict(arch, budget) if budget is not None else arch


def encode(arch: Mapping, space) -> Male:
    """The (repaired) genome of a config dict; extra keys are ignored."""
    return as_space(space).encode(arch)


# ---------------------------------------------------------------- operators

def _invalidate(genome) -> None:
    if hasattr(genome, "fitness"):
        del genome.fitness.values


def cx_genome(a: list, b: list, space, rng: random.Random) -> tuple[list, list]:
    """Crossover in place (DEAP style, returns ``(a, b)``; ``Space.crossover``):
    discrete genes swap, continuous genes blend (BLX-0.5); fitness invalidated."""
    as_space(space).crossover(a, b, rng)
    for child in (a, b):
        _invalidate(child)
    return a, b


def mut_genome(genome: list, space, rng: random.Random,
               scale: float | Mapping[str, float]) -> tuple[list]:
    """Gaussian mutation in place (DEAP style, returns ``(genome,)``; ``Space.mutate``)."""
    as_space(space).mutate(genome, rng, scale)
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
