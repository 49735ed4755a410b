"""Evaluation tasks: what a run of k steps of a config costs, and its curve.

The search never knows what it evaluates. The ledger (``search.ledger``)
asks a task, for a config the search space decoded:

- ``run_config(config)``: the config that actually runs (nanoGPT's whole
  TrainConfig with the preset's fixed genes; a table's nearest recorded config);
- ``key(run_config, stop_at, seed)``: the archive key of that evaluation;
- ``request(...)``: what the evaluator needs to produce it, and
  ``__call__(requests)``: one result (or ``parallel.Failure``) per request, in
  the trainer's result layout whatever produced it;
- ``cost_per_step(run_config)`` and ``steps_run(result)``: what it is charged;
- ``arch(run_config)`` and ``curve_config(arch)``: what the archive records and
  what the predictors read as the curve's config.

``TrainingTask`` trains nanoGPT on a text (cost in training FLOPs, checkpoints,
freeze-thaw). ``TableTask`` replays a table of recorded
curves. Both say which steps exist (``early_steps``, ``full_steps``,
``eval_interval``), the constraints the space must meet, and the config keys
the females read (key -> log10-scaled).
"""

from __future__ import annotations

import bisect
import hashlib
import json
from pathlib import Path
from typing import Mapping

import numpy as np

from gpnas.config import NANOGPT_CONSTRAINTS, hyperparameter_features, training_flops_per_step
from gpnas.errors import ConfigError
from gpnas.runs.archive import evaluation_key
from gpnas.runs.worker import EvalTask, Evaluator

# the nanoGPT task's config keys, in TrainConfig order
ARCH_KEYS = ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")
# what the females read of a nanoGPT curve's config: key -> log10-scaled
HYPERPARAMETER_KEYS = {"learning_rate": True, "dropout": False, "n_layer": False, "n_head": False,
                       "n_embd": False, "n_params": True}


def train_config_dict(arch: Mapping, budget, reference: Mapping | None = None) -> dict:
    """The TrainConfig fields of a full run of ``arch``: ``TrainConfig(**d)`` (max_iters = full budget).

    A gene the space leaves out takes its value from ``reference`` (the preset's)."""
    values = {**(reference or {}), **arch}
    return {
        "n_layer": int(values["n_layer"]),
        "n_head": int(values["n_head"]),
        "n_embd": int(values["n_embd"]),
        "dropout": float(values["dropout"]),
        "learning_rate": float(values["learning_rate"]),
        "block_size": budget.block_size,
        "batch_size": budget.batch_size,
        "max_iters": budget.full_iters,
        "eval_interval": budget.eval_interval,
        "eval_batches": budget.eval_batches,
        "warmup_iters": budget.warmup_iters,
    }


class TrainingTask:
    """nanoGPT trained on a text: cost in training FLOPs (``config.training_flops_per_step``),
    early checkpoints resumed by promotions (freeze-thaw)."""

    kind = "training"
    arch_keys = ARCH_KEYS
    constraints = NANOGPT_CONSTRAINTS
    config_keys = HYPERPARAMETER_KEYS
    has_train_values = True   # the trainer records the training loss at every evaluation

    def __init__(self, preset, dataset_dir: str, data_sha256: str, name: str, checkpoints_dir,
                 evaluate=None, map_fn=None, device: str = "auto", threads: int | None = None,
                 vocab_size: int = 65):
        self.budget, self.reference = preset.budget, preset.reference.as_dict()
        self.dataset_dir, self.data_hash, self.name = dataset_dir, data_sha256, name
        self.checkpoints_dir = Path(checkpoints_dir)
        # evaluate(requests) -> one result or Failure per request: the runs' Evaluator over
        # map_fn (serial when None) unless given
        self.evaluate = evaluate or Evaluator(map_fn, dataset_dir)
        self.device, self.threads, self.vocab_size = device, threads, vocab_size
        self.early_steps, self.full_steps = self.budget.early_iters, self.budget.full_iters
        self.eval_interval = self.budget.eval_interval
        self.tokens_per_step = self.budget.batch_size * self.budget.block_size
        self.full_evals = self.full_steps // self.eval_interval + 1  # evaluations of a complete run
        self.prefix_frac = self.budget.prefix_frac   # the early run's share of it

    def __call__(self, requests: list) -> list:
        return self.evaluate(requests)

    def run_config(self, config: Mapping) -> dict:
        return train_config_dict(config, self.budget, self.reference)

    def key(self, run_config: Mapping, stop_at: int, seed: int) -> str:
        return evaluation_key(run_config, self.full_steps, stop_at, seed, self.data_hash)

    def checkpoint(self, key: str) -> Path:
        return self.checkpoints_dir / f"{key}.pt"

    def request(self, key: str, run_config: dict, stop_at: int, seed: int, resume_from: str | None = None,
                start: int = 0):
        """The worker's task; ``resume_from`` is the archive key of the evaluation it continues
        (from step ``start``): its checkpoint, where it is still on disk."""
        return EvalTask(
            key=key, train_config=dict(run_config), seed=seed, stop_at=stop_at, data_dir=self.dataset_dir,
            checkpoint=str(self.checkpoint(key)),
            resume_from=str(self.checkpoint(resume_from)) if resume_from else None,
            # torch's results depend on its thread count: one fixed count (default 1) makes a
            # run identical whichever backend evaluates it
            device=self.device, threads=self.threads or 1,
            measure_inference=stop_at == self.full_steps, start=start,
        )

    @staticmethod
    def checkpoint_record(key: str) -> str:
        """An early record's checkpoint, relative to the archive's folder."""
        return f"checkpoints/{key}.pt"

    def resumable(self, key: str) -> bool:
        """Whether the evaluation ``key`` left a state to resume (its checkpoint is on disk)."""
        return self.checkpoint(key).exists()

    def discard(self, key: str) -> None:
        """Forget what resuming ``key`` would need (its checkpoint)."""
        self.checkpoint(key).unlink(missing_ok=True)

    def cost_per_step(self, run_config: Mapping) -> int:
        return training_flops_per_step(run_config, self.budget, self.vocab_size)

    @staticmethod
    def steps_run(result: dict) -> int:
        """Steps a result trained (a diverged run: up to where it stopped)."""
        return len(result["curve"]["train_loss"])

    @staticmethod
    def arch(run_config: Mapping) -> dict:
        return {k: run_config[k] for k in ARCH_KEYS}

    def curve_config(self, arch: Mapping) -> dict:
        return hyperparameter_features(arch, self.vocab_size)

    def early_compute(self, run_config: Mapping, steps: int) -> float:
        """The compute unit of the early score: millions of training tokens."""
        return steps * self.tokens_per_step / 1e6


