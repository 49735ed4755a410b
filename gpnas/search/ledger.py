"""The ledger: every evaluation a search asks for, what it is charged, and what it found.

The engine and every standard method receive one (composition: a method never
inherits the engine). It owns:

- the evaluation task (``runs.tasks``: training or a table) and the keys of its
  evaluations: a genome decodes through the search space to a config, the task
  turns it into the config that runs, and the key hashes that config, the
  budget, the seed and the data (or table);
- the cache: an evaluation the archive holds is never run again;
- charging: each distinct evaluation once, in the task's cost unit (training
  FLOPs, or a table's cost per step) for the steps it ran; a resumed
  evaluation (freeze-thaw) pays only the steps beyond the one it resumes; a
  failed one the steps it was given (the worker reports no progress when it
  raises, so what it spent is bounded by what it was asked to do);
- the budget (``max_cost``): a run never overspends it; an evaluation that
  does not fit is not run and the run is marked exhausted;
- archive checks: a record must hold a learning curve before anything reads it;
- the results: the hall of fame, the promotions and the failures in the state;
- checkpoint lifetimes: a state to resume lives while a promotion may need it.

Only evaluations this run charged count as its own, so a shared archive saves
compute without changing what the run computes.
"""

from __future__ import annotations

import bisect
import json
import time

from gpnas.errors import FileFormatError
from gpnas.predict.curves import Curve, curve_from_learning_curve
from gpnas.runs.archive import EvaluationRecord
from gpnas.search.state import State

CURVE_LISTS = ("train_loss", "eval_steps", "val_loss", "step_time_s")


