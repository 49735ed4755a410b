"""The co-evolution engine: males (architectures) and females (learning-curve
predictors) in one DEAP loop.

The loop, as ``Search.run`` executes it with this class's steps::

    state <- last snapshot of the run folder, or generation 0:
             seed the archive with random males trained to completion,
             random males, random females
    for gen in next .. generations:
        early-train every male without a cached early result        (1)
        score females on the archive's completed curves; in the
            ablations, female_steps plain GP steps                  (2)
        male fitness <- the chosen predictor's prediction, calibrated
            on earlier promotions, its spread the uncertainty               (3)
        promote the promote_k males of largest expected
            improvement (+1 at random) to full training by
            resuming their early checkpoints                        (4)
        breed: sons by cross-gender mating, females by female_steps
            mating passes (or the mode's alternative), elites of
            each sex kept                                           (5)
        log; snapshot; callbacks                                    (6)

Modes change steps 2, 3 and 5 only: a mode is the operators it chooses
(``modes``: male fitness, breeding, females or not). Combined and
within-gender make the same number of variation events per generation:
n_males - male_elites sons, and female_steps passes over the females, each
making n_females - female_elites daughters (mating passes in combined, plain GP
steps in within-gender); they differ in the operator alone.

Every evaluation goes through the ``ledger.Ledger`` the engine is given: it
never knows whether a task trains or replays a table, and compute is what the
ledger charges (training FLOPs, or a table's cost per step) within a budget it
never overspends.

Everything random draws from one ``random.Random`` whose state is part of every
snapshot, so a resumed run ends exactly where an uninterrupted one does.
"""

from __future__ import annotations

import copy
import math
import random

import numpy as np

from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.search import females as fem
from gpnas.search import mating
from gpnas.search.calibration import Calibration
from gpnas.search.loop import WORST, Search, _finite, add_work
from gpnas.search.males import early_score, sample_genome
from gpnas.search.modes import MODES, Mode
from gpnas.search.state import State
from gpnas.search.surrogate import Surrogate


