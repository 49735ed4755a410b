"""Optuna's own algorithms as anchors: its sampler and pruner driven through a
gpnas ledger, so they search the same space, against the same evaluation task
(a table, or training), within the same budget and cost accounting as every
gpnas method.

==========================  ====================================================
optuna-tpe-hyperband        TPESampler + HyperbandPruner (reduction factor 3)
optuna-random-sh            RandomSampler + SuccessiveHalvingPruner (factor 3)
optuna-tpe                  TPESampler, no pruning (every trial trained fully)
==========================  ====================================================

A trial draws one value per gene (``suggest_int``, ``suggest_float`` with
``log`` for a log gene, ``suggest_categorical`` for choices), the ledger runs
the config that decodes from them evaluation by evaluation (each resuming the
one before: freeze-thaw, charged only the steps it adds), the trial reports
each validation value at its evaluation index, and Optuna's pruner decides
whether it goes on. A trial that reaches the full budget is told its final
value and counts as a completed config, as a gpnas method's full training
does. The run ends when the ledger's budget cannot pay for the next step.

The ledger, its space and the state come from the caller (duck-typed: this
module imports neither the search nor the trainer).
"""

from __future__ import annotations

import optuna

METHODS = ("optuna-tpe-hyperband", "optuna-random-sh", "optuna-tpe")


def make_study(method: str, seed: int, n_evaluations: int, min_resource: int = 1) -> optuna.Study:
    """The study of one anchor: its sampler and pruner, seeded. ``min_resource``: the
    evaluation index of the first rung (gpnas's early budget, as its own Hyperband)."""
    if method not in METHODS:
        raise ValueError(f"unknown Optuna method {method!r}; use one of {', '.join(METHODS)}")
    sampler = (optuna.samplers.RandomSampler(seed=seed) if method == "optuna-random-sh"
               else optuna.samplers.TPESampler(seed=seed))
    max_resource = max(2, n_evaluations - 1)
    pruner = {"optuna-tpe-hyperband": optuna.pruners.HyperbandPruner(min_resource=min_resource,
                                                                     max_resource=max_resource, reduction_factor=3),
              "optuna-random-sh": optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                                         reduction_factor=3),
              "optuna-tpe": optuna.pruners.NopPruner()}[method]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(direction="minimize", sampler=sampler, pruner=pruner)


def suggest(trial, gene) -> object:
    """One value of a ``search.space.Gene`` from an Optuna trial."""
    spec = gene.spec
    if spec.choices is not None:
        return trial.suggest_categorical(gene.name, list(spec.values()))
    if gene.integer:
        return trial.suggest_int(gene.name, int(spec.low), int(spec.high), step=spec.step or 1)
    return trial.suggest_float(gene.name, float(spec.low), float(spec.high), log=gene.log)


def run_optuna(method: str, ledger, state, steps: list[int], seed: int, max_trials: int = 500) -> int:
    """Drive one Optuna anchor through ``ledger`` (charging ``state``) until its budget
    is spent; ``steps`` are the task's evaluation steps (the first is the untrained
    model's, reported free). Returns the number of trials."""
    study = make_study(method, seed, len(steps), max(1, steps.index(ledger.early)))
    space = ledger.space
    trials = 0
    while not state.exhausted and trials < max_trials:
        trial = study.ask()
        trials += 1
        genome = space.encode({gene.name: suggest(trial, gene) for gene in space.genes})
        below, value, outcome = None, None, None   # outcome: complete, pruned, or None (failed, unaffordable)
        for index, step in enumerate(steps[1:], start=1):
            request = ledger.request(genome, step, below)
            ledger.evaluate(state, [request])
            record = ledger.own_record(state, request.key)
            if record is None or record.result is None or record.status == "diverged":
                break
            value, below = float(record.result["curve"]["val_loss"][-1]), step
            if step == steps[-1]:
                outcome = "complete"
                break
            trial.report(value, index)
            if trial.should_prune():
                outcome = "pruned"
                break
        if outcome == "complete":
            ledger.record_complete(state, genome)
            study.tell(trial, value)
        else:
            study.tell(trial, state=optuna.trial.TrialState.PRUNED if outcome else optuna.trial.TrialState.FAIL)
    return trials