class Ledger:
    """One run's evaluations through one task, charged to its state."""

    def __init__(self, task, space, archive, seed: int, max_cost: float | None = None,
                 keep_checkpoints: bool = False):
        self.task, self.space, self.archive, self.seed = task, space, archive, seed
        self.max_cost = max_cost                  # cost the run may charge; None: no limit
        self.keep_checkpoints = keep_checkpoints  # False: prune deletes what no promotion needs
        self.early, self.full = task.early_steps, task.full_steps
        self.eval_seconds = 0.0   # wall time inside the task: training and model evaluation
        self.spent_at = {}        # evaluation key -> (tokens, cost) just after it was charged
        self._configs = {}        # genome tuple -> the config that runs

    # ------------------------------------------------------------------ keys
    def run_config(self, g) -> dict:
        """The config the task runs for genome ``g`` (cached: the table's nearest lookup)."""
        t = tuple(g)
        config = self._configs.get(t)
        if config is None:
            config = self._configs[t] = self.task.run_config(self.space.decode(g))
        return config

    def arch(self, g) -> dict:
        return self.task.arch(self.run_config(g))

    def key(self, g, stop_at: int) -> str:
        return self.task.key(self.run_config(g), stop_at, self.seed)

    def request(self, g, stop_at: int, resume_from: int | None = None):
        """The evaluation of ``g`` to ``stop_at`` steps, resuming (freeze-thaw) its own
        evaluation to ``resume_from`` steps when given."""
        resume_key = self.key(g, resume_from) if resume_from else None
        return self.task.request(self.key(g, stop_at), self.run_config(g), stop_at, self.seed,
                                 resume_key, resume_from or 0)

    def early_request(self, g):
        return self.request(g, self.early)

    def full_request(self, g, state: State):
        """The full run of ``g``, resuming its early evaluation when this run paid for it
        (another run's in a shared archive would make the full run look cheaper).

        It is charged at the freeze-thaw price (the steps beyond the early run) whether
        or not the early state is still kept: where it was pruned, the worker trains
        from step 0 to the same curve. So what a run is charged never depends on which
        files were kept (a shared archive, --keep-checkpoints, an extended run)."""
        return self.request(g, self.full, self.early if self.key(g, self.early) in state.charged else None)

    # ------------------------------------------------------------ evaluation
    def evaluate(self, state: State, requests: list) -> dict:
        """Run the requests whose results the archive lacks; archive and charge them.

        Returns {"evaluated": run now, "cache_hits": found in the archive,
        "failed": {reason: count} of the evaluations charged now that failed or diverged}.
        """
        unique = self.affordable(state, list({r.key: r for r in requests}.values()))
        todo = [r for r in unique if self.archive.get(r.key) is None]
        for request, result in zip(todo, self.run(todo)):
            self.archive_result(request, result)
        failed = {}
        for request in unique:
            if request.key not in state.charged:
                state.charged[request.key] = None
                self.charge(state, request)
                self.spent_at[request.key] = (state.compute.tokens, state.compute.flops)
                record = self.archive.get(request.key)
                if record is not None and record.status in ("failed", "diverged"):
                    reason = record.failure if record.status == "failed" else "diverged (NaN or inf loss)"
                    failed[reason or "unknown"] = failed.get(reason or "unknown", 0) + 1
        return {"evaluated": len(todo), "cache_hits": len(unique) - len(todo), "failed": failed}

    def run(self, requests: list) -> list:
        """The task's results; the wall time spent inside it is evaluation
        (``eval_seconds``), whatever asks for it, not the engine's overhead."""
        started = time.perf_counter()
        try:
            return self.task(requests) if requests else []
        finally:
            self.eval_seconds += time.perf_counter() - started

    def cost(self, request) -> float:
        """What a request will be charged if it runs to its end: a resumed request does
        not pay for the steps it resumes."""
        return (request.stop_at - request.start) * self.task.cost_per_step(request.train_config)

    def affordable(self, state: State, requests: list) -> list:
        """The requests that fit in what is left of the budget, in order.

        One that does not fit is dropped and marks the run exhausted, so a mode
        never spends more than its budget; already charged ones are free.
        """
        if self.max_cost is None:
            return requests
        left = self.max_cost - state.compute.flops
        kept = []
        for request in requests:
            if request.key not in state.charged:
                cost = self.cost(request)
                if cost > left:
                    state.exhausted = True
                    continue
                left -= cost
            kept.append(request)
        return kept

    def archive_result(self, request, result) -> None:
        record = EvaluationRecord(arch=self.task.arch(request.train_config), train_config=request.train_config,
                                  seed=request.seed, data_sha256=self.task.data_hash, stop_at=request.stop_at,
                                  max_iters=self.full, status="failed")
        if isinstance(result, dict):
            record.result = result
            record.status = "diverged" if result["curve"]["diverged"] else (
                "complete" if request.stop_at == self.full else "early")
            if record.status == "early":
                record.checkpoint = self.task.checkpoint_record(request.key)
            else:  # the state of a finished (or diverged) run is not needed again
                self.task.discard(request.key)
        else:  # a parallel.Failure: the worker raised or died
            record.failure = result.reason
        self.archive.put(request.key, record)

    def charge(self, state: State, request) -> None:
        """Charge the steps the request ran (a diverged run: up to where it stopped); a
        failed one, which reports no progress, the steps it was given."""
        record = self.record(request.key)
        if record is None:
            return
        start = request.start
        per_step = self.task.cost_per_step(request.train_config)
        tokens_per_step = self.task.tokens_per_step
        if record.result is None:
            state.compute.charge(max(0, request.stop_at - start), tokens_per_step, 0.0, per_step, failed=True)
            return
        curve = record.result["curve"]
        steps = max(0, self.task.steps_run(record.result) - start)
        seconds = float(sum(curve["step_time_s"][start:])) if curve["step_time_s"] else 0.0
        state.compute.charge(steps, tokens_per_step, seconds, per_step)

    # --------------------------------------------------------------- records
    def record(self, key: str):
        """The archive's record of key, checked: an archive is a file that may come from
        elsewhere (--archive), and a record without a learning curve must stop the run
        with one line, not deep inside it."""
        record = self.archive.get(key)
        if record is not None and record.result is not None:
            curve = record.result.get("curve") if isinstance(record.result, dict) else None
            if not (isinstance(curve, dict) and all(isinstance(curve.get(k), list) for k in CURVE_LISTS)
                    and len(curve["val_loss"]) == len(curve["eval_steps"])
                    and all(isinstance(v, (int, float)) for v in curve["val_loss"] + curve["step_time_s"])
                    and isinstance(record.arch, dict)
                    and all(isinstance(record.arch.get(k), (int, float, str)) for k in self.task.arch_keys)):
                raise FileFormatError(f"{self.archive.path}: the record {key[:12]} holds no learning curve; "
                                      "the archive is damaged or not from gpnas: start a new one")
        return record

    def own_record(self, state: State, key: str):
        """The record of key if this run paid for it, else None."""
        return self.record(key) if key in state.charged else None

    def curve(self, record) -> Curve:
        """A record's validation curve as the predictors see it (an early record knows the
        horizon of its complete run: ``curves.curve_from_learning_curve``)."""
        return curve_from_learning_curve(record.result["curve"], task=self.task.name, config_id=record.key,
                                         config=self.task.curve_config(record.arch))

    def completed_curves(self, state: State) -> list[Curve]:
        """The completed curves of this run's own evaluations, in the order it made them."""
        records = (self.record(key) for key in state.charged)
        return [self.curve(r) for r in records if r is not None and r.status == "complete"]

    def started_records(self, state: State, usable=lambda record: True) -> list:
        """The first record, in the order charged, of every config this run has evaluated at
        least to the early step and whose record ``usable`` accepts: each config once, read
        from the run's own records, so a resumed run sees what an uninterrupted one does."""
        out, seen = [], set()
        for key in state.charged:
            record = self.record(key)
            if record is None or record.status not in ("early", "complete") or not usable(record):
                continue
            name = json.dumps(record.arch, sort_keys=True, default=str)
            if name not in seen:
                seen.add(name)
                out.append(record)
        return out

    def started_curves(self, state: State) -> list[Curve]:
        """The curve of every config this run has started (``started_records``; a complete
        curve is seen, as every curve is, through its early prefix): the cohort a search's
        curves rank against (``ga.cohort = "run"``)."""
        return [self.curve(record) for record in self.started_records(state)]

    def early_values(self, state: State) -> list[tuple[dict, float]]:
        """(curve config, value at the early step) of every config this run has evaluated at
        least that far (``started_records``): all its evidence on how configs start."""
        def early_index(record) -> int:
            return bisect.bisect_right(record.result["curve"]["eval_steps"], self.early) - 1
        return [(self.task.curve_config(record.arch), float(record.result["curve"]["val_loss"][early_index(record)]))
                for record in self.started_records(state, lambda record: early_index(record) >= 0)]

    def early_records(self, state: State, males) -> list:
        """Early records of the males, in order (None where missing, or not charged to
        this run: a shared archive must not hand a run results its budget did not pay for)."""
        return [self.own_record(state, self.key(g, self.early)) for g in males]

    def final_loss(self, state: State, g) -> float | None:
        """True final value of a genome this run trained fully, else None."""
        record = self.own_record(state, self.key(g, self.full))
        if record is None or record.status != "complete":
            return None
        return float(record.result["curve"]["val_loss"][-1])

    def note_failure(self, state: State, record) -> None:
        if record is None or record.status not in ("failed", "diverged"):
            return
        if not any(f["key"] == record.key for f in state.failures):
            reason = record.failure if record.status == "failed" else "diverged (NaN or inf loss)"
            state.failures.append({"key": record.key, "arch": record.arch, "reason": reason})

    def record_complete(self, state: State, g, predicted=None, seen: dict | None = None) -> bool:
        """Add a fully trained genome's outcome to the promotions and the hall of fame
        (``seen``: what the search predicted of it); returns whether it completed."""
        key = self.key(g, self.full)
        record = self.own_record(state, key)  # unpaid: not this run's
        if record is None or record.status != "complete":
            self.note_failure(state, record)
            return False
        curve = record.result["curve"]
        true = float(curve["val_loss"][-1])
        seen = seen or {}
        tokens, cost = self.spent_at.get(key, (state.compute.tokens, state.compute.flops))
        state.promotions.append({"generation": state.generation, "key": key, "arch": record.arch,
                                 "predicted": predicted, "raw": seen.get("raw"), "spread": seen.get("spread"),
                                 "early_score": seen.get("early_score"), "true": true,
                                 "tokens": tokens, "flops": cost})
        if not any(h["key"] == key for h in state.hall_of_fame):
            state.hall_of_fame.append({
                "key": key, "arch": record.arch, "final_val_loss": true, "generation": state.generation,
                **{m: record.result.get(m) for m in ("best_val_loss", "final_train_loss", "total_train_time_s",
                                                       "avg_inference_tokens_per_s", "n_params")},
            })
            state.hall_of_fame.sort(key=lambda h: h["final_val_loss"])
        return True

    # ---------------------------------------------------------- checkpoints
    def promotable(self, state: State) -> set:
        """Early keys whose state a later promotion may resume: the males of the
        population (the one the next generation trains) not yet trained fully."""
        return {self.key(g, self.early) for g in state.males if self.key(g, self.full) not in state.charged}

    def prune(self, state: State, final: bool = False) -> None:
        """Delete this run's resumable states that no promotion can use any more: one
        lives while its male is in the population and not yet promoted; at the end of the
        run (``final``) all go. Only keys this run charged are touched, so a shared
        archive's other runs keep theirs. ``keep_checkpoints`` keeps all."""
        if self.keep_checkpoints:
            return
        keep = set() if final else self.promotable(state)
        for key in state.charged:
            if key not in keep:
                self.task.discard(key)
