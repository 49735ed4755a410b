"""The co-evolution engine: males (architectures) and females (learning-curve
predictors) in one DEAP loop.

The loop, as ``Evolution.run`` executes it::

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

Modes change steps 2, 3 and 5 only (see ``MODES``). Combined and
within-gender make the same number of variation events per generation:
n_males - male_elites sons, and female_steps passes over the females, each
making n_females - female_elites daughters (mating passes in combined, plain GP
steps in within-gender); they differ in the operator alone.

Compute is counted in training FLOPs (``config.training_flops_per_step``);
a budget (``max_flops``) is never overspent, and a failed evaluation is
charged the steps it was given (the worker reports no progress when it
raises, so what it spent is bounded by what it was asked to do).

Everything random draws from one ``random.Random`` whose state is part of every snapshot, so a resumed
run ends exactly where an uninterrupted one does. Evaluations go through the
``map`` the engine was given; it never knows what runs them.
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass

import numpy as np

from gpnas.config import training_flops_per_step
from gpnas.errors import FileFormatError
from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.runs.archive import EvaluationRecord, evaluation_key
from gpnas.runs.worker import EvalTask, Evaluator, result_curve
from gpnas.search import females as fem
from gpnas.search import mating
from gpnas.search.calibration import Calibration, expected_improvement
from gpnas.search.males import ARCH_KEYS, decode, early_score, sample_genome, train_config_dict
from gpnas.search.state import State, state_from_dict, state_to_dict

WORST = fem.WORST


@dataclass(frozen=True)
class Mode:
    name: str
    females: bool          # evolve females and use their predictions
    male_fitness: str      # "prediction" or "early"
    breeding: str          # "cross", "within" or "random" (fresh random males)


MODES = {
    "combined": Mode("combined", True, "prediction", "cross"),
    "within-gender": Mode("within-gender", True, "prediction", "within"),
    "female": Mode("female", True, "prediction", "random"),
    "male": Mode("male", False, "early", "within"),
}


class Evolution:
    """One run of one mode: preset, data, archive, map and callbacks in; snapshots out."""

    def __init__(self, preset, mode: str, dataset_dir: str, data_sha256: str, archive, checkpoints_dir,
                 map_fn=None, seed: int = 0, task_name: str = "shakespeare_char",
                 device: str = "auto", threads: int | None = None, snapshots=None, callbacks=(),
                 max_flops: int | None = None, evaluate=None, vocab_size: int = 65,
                 keep_checkpoints: bool = False):
        self.preset, self.mode = preset, mode if isinstance(mode, Mode) else MODES[mode]
        self.space, self.budget, self.ga = preset.space, preset.budget, preset.ga
        self.dataset_dir, self.data_sha256, self.task_name = dataset_dir, data_sha256, task_name
        self.archive, self.checkpoints_dir = archive, checkpoints_dir
        # evaluate(tasks) -> one result or Failure per task (DEAP's toolbox.evaluate over
        # toolbox.map); by default the runs' Evaluator over map_fn (serial when None)
        self.evaluate_tasks = evaluate or Evaluator(map_fn, dataset_dir)
        self.seed, self.device, self.threads = seed, device, threads
        self.snapshots, self.callbacks = snapshots, list(callbacks)
        self.max_flops = max_flops    # training FLOPs the run may charge; None: no limit
        self.vocab_size = vocab_size  # enters the parameter count, hence the FLOPs
        self.keep_checkpoints = keep_checkpoints  # False: prune_checkpoints deletes what no promotion needs
        self.pset = fem.make_pset()
        self.gp_config = trees.GPConfig(max_depth=self.ga.tree_max_depth, max_size=self.ga.tree_max_size,
                                     tournament_size=self.ga.female_tournament,
                                     parsimony_size=self.ga.parsimony_size)
        self.full_evals = self.budget.full_iters // self.budget.eval_interval + 1
        # the preset guarantees prefix_length(full_evals, prefix_frac) == the early run's evaluations
        self.prefix_frac = self.budget.prefix_frac
        self.tokens_per_step = self.budget.batch_size * self.budget.block_size
        self.eval_seconds = 0.0   # wall time inside the map: training and model evaluation
        self.tokens_at = {}       # evaluation key -> (compute.tokens, compute.flops) just after it was charged
        self.predicted = {}       # full-run key -> {raw, spread, early_score} of this generation's males
        self.choice = None        # the predictor chosen this generation (predict.CurvePredictor)
        self.scored_on = None     # (females list, training curve keys) the females were last scored on
        self.score_cache = ((), {})  # (training curve keys, evolution.score's cache on them)

    # ----------------------------------------------------------------- the loop
    def run(self, generations: int) -> State:
        """Run (or continue) until ``generations`` generations are done."""
        latest = self.snapshots.load_latest() if self.snapshots else None
        if latest is None:
            state, work = self.start()
            self.finish_generation(state, self.log_row(state, work, [], None))
        else:  # a kill right after the snapshot left the files derived from it behind
            data, where = latest
            state = state_from_dict(data, self.pset, where, len(self.space.genes))
            for row in state.logbook:  # logbooks written before failures were counted
                row.setdefault("failed", 0)
                row.setdefault("failure", "")
            self.snapshots.save_derived(state.hall_of_fame, state.logbook)
            self.prune_checkpoints(state)
        rng = random.Random()
        rng.setstate(state.rng_state)
        while state.generation < generations and not state.exhausted:
            state.generation += 1
            row = self.step(state, rng)                                         # (1)-(5)
            state.rng_state = rng.getstate()
            self.finish_generation(state, row)                                  # (6)
        return state

    def step(self, state: State, rng: random.Random) -> dict:
        """One generation, steps (1) to (5); returns its log row. Other search
        methods (gpnas.search.methods) replace this and ``start``, and keep the rest."""
        work = self.early_train(state, state.males)                        # (1)
        self.note_sons(state)
        curve_set = self.completed_curves(state)
        if self.mode.breeding == "cross":  # its females vary by mating passes, in (5)
            holdout = self.score_females(state, curve_set, again=False)     # (2)
        else:
            holdout = self.evolve_females(state, curve_set, rng)            # (2)
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
        females = (fem.initial_population(self.ga.n_females, self.pset, rng, self.gp_config)
                   if self.mode.females else [])
        state = State(generation=0, males=males, females=females, rng_state=rng.getstate())
        work = self.evaluate(state, [self.full_task(g, state) for g in seeds])
        for g in seeds:
            self.record_complete(state, g, predicted=None)
        return state, work

    # ------------------------------------------------------------ evaluation
    def arch(self, g) -> dict:
        return decode(g, self.space)

    def key(self, g, stop_at: int) -> str:
        config = train_config_dict(self.arch(g), self.budget, self.preset.reference.as_dict())
        return evaluation_key(config, self.budget.full_iters, stop_at, self.seed, self.data_sha256)

    def task(self, g, stop_at: int, resume_from: str | None = None) -> EvalTask:
        key = self.key(g, stop_at)
        return EvalTask(
            key=key, train_config=train_config_dict(self.arch(g), self.budget, self.preset.reference.as_dict()), seed=self.seed,
            stop_at=stop_at, data_dir=self.dataset_dir,
            checkpoint=str(self.checkpoints_dir / f"{key}.pt"), resume_from=resume_from,
            # torch's results depend on its thread count: one fixed count (default 1) makes a
            # run identical whichever backend evaluates it
            device=self.device, threads=self.threads or 1,
            measure_inference=stop_at == self.budget.full_iters,
        )

    def early_task(self, g) -> EvalTask:
        return self.task(g, self.budget.early_iters)

    def full_task(self, g, state: State) -> EvalTask:
        """The full run of ``g``, resuming its early checkpoint when this run paid for it
        (another run's checkpoint in a shared archive would make the full run look cheaper).

        It is charged at the freeze-thaw price (the steps beyond the early run) whether
        or not the checkpoint is still on disk: where it was pruned, the worker trains
        from step 0 to the same curve. So what a run is charged never depends on which
        files were kept (a shared archive, --keep-checkpoints, an extended run)."""
        early_key = self.key(g, self.budget.early_iters)
        early = self.checkpoints_dir / f"{early_key}.pt"
        return self.task(g, self.budget.full_iters, str(early) if early_key in state.charged else None)

    def evaluate(self, state: State, tasks: list[EvalTask]) -> dict:
        """Run the tasks whose results the archive lacks; archive and charge them.

        Returns {"evaluated": trained now, "cache_hits": found in the archive,
        "failed": {reason: count} of the evaluations charged now that failed or diverged}.
        """
        unique = self.affordable(state, list({t.key: t for t in tasks}.values()))
        todo = [t for t in unique if self.archive.get(t.key) is None]
        results = self.train(todo)
        for task, result in zip(todo, results):
            self.archive_result(task, result)
        failed = {}
        for task in unique:
            if task.key not in state.charged:
                state.charged[task.key] = None
                self.charge(state, task)
                self.tokens_at[task.key] = (state.compute.tokens, state.compute.flops)
                record = self.archive.get(task.key)
                if record is not None and record.status in ("failed", "diverged"):
                    reason = record.failure if record.status == "failed" else "diverged (NaN or inf loss)"
                    failed[reason or "unknown"] = failed.get(reason or "unknown", 0) + 1
        return {"evaluated": len(todo), "cache_hits": len(unique) - len(todo), "failed": failed}

    def train(self, tasks: list[EvalTask]) -> list:
        """The evaluator's results for the tasks; the wall time spent inside it is
        evaluation (``eval_seconds``), whatever asks for it, not the engine's overhead."""
        started = time.perf_counter()
        try:
            return self.evaluate_tasks(tasks)
        finally:
            self.eval_seconds += time.perf_counter() - started

    def affordable(self, state: State, tasks: list[EvalTask]) -> list[EvalTask]:
        """The tasks that fit in what is left of the FLOPs budget, in order.

        A task that does not fit is dropped and marks the run exhausted, so a
        mode never spends more than its budget; already charged tasks are free.
        """
        if self.max_flops is None:
            return tasks
        left = self.max_flops - state.compute.flops
        kept = []
        for task in tasks:
            if task.key not in state.charged:
                cost = (task.stop_at - self.resumed_at(task)) * self.flops_per_step(task)
                if cost > left:
                    state.exhausted = True
                    continue
                left -= cost
            kept.append(task)
        return kept

    def archive_result(self, task: EvalTask, result):
        arch = {k: task.train_config[k] for k in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")}
        record = EvaluationRecord(arch=arch, train_config=task.train_config, seed=task.seed,
                                  data_sha256=self.data_sha256, stop_at=task.stop_at,
                                  max_iters=self.budget.full_iters, status="failed")
        if isinstance(result, dict):
            record.result = result
            record.status = "diverged" if result["curve"]["diverged"] else (
                "complete" if task.stop_at == self.budget.full_iters else "early")
            if record.status == "early":
                record.checkpoint = f"checkpoints/{task.key}.pt"
            else:  # the state of a finished (or diverged) run is not needed again
                (self.checkpoints_dir / f"{task.key}.pt").unlink(missing_ok=True)
        else:  # a parallel.Failure: the worker raised or died
            record.failure = result.reason
        self.archive.put(task.key, record)

    def record(self, key: str):
        """The archive's record of key, checked: an archive is a file that may come from
        elsewhere (--archive), and a record without a learning curve must stop the run
        with one line, not deep inside it."""
        record = self.archive.get(key)
        if record is not None and record.result is not None:
            curve = record.result.get("curve") if isinstance(record.result, dict) else None
            lists = ("train_loss", "eval_steps", "val_loss", "step_time_s")
            if not (isinstance(curve, dict) and all(isinstance(curve.get(k), list) for k in lists)
                    and len(curve["val_loss"]) == len(curve["eval_steps"])
                    and all(isinstance(v, (int, float)) for v in curve["val_loss"] + curve["step_time_s"])
                    and isinstance(record.arch, dict)
                    and all(isinstance(record.arch.get(k), (int, float)) for k in ARCH_KEYS)):
                raise FileFormatError(f"{self.archive.path}: the record {key[:12]} holds no learning curve; "
                                      "the archive is damaged or not from gpnas: start a new one")
        return record

    def resumed_at(self, task: EvalTask) -> int:
        """The step a task starts from: a resumed task does not pay for its checkpoint's steps."""
        return self.budget.early_iters if task.resume_from else 0

    def flops_per_step(self, task: EvalTask) -> int:
        return training_flops_per_step(task.train_config, self.budget, self.vocab_size)

    def charge(self, state: State, task: EvalTask):
        """Charge the steps the task trained (a diverged run: up to where it stopped); a
        failed task, which reports no progress, the steps it was given."""
        record = self.record(task.key)
        if record is None:
            return
        start = self.resumed_at(task)
        if record.result is None:
            state.compute.charge(max(0, task.stop_at - start), self.tokens_per_step, 0.0,
                                 self.flops_per_step(task), failed=True)
            return
        curve = record.result["curve"]
        steps = max(0, len(curve["train_loss"]) - start)
        state.compute.charge(steps, self.tokens_per_step, float(sum(curve["step_time_s"][start:])),
                             self.flops_per_step(task))

    # ---------------------------------------------------------------- steps
    def early_train(self, state: State, males) -> dict:
        return self.evaluate(state, [self.early_task(g) for g in males])

    def completed_curves(self, state: State) -> fem.CurveSet:
        """The completed curves of this run's own evaluations, in the order it made them.

        Only this run's evaluations count, so a shared archive saves compute
        without changing what the run computes.
        """
        records = (self.record(key) for key in state.charged)
        curves = [result_curve(r.result, r.arch, r.key, self.task_name)
                  for r in records if r is not None and r.status == "complete"]
        return fem.CurveSet.build(curves, self.prefix_frac)

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

    def early_curves(self, state: State, males):
        """Early records of the males, in order (None where missing, or not charged to
        this run: a shared archive must not hand a run results its budget did not pay for)."""
        keys = [self.key(g, self.budget.early_iters) for g in males]
        return [self.record(k) if k in state.charged else None for k in keys]

    def assign_male_fitness(self, state: State, curve_set) -> dict:
        """Fitness of every male; returns {male index: mating.Father} (his early curve
        and feature row) for mating.

        Prediction modes: the raw prediction of a male is the chosen predictor's
        (``females.choose``: cross-validated among the females' front and the
        baselines; an ensemble of dissimilar formulas), his uncertainty its
        spread; both go through the calibration fitted on the run's earlier
        promotions (``calibration``), and the calibrated mean is his fitness. The early score is computed for every male, for the log.
        """
        records = self.early_curves(state, state.males)
        usable = [i for i, r in enumerate(records) if r is not None and r.status == "early"]
        self.predicted = {}
        for i, r in enumerate(records):
            if i not in usable:
                state.males[i].fitness.values = (WORST,)
                self.note_failure(state, r)
        if not usable:
            return {}
        scores = {}
        for i in usable:
            curve = records[i].result["curve"]
            scores[i] = early_score(curve["val_loss"], curve["eval_steps"],
                                    len(curve["train_loss"]) * self.tokens_per_step)
        if self.mode.male_fitness == "early":
            for i in usable:
                state.males[i].fitness.values = (-scores[i] if math.isfinite(scores[i]) else WORST,)
                self.predicted[self.key(state.males[i], self.budget.full_iters)] = {
                    "raw": None, "spread": None, "early_score": _finite(scores[i])}
            return {}
        curves = [result_curve(records[i].result, records[i].arch, records[i].key, self.task_name,
                               horizon=self.full_evals) for i in usable]
        # the raw prediction: the predictor chosen by cross-validation among the females'
        # front, the linear model and the baselines, its ensemble's spread the uncertainty;
        # the last value until enough curves completed. Then the calibration on earlier promotions.
        model = fem.choose(state.females, curve_set, formulas=False, scored=True)  # scored in step (2)
        _, columns = fem.predict_finals([], curves, self.prefix_frac, self.pset)
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
            self.predicted[self.key(state.males[i], self.budget.full_iters)] = {
                "raw": _finite(raw[j]), "spread": _finite(sigma[j]), "early_score": _finite(scores[i])}
            rows[i] = mating.Father(curves[j], {name: float(col[j]) for name, col in columns.items()})
        return rows

    def calibration(self, state: State) -> Calibration:
        """The monotone map raw -> true fitted on this run's earlier promotions by prediction."""
        pairs = [(p["raw"], p["true"]) for p in state.promotions
                 if isinstance(p.get("raw"), (int, float)) and isinstance(p.get("true"), (int, float))]
        return Calibration.fit(*zip(*pairs)) if pairs else Calibration.fit([], [])

    def note_failure(self, state: State, record):
        if record is None or record.status not in ("failed", "diverged"):
            return
        if not any(f["key"] == record.key for f in state.failures):
            reason = record.failure if record.status == "failed" else "diverged (NaN or inf loss)"
            state.failures.append({"key": record.key, "arch": record.arch, "reason": reason})

    def promote(self, state: State, rng: random.Random, work: dict) -> list:
        """Resume the promote_k males of largest expected improvement to the full
        budget (+1 at random, for calibration); see ``gpnas.search.calibration``.

        Expected improvement is over the best true final loss so far, with each
        male's calibrated mean and spread; ties (no spread, all worse than the
        best) go to the lower mean. Modes without predictions rank by fitness.
        """
        alive = [i for i, g in enumerate(state.males) if g.fitness.values[0] < WORST]
        mu = np.array([state.males[i].fitness.values[0] for i in alive])
        sigma = np.array([self.predicted.get(self.key(state.males[i], self.budget.full_iters), {}).get("spread")
                          or 0.0 for i in alive])
        best = state.hall_of_fame[0]["final_val_loss"] if state.hall_of_fame else (mu.min() if mu.size else 0.0)
        gain = (expected_improvement(mu, sigma, best) if self.mode.male_fitness == "prediction"
                else np.zeros(len(alive)))
        raw = [self.predicted.get(self.key(state.males[i], self.budget.full_iters), {}).get("raw") for i in alive]
        raw = [r if r is not None else 0.0 for r in raw]  # the calibration is flat at its ends: raw breaks ties
        ranked = [alive[j] for j in sorted(range(len(alive)), key=lambda j: (-gain[j], mu[j], raw[j], j))]
        fresh, seen = [], set()
        for i in ranked:
            key = self.key(state.males[i], self.budget.full_iters)
            if key not in seen and key not in state.charged:
                fresh.append(i)
                seen.add(key)
        chosen = fresh[: self.ga.promote_k]
        rest = fresh[self.ga.promote_k:]
        if self.ga.calibration and rest:
            chosen.append(rest[rng.randrange(len(rest))])
        add_work(work, self.evaluate(state, [self.full_task(state.males[i], state) for i in chosen]))
        for i in chosen:
            self.record_complete(state, state.males[i], predicted=state.males[i].fitness.values[0])
        return chosen

    def record_complete(self, state: State, g, predicted):
        key = self.key(g, self.budget.full_iters)
        record = self.record(key) if key in state.charged else None  # unpaid: not this run's
        if record is None or record.status != "complete":
            self.note_failure(state, record)
            return
        curve = record.result["curve"]
        true = float(curve["val_loss"][-1])
        seen = self.predicted.get(key, {}) if predicted is not None else {}
        tokens, flops = self.tokens_at.get(key, (state.compute.tokens, state.compute.flops))
        state.promotions.append({"generation": state.generation, "key": key, "arch": record.arch,
                                 "predicted": predicted, "raw": seen.get("raw"), "spread": seen.get("spread"),
                                 "early_score": seen.get("early_score"), "true": true,
                                 "tokens": tokens, "flops": flops})
        if not any(h["key"] == key for h in state.hall_of_fame):
            state.hall_of_fame.append({
                "key": key, "arch": record.arch, "final_val_loss": true, "generation": state.generation,
                **{m: record.result.get(m) for m in ("best_val_loss", "final_train_loss", "total_train_time_s",
                                                       "avg_inference_tokens_per_s", "n_params")},
            })
            state.hall_of_fame.sort(key=lambda h: h["final_val_loss"])

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
        ctx = self.mating_context(state, state.females, curve_set, rng)
        if self.mode.breeding == "random":
            return [sample_genome(self.space, rng) for _ in range(ga.n_males)], state.females
        if self.mode.breeding == "within":
            fathers = mating.sel_tournament(state.males, n_sons, ga.male_tournament, rng)
            return male_elites + mating.breed_within(fathers, ctx), state.females
        pool = self.father_pool(state, rows)
        sons = []
        for _ in range(n_sons):
            father_i = self.select_father(pool, rng)
            mother = mating.sel_tournament(state.females, 1, ga.female_tournament, rng)[0]
            son, guided = mating.make_son(state.males[father_i], mother, rows.get(father_i), ctx)
            sons.append(son)
            state.mating_stats["guided" if guided else "random"] += 1
            state.sons.append({"generation": state.generation + 1, "key": self.key(son, self.budget.early_iters),
                               "guided": guided, "early_loss": None})
        females = state.females
        for _ in range(ga.female_steps):
            females = self.mating_pass(state, females, pool, curve_set, rng)
        return male_elites + sons, females

    def mating_pass(self, state: State, females: list, pool: list[int], curve_set, rng) -> list:
        """One pass of daughters over the females: elites kept, the rest daughters, all scored."""
        ga = self.ga
        ctx = self.mating_context(state, females, curve_set, rng)
        elites = [fem.clone(f) for f in fem.best(females, ga.female_elites)]
        keys = {i: self.key(state.males[i], self.budget.full_iters) for i in pool}
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
        raw = self.predicted.get(self.key(g, self.budget.full_iters), {}).get("raw")
        return raw if raw is not None else 0.0

    def father_pool(self, state: State, rows: dict) -> list[int]:
        """The males that have a feature row (an early curve), best first: the fathers'
        tournaments draw from it, so it is ranked once per generation."""
        return sorted(rows or range(len(state.males)),
                      key=lambda i: (state.males[i].fitness.values[0], self.raw_of(state.males[i])))

    def select_father(self, pool: list[int], rng: random.Random) -> int:
        """A tournament over ``father_pool``: the best of ``male_tournament`` uniform draws."""
        return pool[min(rng.randrange(len(pool)) for _ in range(self.ga.male_tournament))]

    def mating_context(self, state: State, females: list, curve_set, rng) -> mating.MatingContext:
        predictions = (fem.predict_all(females, curve_set.columns, self.pset, self.scores(curve_set))
                       if females and curve_set.curves else np.empty((len(females), 0)))
        return mating.MatingContext(
            space=self.space, pset=self.pset, rng=rng, gp_config=self.gp_config, prefix_frac=self.prefix_frac,
            n_candidates=self.ga.son_candidates, step_scale=self.ga.guided_step,
            mutation_scale=self.ga.mutation_sigma, p_guided=self.ga.p_guided,
            cx_prob=self.ga.cx_prob, mut_prob=self.ga.mut_prob, female_predictions=predictions,
            completed_targets=curve_set.targets, completed_index=curve_set.index, females=females,
            ranges=fit.feature_ranges(curve_set.train.columns) if curve_set.curves else {},
            tournament_size=self.ga.female_tournament,
        )

    def note_sons(self, state: State):
        """Fill in the early loss of this generation's sons, now that they are trained."""
        for son in state.sons:
            if son["generation"] == state.generation and son.get("early_loss") is None:
                record = self.record(son["key"]) if son["key"] in state.charged else None
                if record is not None and record.status == "early":
                    son["early_loss"] = float(record.result["curve"]["val_loss"][-1])

    # ------------------------------------------------------------- logging
    def log_row(self, state: State, work: dict, promoted: list, holdout) -> dict:
        """The logbook line of a generation, taken while both populations are scored."""
        fitnesses = [g.fitness.values[0] for g in state.males if g.fitness.valid]
        best_female, holdout_best = None, None
        if state.females and all(f.fitness.valid for f in state.females):
            best_female = fem.best(state.females, 1)[0]
            if holdout is not None:
                value = holdout[next(i for i, f in enumerate(state.females) if f is best_female)]
                holdout_best = None if np.isnan(value) else float(value)
        best_male = min((g for g in state.males if g.fitness.valid and g.fitness.values[0] < WORST),
                        key=lambda g: g.fitness.values[0], default=None)
        seen = self.predicted.get(self.key(best_male, self.budget.full_iters), {}) if best_male is not None else {}
        failed = work.get("failed", {})
        return {
            "generation": state.generation,
            "evaluated": work["evaluated"],
            "cache_hits": work["cache_hits"],
            "failed": sum(failed.values()),
            "failure": "; ".join(f"{n} x {reason}" for reason, n in sorted(failed.items(), key=lambda kv: -kv[1])),
            "promoted": len(promoted),
            "best_predicted": min(fitnesses) if fitnesses and min(fitnesses) < WORST else None,
            "best_raw": seen.get("raw"),
            "best_early_score": seen.get("early_score"),
            "best_true": state.hall_of_fame[0]["final_val_loss"] if state.hall_of_fame else None,
            "female_train_error": best_female.fitness.values[0] if best_female is not None else None,
            "female_holdout_error": holdout_best,
            "best_formula": str(best_female) if best_female is not None else "",
            "predictor": (self.choice.best_.tree or self.choice.best_.kind) if self.choice is not None else "last",
            "cv_spearman": _rounded(self.choice.best_.cv.get("spearman")) if self.choice is not None else None,
            "cv_spearman_last": (_rounded(next(c for c in self.choice.equations_ if c.kind == "last").cv["spearman"])
                                 if self.choice is not None else None),
            "steps": state.compute.steps,
            "tokens": state.compute.tokens,
            "flops": state.compute.flops,
            "train_seconds": round(state.compute.train_seconds, 3),
        }

    def finish_generation(self, state: State, row: dict):
        """Append the log line, snapshot the state, prune checkpoints, tell the callbacks."""
        state.logbook.append(row)
        if self.snapshots:
            self.snapshots.save(state_to_dict(state), state.hall_of_fame, state.logbook)
        self.prune_checkpoints(state)  # after the snapshot: a resume never misses a file it needs
        for callback in self.callbacks:
            callback(state, row)

    # ---------------------------------------------------------- checkpoints
    def promotable(self, state: State) -> set:
        """Early keys whose checkpoints a later promotion may resume: the males of the
        population (the one the next generation trains) not yet trained fully."""
        return {self.key(g, self.budget.early_iters) for g in state.males
                if self.key(g, self.budget.full_iters) not in state.charged}

    def prune_checkpoints(self, state: State, final: bool = False) -> None:
        """Delete this run's checkpoints that no promotion can resume any more: a
        checkpoint lives while its male is in the population and not yet promoted
        (after a promotion, or when he leaves the population, it goes); at the end
        of the run (``final``) all go. Only keys this run charged are touched, so a
        shared archive's other runs keep theirs. ``keep_checkpoints`` keeps all."""
        if self.keep_checkpoints:
            return
        keep = set() if final else self.promotable(state)
        for key in state.charged:
            if key not in keep:
                (self.checkpoints_dir / f"{key}.pt").unlink(missing_ok=True)


def add_work(work: dict, more: dict) -> None:
    """Add one ``evaluate`` call's counts to a generation's."""
    work["evaluated"] += more["evaluated"]
    work["cache_hits"] += more["cache_hits"]
    failed = work.setdefault("failed", {})
    for reason, n in more.get("failed", {}).items():
        failed[reason] = failed.get(reason, 0) + n


def _finite(x) -> float | None:
    x = None if x is None else float(x)
    return x if x is not None and math.isfinite(x) else None


def _rounded(x, digits: int = 4):
    return None if x is None or not math.isfinite(x) else round(float(x), digits)