class TableTask:
    """A table of recorded curves (``runs.table``) replayed as an evaluation task.

    Its candidates are the recorded configs: a decoded config runs as the
    nearest recorded one in the space's normalised units (ties: the first in the
    table's order; the space is bound with ``bind``), the run's seed picks one
    recording of it (``Table.recording``). An evaluation to step k returns the
    recorded prefix up to k; it is charged ``cost_per_step`` per step like a
    training run, and a promotion resumes (freeze-thaw) and pays the rest.

    ``tokens_per_step`` (a gpnas table replayed with its own preset: batch x
    block) makes it the preset's own table: token counts and the early score are
    those of training, and the females read nanoGPT's hyperparameter features
    (``HYPERPARAMETER_KEYS``, n_params with the table's vocabulary), so on the
    grid a table run equals a training run. Without it the early score is the
    loss drop per unit of cost and the females read the table's numeric keys.
    """

    kind = "table"
    constraints = ()

    def __init__(self, table, prefix_frac: float, tokens_per_step: int | None = None, preset=None):
        from gpnas.predict.curves import prefix_length

        steps = [int(round(s)) for s in table.steps]
        if len(steps) < 2 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ConfigError(f"table {table.path} task {table.task!r}: its evaluation steps must be "
                              "whole, increasing numbers; fix 'x' in the file")
        self.table, self.name, self.data_hash = table, table.task, table.sha256
        self.steps = steps
        self.full_evals, self.prefix_frac = len(steps), prefix_frac
        self.early_steps, self.full_steps = steps[prefix_length(len(steps), prefix_frac) - 1], steps[-1]
        self.eval_interval = steps[1] - steps[0]
        self.tokens_per_step = tokens_per_step or 0
        self.arch_keys = table.keys
        self.has_train_values = all(r.train_values is not None for recs in table.recordings for r in recs)
        self.config_keys = HYPERPARAMETER_KEYS if tokens_per_step else _config_keys(table.configs)
        self.index = {_canonical(c): i for i, c in enumerate(table.configs)}
        self.units = None
        # a gpnas table of its own preset keys its evaluations as training would (the same
        # archive keys, hence the same held-out split of the females' curves)
        self.training = (preset if tokens_per_step and preset is not None and table.data_sha256 else None)

    def bind(self, space) -> "TableTask":
        """Locate configs in ``space`` (a ``search.space.Space``: its ``config_unit``)."""
        self.space = space
        self.units = np.array([space.config_unit(c) for c in self.table.configs])
        return self

    def __call__(self, requests: list) -> list:
        return [self.replay(r) for r in requests]

    def run_config(self, config: Mapping) -> dict:
        u = self.space.config_unit(config)
        return dict(self.table.configs[int(np.argmin(((self.units - u) ** 2).sum(axis=1)))])

    def key(self, run_config: Mapping, stop_at: int, seed: int) -> str:
        if self.training is not None:
            budget = self.training.budget
            return evaluation_key(train_config_dict(run_config, budget, self.training.reference.as_dict()),
                                  budget.full_iters, stop_at, seed, self.table.data_sha256)
        text = json.dumps({"table": self.data_hash, "config": _canonical(run_config), "stop_at": int(stop_at),
                           "seed": int(seed)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def request(self, key: str, run_config: dict, stop_at: int, seed: int, resume_from: str | None = None,
                start: int = 0):
        return EvalTask(key=key, train_config=dict(run_config), seed=seed, stop_at=stop_at, data_dir="",
                        checkpoint=None, resume_from=resume_from, start=start)

    def replay(self, request) -> dict:
        """The recorded prefix up to ``request.stop_at``, in the trainer's result layout."""
        i = self.index[_canonical(request.train_config)]
        recording = self.table.recording(i, request.seed)
        m = bisect.bisect_right(self.steps, request.stop_at)
        values = [float(v) for v in recording.values[:m]]
        train = [float(v) for v in recording.train_values[:m]] if recording.train_values is not None else []
        return {"curve": {"train_loss": [], "eval_steps": self.steps[:m], "val_loss": values,
                          "eval_train_loss": train, "step_time_s": [], "diverged": False,
                          "max_iters": self.full_steps, "steps": int(request.stop_at)},
                "best_val_loss": min(values), "final_train_loss": train[-1] if train else None,
                "total_train_time_s": None, "avg_inference_tokens_per_s": None,
                "n_params": int(self.curve_config(request.train_config)["n_params"]) if self.tokens_per_step
                else None}

    def truth(self, run_config: Mapping, seed: int) -> tuple[float, float]:
        """(value at the early step, final value) of ``run_config``'s recording for
        ``seed``, charged to nobody: what an experiment reads to judge a search's choices."""
        recording = self.table.recording(self.index[_canonical(run_config)], seed)
        early = bisect.bisect_right(self.steps, self.early_steps) - 1
        return float(recording.values[early]), float(recording.values[-1])

    @staticmethod
    def steps_run(result: dict) -> int:
        return int(result["curve"]["steps"])

    def cost_per_step(self, run_config: Mapping) -> float:
        return float(self.table.cost_per_step[self.index[_canonical(run_config)]])

    @staticmethod
    def arch(run_config: Mapping) -> dict:
        return dict(run_config)

    def curve_config(self, arch: Mapping) -> dict:
        if self.tokens_per_step:
            return hyperparameter_features(arch, self.table.vocab_size or 65)
        return {k: float(v) for k, v in arch.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}

    def early_compute(self, run_config: Mapping, steps: int) -> float:
        if self.tokens_per_step:
            return steps * self.tokens_per_step / 1e6
        return steps * self.cost_per_step(run_config)

    # a replay keeps no state: every recorded prefix can be resumed
    @staticmethod
    def checkpoint_record(key: str) -> None:
        return None

    @staticmethod
    def resumable(key: str) -> bool:
        return True

    @staticmethod
    def discard(key: str) -> None:
        return None


def _canonical(config: Mapping) -> str:
    """A config's identity: canonical JSON with numbers as floats (4 and 4.0 alike)."""
    return json.dumps({k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                       for k, v in config.items()}, sort_keys=True)


def _config_keys(configs) -> dict:
    """The numeric config keys the females read: key -> log10-scaled (positive and
    spanning a decade or more)."""
    keys = {}
    for key in sorted(configs[0]):
        values = [c[key] for c in configs]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            lo, hi = min(values), max(values)
            keys[key] = bool(lo > 0 and hi / lo >= 10)
    return keys


def table_space(preset, table):
    """The space a run searches on a table: the preset's when the table records every gene
    of it (a gpnas table of that preset; the preset's space must lie inside what the table
    covers: ConfigError naming the gene otherwise), else the space the table's configs span
    (``runs.table.infer_space``: a foreign table, searched with the preset's [ga] and
    budget fraction)."""
    from gpnas.config import space_from_dict
    from gpnas.runs.table import infer_space

    where = f"table {table.path} task {table.task!r}"
    genes, keys = preset.space.names, set(table.keys)
    if not all(g in keys for g in genes):
        return space_from_dict(infer_space(table), where)
    for spec in preset.space.genes:
        recorded = sorted({c[spec.name] for c in table.configs})
        wanted = spec.values() if spec.discrete else (spec.low, spec.high)
        outside = [v for v in wanted if v not in recorded] if spec.discrete else \
            [v for v in wanted if not recorded[0] - 1e-12 <= v <= recorded[-1] + 1e-12]
        if outside:
            raise ConfigError(f"{where} does not cover space.{spec.name}: {outside} not recorded (the table has "
                              f"{recorded if len(recorded) <= 10 else [recorded[0], '...', recorded[-1]]}); "
                              f"narrow space.{spec.name} with --set or build the table over it")
    return preset.space


def replay_task(preset, table) -> tuple[TableTask, object]:
    """The table task a run of ``preset`` replays, and the space it searches (``table_space``):
    a gpnas table of the preset's own space reports tokens and keys its evaluations as
    training does; a foreign table charges its own cost."""
    space = table_space(preset, table)
    own = space is preset.space
    budget = preset.budget
    tokens = budget.batch_size * budget.block_size if own else None
    return TableTask(table, budget.prefix_frac, tokens, preset if own else None), space
