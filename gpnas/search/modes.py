"""The engine's modes, as the operators they choose.

A mode is three choices the engine's loop calls without knowing which it
holds (DEAP's toolbox, pymoo's operator objects):

- **male fitness** (step 3): ``Predicted`` (the chosen predictor's calibrated
  prediction; promotion by expected improvement) or ``EarlyScore`` (the
  early learning speed; promotion by fitness alone);
- **breeding** (steps 2 and 5): ``CrossGender`` (sons by the cross-gender
  operator, daughters in ``female_steps`` mating passes), ``WithinGender``
  (DEAP's ordinary operators and random pairing; the females take
  ``female_steps`` plain GP steps in step 2: as many variation events as
  combined makes) or ``FreshMales`` (new random males each generation; the
  females as in within-gender);
- whether the mode has **females** at all.

==============  ============  =============  =======
mode            fitness       breeding       females
==============  ============  =============  =======
combined        Predicted     CrossGender    yes
within-gender   Predicted     WithinGender   yes
female          Predicted     FreshMales     yes
male            EarlyScore    WithinGender   no
==============  ============  =============  =======
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from gpnas.search import mating
from gpnas.search.calibration import expected_improvement
from gpnas.search.loop import WORST, _finite
from gpnas.search.males import sample_genome

# ------------------------------------------------------------- male fitness

class Predicted:
    """A male's fitness is the chosen predictor's calibrated prediction of his final
    value (``Evolution.predict_males``); promotion by expected improvement."""

    def assign(self, engine, state, records, usable, scores, curve_set) -> dict:
        return engine.predict_males(state, records, usable, scores, curve_set)

    @staticmethod
    def gain(mu, sigma, best) -> np.ndarray:
        return expected_improvement(mu, sigma, best)


class EarlyScore:
    """A male's fitness is his early learning speed (higher is better); no predictor,
    so promotion ranks by fitness alone."""

    def assign(self, engine, state, records, usable, scores, curve_set) -> dict:
        for i in usable:
            state.males[i].fitness.values = (-scores[i] if math.isfinite(scores[i]) else WORST,)
            engine.predicted[engine.ledger.key(state.males[i], engine.ledger.full)] = {
                "raw": None, "spread": None, "early_score": _finite(scores[i])}
        return {}

    @staticmethod
    def gain(mu, sigma, best) -> np.ndarray:
        return np.zeros(len(mu))


# ----------------------------------------------------------------- breeding

class CrossGender:
    """Sons by the cross-gender operator (the mother ranks the father's neighbours),
    daughters in ``female_steps`` mating passes (the mother crossed with the father's
    choice). The females vary here, in step (5), so step (2) only scores them."""

    def vary_females(self, engine, state, curve_set, rng):
        return engine.score_females(state, curve_set, again=False)

    def breed(self, engine, state, rows, curve_set, rng, male_elites, n_sons, ctx):
        pool = engine.father_pool(state, rows)
        sons = []
        for _ in range(n_sons):
            father_i = engine.select_father(pool, rng)
            mother = mating.sel_tournament(state.females, 1, engine.ga.female_tournament, rng)[0]
            son, guided = mating.make_son(state.males[father_i], mother, rows.get(father_i), ctx)
            sons.append(son)
            state.mating_stats["guided" if guided else "random"] += 1
            state.sons.append({"generation": state.generation + 1,
                               "key": engine.ledger.key(son, engine.ledger.early), "guided": guided,
                               "early_loss": None})
        females = state.females
        for _ in range(engine.ga.female_steps):
            females = engine.mating_pass(state, females, pool, curve_set, rng)
        return male_elites + sons, females


class WithinGender:
    """Sons by DEAP's ordinary operators (bounded crossover and mutation) on fathers
    drawn by tournament; the females take ``female_steps`` plain GP steps in step (2)."""

    def vary_females(self, engine, state, curve_set, rng):
        return engine.evolve_females(state, curve_set, rng)

    def breed(self, engine, state, rows, curve_set, rng, male_elites, n_sons, ctx):
        fathers = mating.sel_tournament(state.males, n_sons, engine.ga.male_tournament, rng)
        return male_elites + mating.breed_within(fathers, ctx), state.females


class FreshMales(WithinGender):
    """New random males every generation (the female mode: predictions promote them)."""

    def breed(self, engine, state, rows, curve_set, rng, male_elites, n_sons, ctx):
        return [sample_genome(engine.space, rng) for _ in range(engine.ga.n_males)], state.females


@dataclass(frozen=True)
class Mode:
    name: str
    females: bool          # evolve females and use their predictions
    fitness: object        # Predicted or EarlyScore
    breeding: object       # CrossGender, WithinGender or FreshMales


MODES = {
    "combined": Mode("combined", True, Predicted(), CrossGender()),
    "within-gender": Mode("within-gender", True, Predicted(), WithinGender()),
    "female": Mode("female", True, Predicted(), FreshMales()),
    "male": Mode("male", False, EarlyScore(), WithinGender()),
}
