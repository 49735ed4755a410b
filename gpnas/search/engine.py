"""The co-evolution engine: males (architectures) and females (learning-curve
predictors) in one DEAP loop.

The loop, as ``Evolution.run`` executes it::

    state <- last snapshot of the run folder, or generation 0:
             seed the archive with random males trained to completion,
             random males, random females
    for gen in next .. generations:
        early-train every male without a cached early result        (1)
        score females on the archive's completed curves; GP steps   (2)
        male fitness <- mean prediction of the top females          (3)
        promote the top promote_k males (+1 at random) to full
            training by resuming their early checkpoints            (4)
        breed: cross-gender mating (or the mode's alternative),
            elites of each sex kept                                 (5)
        log; snapshot; callbacks                                    (6)

Modes change steps 2, 3 and 5 only (see ``MODES``). Everything random draws
from one ``random.Random`` whose state is part of every snapshot, so a resumed
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

from gpnas.errors import EvaluationError, FileFormatError
from gpnas.predict import trees
from gpnas.runs.archive import EvaluationRecord, evaluation_key
from gpnas.runs.worker import EvalTask, Evaluator, result_curve
from gpnas.search import females as fem
from gpnas.search import mating
from gpnas.search.males import SPACE_GENE, decode, early_score, sample_genome, train_config_dict
from gpnas.search.state import State, state_from_dict, state_to_dict

WORST = fem.WORST


def add_work(work: dict, more: dict) -> None:
    """Add one ``evaluate`` call's counts to a generation's (the first failure reason kept)."""
    work["evaluated"] += more["evaluated"]
    work["cache_hits"] += more["cache_hits"]
    work["failed"] = work.get("failed", 0) + more.get("failed", 0)
    work["failure"] = work.get("failure") or more.get("failure", "")


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
                 max_tokens: int | None = None, evaluate=None, keep_checkpoints: bool = False):
        self.preset, self.mode = preset, mode if isinstance(mode, Mode) else MODES[mode]
        self.space, self.budget, self.ga = preset.space, preset.budget, preset.ga
        self.dataset_dir, self.data_sha256, self.task_name = dataset_dir, data_sha256, task_name
        self.archive, self.checkpoints_dir = archive, checkpoints_dir
        # evaluate(tasks) -> one result or Failure per task (DEAP's toolbox.evaluate over
        # toolbox.map); by default the runs' Evaluator over map_fn (serial when None)
        self.evaluate_tasks = evaluate or Evaluator(map_fn, dataset_dir)
        self.seed, self.device, self.threads = seed, device, threads
        self.snapshots, self.callbacks = snapshots, list(callbacks)
        self.max_tokens = max_tokens  # training tokens the run may charge; None: no limit
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
        self.derivatives = {}     # tree string -> sympy derivatives, reused across matings
        self.tokens_at = {}       # evaluation key -> compute.tokens just after it was charged
        self.spread = {}          # full-run key -> spread of the chosen ensemble's predictions
        self.choice = None        # the predictor chosen this generation (predict.CurvePredictor)

    # ----------------------------------------------------------------- the loop
    def run(self, generations: int) -> State:
        """Run (or continue) until ``generations`` generations are done."""
        latest = self.snapshots.load_latest() if self.snapshots else None
        if latest is None:
            state, work = self.start()
            self.finish_generation(state, self.log_row(state, work, [], None))
        else:  # a kill right after the snapshot left the files derived from it behind
            data, where = latest
            state = state_from_dict(data, self.pset, where)
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
        curve_set = self.completed_curves(state)
        holdout = self.evolve_females(state, curve_set, rng)                # (2)
        rows = self.assign_male_fitness(state, curve_set)                   # (3)
        self.check_any_trained(state, work)
        promoted = self.promote(state, rng, work)                           # (4)
        curve_set = self.completed_curves(state)
        if self.mode.females:
            _, holdout = fem.score(state.females, curve_set, self.pset)
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
        config = train_config_dict(self.arch(g), self.budget)
        return evaluation_key(config, self.budget.full_iters, stop_at, self.seed, self.data_sha256)

    def task(self, g, stop_at: int, resume_from: str | None = None) -> EvalTask:
        key = self.key(g, stop_at)
        return EvalTask(
            key=key, train_config=train_config_dict(self.arch(g), self.budget), seed=self.seed,
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
        "failed": how many of those trained now failed, "failure": the first one's reason}.
        """
        unique = self.affordable(state, list({t.key: t for t in tasks}.values()))
        todo = [t for t in unique if self.archive.get(t.key) is None]
        started = time.perf_counter()
        results = self.evaluate_tasks(todo)
        self.eval_seconds += time.perf_counter() - started
        failures = []
        for task, result in zip(todo, results):
            self.archive_result(task, result)
            if not isinstance(result, dict):
                failures.append(result.reason)
        for task in unique:
            if task.key not in state.charged:
                state.charged[task.key] = None
                self.charge(state, task)
                self.tokens_at[task.key] = state.compute.tokens
        return {"evaluated": len(todo), "cache_hits": len(unique) - len(todo), "failed": len(failures),
                "failure": failures[0] if failures else ""}

    def affordable(self, state: State, tasks: list[EvalTask]) -> list[EvalTask]:
        """The tasks that fit in what is left of the token budget, in order.

        A task that does not fit is dropped and marks the run exhausted, so a
        mode never spends more than its budget; already charged tasks are free.
        """
        if self.max_tokens is None:
            return tasks
        left = self.max_tokens - state.compute.tokens
        kept = []
        for task in tasks:
            if task.key not in state.charged:
                cost = (task.stop_at - self.resumed_at(task)) * self.tokens_per_step
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
                    and all(isinstance(record.arch.get(k), (int, float)) for k in SPACE_GENE.values())):
                raise FileFormatError(f"{self.archive.path}: the record {key[:12]} holds no learning curve; "
                                      "the archive is damaged or not from gpnas: start a new one")
        return record

    def resumed_at(self, task: EvalTask) -> int:
        """The step a task starts from: a resumed task does not pay for its checkpoint's steps."""
        return self.budget.early_iters if task.resume_from else 0

    def charge(self, state: State, task: EvalTask):
        record = self.record(task.key)
        if record is None or record.result is None:
            return
        curve = record.result["curve"]
        start = self.resumed_at(task)
        steps = max(0, len(curve["train_loss"]) - start)
        state.compute.charge(steps, self.tokens_per_step, float(sum(curve["step_time_s"][start:])))

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

    def evolve_females(self, state: State, curve_set, rng):
        """Score the females, then run the preset's plain GP steps among them."""
        if not self.mode.females:
            return None
        _, holdout = fem.score(state.females, curve_set, self.pset)
        for _ in range(self.ga.female_steps):
            state.females = fem.gp_step(state.females, curve_set, self.pset, rng, self.ga.female_elites,
                                        self.gp_config)
        return holdout

    def early_curves(self, state: State, males):
        """Early records of the males, in order (None where missing, or not charged to
        this run: a shared archive must not hand a run results its budget did not pay for)."""
        keys = [self.key(g, self.budget.early_iters) for g in males]
        return [self.record(k) if k in state.charged else None for k in keys]

    def assign_male_fitness(self, state: State, curve_set) -> dict:
        """Fitness of every male; returns {male index: feature row} for mating."""
        records = self.early_curves(state, state.males)
        usable = [i for i, r in enumerate(records) if r is not None and r.status == "early"]
        for i, r in enumerate(records):
            if i not in usable:
                state.males[i].fitness.values = (WORST,)
                self.note_failure(state, r)
        if not usable:
            return {}
        if self.mode.male_fitness == "early":
            for i in usable:
                curve = records[i].result["curve"]
                score = early_score(curve["val_loss"], curve["eval_steps"],
                                           len(curve["train_loss"]) * self.tokens_per_step)
                state.males[i].fitness.values = (-score if math.isfinite(score) else WORST,)
            return {}
        curves = [result_curve(records[i].result, records[i].arch, records[i].key, self.task_name,
                               horizon=self.full_evals) for i in usable]
        # the predictor the run reports: chosen by cross-validation among the females'
        # front and the baselines; the last value until enough curves completed
        model = fem.choose(state.females, curve_set, formulas=False)
        _, columns = fem.predict_finals([], curves, self.prefix_frac, self.pset)
        if model is not None:
            predictions, spread = model.predict(curves, return_std=True)
        else:
            predictions, spread = np.array([c.values[-1] for c in curves]), np.zeros(len(curves))
        self.spread = {self.key(state.males[i], self.budget.full_iters): float(spread[j])
                       for j, i in enumerate(usable)}
        self.choice = model
        rows = {}
        for j, i in enumerate(usable):
            p = float(predictions[j])
            state.males[i].fitness.values = (p if math.isfinite(p) else WORST,)
            rows[i] = {name: float(col[j]) for name, col in columns.items()}
        return rows

    def check_any_trained(self, state: State, work: dict) -> None:
        """Stop, with the reason, when no male of the generation could be trained:
        without one early curve there is nothing to select, mate or promote, and
        every further generation would fail the same way (a wrong device, a broken
        installation). The failures are recorded in the archive, and the run folder
        keeps the generations before."""
        if state.males and all(g.fitness.values[0] >= WORST for g in state.males) and state.failures:
            reason = work.get("failure") or state.failures[-1]["reason"]
            raise EvaluationError(f"every male of generation {state.generation} failed to train ({reason}); "
                                  "the run stops here: fix the cause (see the reason) and start a new run")

    def note_failure(self, state: State, record):
        if record is None or record.status not in ("failed", "diverged"):
            return
        if not any(f["key"] == record.key for f in state.failures):
            reason = record.failure if record.status == "failed" else "diverged (NaN or inf loss)"
            state.failures.append({"key": record.key, "arch": record.arch, "reason": reason})

    def promote(self, state: State, rng: random.Random, work: dict) -> list:
        """Resume the most promising males to the full budget (+1 at random, for calibration)."""
        ranked = sorted((i for i, g in enumerate(state.males) if g.fitness.values[0] < WORST),
                        key=lambda i: state.males[i].fitness.values[0])
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
        more = self.evaluate(state, [self.full_task(state.males[i], state) for i in chosen])
        add_work(work, more)
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
        state.promotions.append({"generation": state.generation, "key": key, "arch": record.arch,
                                 "predicted": predicted, "spread": self.spread.get(key), "true": true,
                                 "tokens": self.tokens_at.get(key, state.compute.tokens)})
        if not any(h["key"] == key for h in state.hall_of_fame):
            state.hall_of_fame.append({
                "key": key, "arch": record.arch, "final_val_loss": true, "generation": state.generation,
                **{m: record.result.get(m) for m in ("best_val_loss", "final_train_loss", "total_train_time_s",
                                                       "avg_inference_tokens_per_s", "n_params")},
            })
            state.hall_of_fame.sort(key=lambda h: h["final_val_loss"])

    def breed(self, state: State, rows: dict, curve_set, rng: random.Random):
        """Next generation's males and females, elites of each sex kept."""
        ga = self.ga
        ranked = sorted(state.males, key=lambda g: g.fitness.values[0])
        male_elites = [copy.deepcopy(g) for g in ranked[: ga.male_elites]]
        female_elites = [fem.clone(f) for f in fem.best(state.females, ga.female_elites)]
        n_sons, n_daughters = ga.n_males - len(male_elites), len(state.females) - len(female_elites)
        ctx = self.mating_context(state, curve_set, rng)
        if self.mode.breeding == "random":
            sons = [sample_genome(self.space, rng) for _ in range(ga.n_males)]
            _, daughters = mating.breed_within([], self.select_females(state, n_daughters, rng), ctx)
            return sons, female_elites + daughters
        if self.mode.breeding == "within":
            fathers = mating.sel_tournament(state.males, n_sons, ga.male_tournament, rng)
            sons, daughters = mating.breed_within(fathers, self.select_females(state, n_daughters, rng), ctx)
            return male_elites + sons, female_elites + daughters
        sons, daughters = [], []
        for n in range(max(n_sons, n_daughters)):
            father_i = self.select_father(state, rows, rng)
            mother = mating.sel_tournament(state.females, 1, ga.female_tournament, rng)[0]
            father = state.males[father_i]
            if n < n_sons:
                son, guided = mating.make_son(father, mother, rows.get(father_i, {}), ctx)
                sons.append(son)
                state.mating_stats["guided" if guided else "random"] += 1
            if n < n_daughters:
                daughter, chose = mating.make_daughter(mother, self.key(father, self.budget.full_iters), ctx)
                daughters.append(daughter)
                state.mating_stats["chose" if chose else "tournament"] += 1
        return male_elites + sons, female_elites + daughters

    def select_father(self, state: State, rows: dict, rng: random.Random) -> int:
        """A tournament among the males that have a feature row (an early curve)."""
        pool = sorted(rows or range(len(state.males)), key=lambda i: state.males[i].fitness.values[0])
        return pool[min(rng.randrange(len(pool)) for _ in range(self.ga.male_tournament))]

    def select_females(self, state: State, k: int, rng: random.Random) -> list:
        return trees.sel_parsimony(state.females, k, rng, self.gp_config) if state.females else []

    def mating_context(self, state: State, curve_set, rng) -> mating.MatingContext:
        predictions = (fem.predict_all(state.females, curve_set.columns, self.pset)
                       if state.females and curve_set.curves else np.empty((len(state.females), 0)))
        return mating.MatingContext(
            space=self.space, pset=self.pset, rng=rng, gp_config=self.gp_config,
            step_scale=self.ga.guided_step, mutation_scale=self.ga.mutation_sigma, p_guided=self.ga.p_guided,
            cx_prob=self.ga.cx_prob, mut_prob=self.ga.mut_prob, female_predictions=predictions,
            completed_targets=curve_set.targets, completed_index=curve_set.index, females=state.females,
            tournament_size=self.ga.female_tournament, derivatives=self.derivatives,
        )

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
        return {
            "generation": state.generation,
            "evaluated": work["evaluated"],
            "cache_hits": work["cache_hits"],
            "failed": work.get("failed", 0),
            "failure": work.get("failure", ""),
            "promoted": len(promoted),
            "best_predicted": min(fitnesses) if fitnesses and min(fitnesses) < WORST else None,
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


def _rounded(x, digits: int = 4):
    return None if x is None or not math.isfinite(x) else round(float(x), digits)
