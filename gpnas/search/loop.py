"""The generation loop every search shares, and its log line.

``Search.run`` starts a run (``start``: generation 0) or continues it from
the last snapshot, then calls ``step`` once per generation until the target
or the budget is reached; after each generation it appends the log line,
snapshots the state, lets the ledger prune what no promotion needs, and
tells the callbacks. The co-evolution engine (``engine.Evolution``) and each
standard method (``methods``) supply ``start`` and ``step``; all of them
evaluate through the ``ledger.Ledger`` they are given.
"""

from __future__ import annotations

import math
import random

import numpy as np

from gpnas.predict.features import cohort_reference
from gpnas.search import females as fem
from gpnas.search.state import State, state_from_dict, state_to_dict

WORST = fem.WORST


class Search:
    """A search over one ledger: its loop, snapshots and callbacks."""

    def __init__(self, preset, ledger, snapshots=None, callbacks=()):
        self.preset, self.ledger, self.space, self.ga, self.seed = preset, ledger, ledger.space, preset.ga, ledger.seed
        self.snapshots, self.callbacks = snapshots, list(callbacks)
        self.features = fem.Features.of_task(ledger.task)
        self.pset = self.features.pset()  # snapshots' trees are read against it
        # the task guarantees prefix_length(full_evals, prefix_frac) == the early run's evaluations
        self.full_evals, self.prefix_frac = ledger.task.full_evals, ledger.task.prefix_frac
        self.predicted = {}       # full-run key -> {raw, spread, early_score} of this generation's males
        self.choice = None        # the predictor chosen this generation (predict.CurvePredictor)

    def completed_curves(self, state: State) -> fem.CurveSet:
        """The completed curves of this run's own evaluations, in the order it made them
        (``Ledger.completed_curves``), as the females' training and held-out problems. With
        ``ga.cohort = "run"`` their cohort features (and the males' when predicted) rank each
        curve against every config the run has started (``Ledger.started_curves``), so a
        rank means the same at fit and at predict time; by default, among the curves of
        each call."""
        curves = self.ledger.completed_curves(state)
        if self.ga.cohort != "run":
            return fem.CurveSet.build(curves, self.prefix_frac, self.features)
        started = self.ledger.started_curves(state)
        reference = cohort_reference(started, self.prefix_frac, self.ledger.task.has_train_values)
        return fem.CurveSet.build(curves, self.prefix_frac, self.features, reference, len(started))

    def start(self) -> tuple[State, dict]:
        raise NotImplementedError

    def step(self, state: State, rng: random.Random) -> dict:
        raise NotImplementedError

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
            self.ledger.prune(state)
        rng = random.Random()
        rng.setstate(state.rng_state)
        while state.generation < generations and not state.exhausted:
            state.generation += 1
            row = self.step(state, rng)                                         # (1)-(5)
            state.rng_state = rng.getstate()
            self.finish_generation(state, row)                                  # (6)
        return state

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
        seen = self.predicted.get(self.ledger.key(best_male, self.ledger.full), {}) if best_male is not None else {}
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
        self.ledger.prune(state)  # after the snapshot: a resume never misses a file it needs
        for callback in self.callbacks:
            callback(state, row)



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