class Evolution(Search):
    """One run of one mode: preset and ledger in (the task, archive and budget behind
    it), snapshots and callbacks out. ``Search.run`` is the loop; this class is its steps."""

    def __init__(self, preset, mode, ledger, snapshots=None, callbacks=(), prior: tuple = ()):
        super().__init__(preset, ledger, snapshots, callbacks)
        self.prior = tuple(prior)  # tree texts the females start from (``females.prior_formulas``)
        self.mode = mode if isinstance(mode, Mode) else MODES[mode]
        self.name = self.mode.name
        self.gp_config = trees.GPConfig(max_depth=self.ga.tree_max_depth, max_size=self.ga.tree_max_size,
                                     tournament_size=self.ga.female_tournament,
                                     parsimony_size=self.ga.parsimony_size)
        self.scored_on = None     # (females list, training curve keys) the females were last scored on
        self.score_cache = ((), {})  # (training curve keys, evolution.score's cache on them)
        self.rankings = None      # a list: log every son's candidate rankings there (mating.MatingContext)

    def step(self, state: State, rng: random.Random) -> dict:
        """One generation, steps (1) to (5); returns its log row. Other search
        methods (gpnas.search.methods) replace this and ``start``, and keep the rest."""
        work = self.ledger.evaluate(state, [self.ledger.early_request(g) for g in state.males])  # (1)
        self.note_sons(state)
        curve_set = self.completed_curves(state)
        holdout = self.mode.breeding.vary_females(self, state, curve_set, rng)  # (2)
        rows = self.assign_male_fitness(state, curve_set)                   # (3)
        promoted = self.promote(state, rng, work)                           # (4)
        curve_set = self.completed_curves(state)
        if self.mode.females:
            holdout = self.score_females(state, curve_set)
        row = self.log_row(state, work, promoted, holdout)
        state.males, state.females = self.breed(state, rows, curve_set, rng)  # (5)
        return row

    # ------------------------------------------------------- generation zero
    def start(self) -> tuple[State, dict]:
        """Generation 0: random males trained to completion seed the archive."""
        rng = random.Random(self.seed)
        seeds = [sample_genome(self.space, rng) for _ in range(self.ga.seed_archive)]
        males = [sample_genome(self.space, rng) for _ in range(self.ga.n_males)]
        females = (fem.initial_population(self.ga.n_females, self.pset, rng, self.gp_config, self.prior)
                   if self.mode.females else [])
        state = State(generation=0, males=males, females=females, rng_state=rng.getstate())
        work = self.ledger.evaluate(state, [self.ledger.full_request(g, state) for g in seeds])
        for g in seeds:
            self.ledger.record_complete(state, g)
        return state, work

    def score_females(self, state: State, curve_set, again: bool = True):
        """``females.score`` on the run's training curves; returns the held-out errors.
        With ``again=False`` it is skipped (returning None) when these very females were
        last scored on these very training curves: the previous generation's last mating
        pass, when no curve has completed since."""
        keys = curve_set.keys
        if not again and self.scored_on is not None and self.scored_on[0] is state.females \
                and self.scored_on[1] == keys:
            return None
        _, holdout = fem.score(state.females, curve_set, self.pset, self.scores(curve_set))
        self.scored_on = (state.females, keys)
        return holdout

    def scores(self, curve_set) -> dict:
        """Every female tree scored on these training curves so far (``evolution.score``'s
        cache): a tree met again in a later pass, step or generation is not scored again
        while no curve has completed in between."""
        keys = curve_set.keys
        if self.score_cache[0] != keys:
            self.score_cache = (keys, {})
        return self.score_cache[1]

    def evolve_females(self, state: State, curve_set, rng):
        """Score the females, then run the preset's plain GP steps among them."""
        if not self.mode.females:
            return None
        cache = self.scores(curve_set)
        _, holdout = fem.score(state.females, curve_set, self.pset, cache)
        for _ in range(self.ga.female_steps):
            state.females = fem.gp_step(state.females, curve_set, self.pset, rng, self.ga.female_elites,
                                        self.gp_config, cache)
        return holdout

    def assign_male_fitness(self, state: State, curve_set) -> dict:
        """Fitness of every male; returns {male index: mating.Father} (his early curve
        and feature row) for mating.

        Prediction modes: the raw prediction of a male is the chosen predictor's
        (``females.choose``: cross-validated among the females' front and the
        baselines; an ensemble of dissimilar formulas), his uncertainty its
        spread; both go through the calibration fitted on the run's earlier
        promotions (``calibration``), and the calibrated mean is his fitness. The early
        score is computed for every male, for the log.
        """
        records = self.ledger.early_records(state, state.males)
        usable = [i for i, r in enumerate(records) if r is not None and r.status == "early"]
        self.predicted = {}
        for i, r in enumerate(records):
            if i not in usable:
                state.males[i].fitness.values = (WORST,)
                self.ledger.note_failure(state, r)
        if not usable:
            return {}
        scores = {}
        for i in usable:
            curve = records[i].result["curve"]
            compute = self.ledger.task.early_compute(records[i].train_config,
                                                     self.ledger.task.steps_run(records[i].result))
            scores[i] = early_score(curve["val_loss"], curve["eval_steps"], compute * 1e6)
        return self.mode.fitness.assign(self, state, records, usable, scores, curve_set)

    def predict_males(self, state: State, records, usable, scores, curve_set) -> dict:
        """Prediction modes' fitness (``modes.Predicted``): the chosen predictor's raw
        prediction, calibrated; returns {male index: mating.Father}."""
        curves = [self.ledger.curve(records[i]) for i in usable]
        # the raw prediction: the predictor chosen by cross-validation among the females'
        # front, the linear model and the baselines, its ensemble's spread the uncertainty;
        # the last value until enough curves completed. Then the calibration on earlier promotions.
        model = fem.choose(state.females + self.prior_trees(curve_set), curve_set, formulas=False,
                           scored=True, prior=self.prior)  # the females were scored in step (2)
        _, columns = fem.predict_finals([], curves, self.prefix_frac, self.pset, features=self.features,
                                        cohort=curve_set.cohort)
        if model is not None:
            raw, spread = model.predict(curves, return_std=True)
        else:
            raw, spread = np.array([c.values[-1] for c in curves]), np.zeros(len(curves))
        self.choice = model
        calibration = self.calibration(state)
        mean, sigma = calibration(raw), calibration.spread(spread)
        rows = {}
        for j, i in enumerate(usable):
            p = float(mean[j])
            state.males[i].fitness.values = (p if math.isfinite(p) else WORST,)
            self.predicted[self.ledger.key(state.males[i], self.ledger.full)] = {
                "raw": _finite(raw[j]), "spread": _finite(sigma[j]), "early_score": _finite(scores[i])}
            rows[i] = mating.Father(curves[j], {name: float(col[j]) for name, col in columns.items()})
        return rows

    def prior_trees(self, curve_set) -> list:
        """The prior's formulas as trees scored on ``curve_set``'s training curves: always among
        the candidates of the choice, whatever became of them among the females."""
        if not self.prior or not curve_set.curves:
            return []
        out = [trees.parse_tree(text, self.pset) for text in self.prior]
        fem.rescore(out, curve_set, self.pset, self.scores(curve_set))
        return out

    def calibration(self, state: State) -> Calibration:
        """The monotone map raw -> true fitted on this run's earlier promotions by prediction."""
        pairs = [(p["raw"], p["true"]) for p in state.promotions
                 if isinstance(p.get("raw"), (int, float)) and isinstance(p.get("true"), (int, float))]
        return Calibration.fit(*zip(*pairs)) if pairs else Calibration.fit([], [])

    def promote(self, state: State, rng: random.Random, work: dict) -> list:
        """Resume the promote_k males of largest expected improvement to the full
        budget (+1 at random, for calibration); see ``gpnas.search.calibration``.

        Expected improvement is over the best true final loss so far, with each
        male's calibrated mean and spread; ties (no spread, all worse than the
        best) go to the lower mean. Modes without predictions rank by fitness.
        """
        alive = [i for i, g in enumerate(state.males) if g.fitness.values[0] < WORST]
        mu = np.array([state.males[i].fitness.values[0] for i in alive])
        sigma = np.array([self.predicted.get(self.ledger.key(state.males[i], self.ledger.full), {}).get("spread")
                          or 0.0 for i in alive])
        best = state.hall_of_fame[0]["final_val_loss"] if state.hall_of_fame else (mu.min() if mu.size else 0.0)
        gain = self.mode.fitness.gain(mu, sigma, best)
        raw = [self.predicted.get(self.ledger.key(state.males[i], self.ledger.full), {}).get("raw") for i in alive]
        raw = [r if r is not None else 0.0 for r in raw]  # the calibration is flat at its ends: raw breaks ties
        ranked = [alive[j] for j in sorted(range(len(alive)), key=lambda j: (-gain[j], mu[j], raw[j], j))]
        fresh, seen = [], set()
        for i in ranked:
            key = self.ledger.key(state.males[i], self.ledger.full)
            if key not in seen and key not in state.charged:
                fresh.append(i)
                seen.add(key)
        chosen = fresh[: self.ga.promote_k]
        rest = fresh[self.ga.promote_k:]
        if self.ga.calibration and rest:
            chosen.append(rest[rng.randrange(len(rest))])
        add_work(work, self.ledger.evaluate(state, [self.ledger.full_request(state.males[i], state) for i in chosen]))
        for i in chosen:
            g = state.males[i]
            self.ledger.record_complete(state, g, predicted=g.fitness.values[0],
                                        seen=self.predicted.get(self.ledger.key(g, self.ledger.full), {}))
        return chosen

    def breed(self, state: State, rows: dict, curve_set, rng: random.Random):
        """Next generation's males and females, elites of each sex kept.

        Every mode makes n_males - male_elites sons. Combined makes its
        daughters in female_steps mating passes (each pass: n_females -
        female_elites daughters of tournament mothers and their fathers'
        choices, then scored); the other modes' females already had their
        female_steps plain GP steps in (2) and pass through unchanged.
        """
        ga = self.ga
        ranked = sorted(state.males, key=lambda g: (g.fitness.values[0], self.raw_of(g)))
        male_elites = [copy.deepcopy(g) for g in ranked[: ga.male_elites]]
        n_sons = ga.n_males - len(male_elites)
        ctx = self.mating_context(state, state.females, curve_set, rng, sons=True)
        return self.mode.breeding.breed(self, state, rows, curve_set, rng, male_elites, n_sons, ctx)

    def mating_pass(self, state: State, females: list, pool: list[int], curve_set, rng) -> list:
        """One pass of daughters over the females: elites kept, the rest daughters, all scored."""
        ga = self.ga
        ctx = self.mating_context(state, females, curve_set, rng)
        elites = [fem.clone(f) for f in fem.best(females, ga.female_elites)]
        keys = {i: self.ledger.key(state.males[i], self.ledger.full) for i in pool}
        daughters = []
        for _ in range(len(females) - len(elites)):
            father = self.select_father(pool, rng)
            mother = mating.sel_tournament(females, 1, ga.female_tournament, rng)[0]
            daughter, chose = mating.make_daughter(mother, keys[father], ctx)
            daughters.append(daughter)
            state.mating_stats["chose" if chose else "tournament"] += 1
        population = elites + daughters
        fem.rescore(population, curve_set, self.pset, self.scores(curve_set))
        self.scored_on = (population, curve_set.keys)
        return population

    def raw_of(self, g) -> float:
        """A male's raw (uncalibrated) prediction, where he has one: ties of the calibrated fitness."""
        raw = self.predicted.get(self.ledger.key(g, self.ledger.full), {}).get("raw")
        return raw if raw is not None else 0.0

    def father_pool(self, state: State, rows: dict) -> list[int]:
        """The males that have a feature row (an early curve), best first: the fathers'
        tournaments draw from it, so it is ranked once per generation."""
        return sorted(rows or range(len(state.males)),
                      key=lambda i: (state.males[i].fitness.values[0], self.raw_of(state.males[i])))

    def select_father(self, pool: list[int], rng: random.Random) -> int:
        """A tournament over ``father_pool``: the best of ``male_tournament`` uniform draws."""
        return pool[min(rng.randrange(len(pool)) for _ in range(self.ga.male_tournament))]

    def mating_context(self, state: State, females: list, curve_set, rng, sons: bool = False) -> mating.MatingContext:
        """The operator's context; ``sons``: for the sons (with the rankers they need)."""
        logged = sons and self.rankings is not None
        early = (self.ledger.early_values(state)
                 if sons and (logged or self.ga.son_ranker in ("surrogate", "judged")) else None)
        surrogate = (Surrogate.fit(early, self.features.config_keys)
                     if early is not None and (logged or self.ga.son_ranker == "surrogate") else None)
        predictions = (fem.predict_all(females, curve_set.columns, self.pset, self.scores(curve_set))
                       if females and curve_set.curves else np.empty((len(females), 0)))
        return mating.MatingContext(
            space=self.space, pset=self.pset, rng=rng, gp_config=self.gp_config, prefix_frac=self.prefix_frac,
            n_candidates=self.ga.son_candidates, step_scale=self.ga.guided_step,
            mutation_scale=self.ga.mutation_sigma, p_guided=self.ga.p_guided,
            cx_prob=self.ga.cx_prob, mut_prob=self.ga.mut_prob, female_predictions=predictions,
            completed_targets=curve_set.targets, completed_index=curve_set.index, females=females,
            ranges=fit.feature_ranges(curve_set.train.columns) if curve_set.curves else {},
            tournament_size=self.ga.female_tournament, features=self.features,
            curve_config=lambda g: self.ledger.task.curve_config(self.ledger.arch(g)),
            predictor=self.choice if logged or self.ga.son_ranker == "predictor" else None,
            rankings=self.rankings if sons else None, ranker=self.ga.son_ranker, surrogate=surrogate,
            early=early if logged or self.ga.son_ranker == "judged" else None,
        )

    def note_sons(self, state: State):
        """Fill in the early loss of this generation's sons, now that they are trained."""
        for son in state.sons:
            if son["generation"] == state.generation and son.get("early_loss") is None:
                record = self.ledger.own_record(state, son["key"])
                if record is not None and record.status == "early":
                    son["early_loss"] = float(record.result["curve"]["val_loss"][-1])
