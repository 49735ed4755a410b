"""``gpnas table build``: train a grid of a preset's space to completion and write a table.

The grid: every allowed value of a discrete gene, and ``levels`` values of a
continuous one, evenly spaced in the gene's own units (log10 for a log gene),
each rounded as the search space decodes it, so a genome that decodes to a
grid config runs exactly the recorded config. Configs the task's constraints
rule out (n_embd not a multiple of n_head) are left out. Each (config, seed)
is trained to the full budget exactly as a run trains a male (same task,
same seed, one torch thread), so on the grid a table run equals a training
run.

Each finished run is appended to the table at once (``runs.table.append_recording``,
fsynced), so a killed build loses at most the runs in flight, and running the
same command again skips every (config, seed) already in the file. A run that
diverges is recorded with its values from the divergence on set to its first
value (the loss of an untrained model: it learned nothing; its training losses alike),
and says so in
``note``; one that fails (out of memory, its time limit) is not recorded and
is tried again next time.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gpnas.config import eval_time_limit
from gpnas.errors import ConfigError
from gpnas.runs.table import append_recording, config_key, recorded_pairs
from gpnas.runs.tasks import TrainingTask
from gpnas.runs.worker import Evaluator
from gpnas.search.space import Space

MAX_RUNS = 5000   # a grid of more (config, seed) runs needs yes=True (--yes)


@dataclass
class BuildCounts:
    planned: int          # (config, seed) runs in the grid
    already: int          # found in the table when the build started
    trained: int = 0      # trained and recorded now
    diverged: int = 0     # of those, diverged
    failed: int = 0       # not recorded (tried again next time)


def grid_configs(preset, levels: int) -> list[dict]:
    """The grid of the preset's space: configs in a fixed order (genes in space order,
    values ascending), constraint violators left out."""
    if levels < 2:
        raise ConfigError(f"--levels {levels}: a grid needs at least 2 levels per continuous gene")
    space = Space(replace(preset.space, constraints=TrainingTask.constraints))
    axes = []
    for gene in space.genes:
        if gene.discrete:
            axes.append(sorted(set(gene.decode(v) for v in gene.values)))
        else:
            axes.append(sorted(set(gene.decode(gene.from_unit(i / (levels - 1))) for i in range(levels))))
    configs = []
    for values in itertools.product(*axes):
        config = dict(zip(space.names, values))
        if space.decode(space.encode(config)) == config:   # meets the constraints, decodes to itself
            configs.append(config)
    return configs


def plan(preset, levels: int, seeds: list[int], yes: bool = False) -> list[tuple[dict, int]]:
    """Every (config, seed) of the grid; ConfigError for a grid larger than MAX_RUNS without ``yes``."""
    if not seeds:
        raise ConfigError("--seeds names no seed; give one or more, e.g. --seeds 0,1")
    configs = grid_configs(preset, levels)
    runs = [(c, s) for c in configs for s in seeds]
    if len(runs) > MAX_RUNS and not yes:
        raise ConfigError(f"the grid has {len(configs)} configs x {len(seeds)} seeds = {len(runs)} runs, more than "
                          f"{MAX_RUNS}; lower --levels or narrow the space, or add --yes to train them all")
    return runs


def build_table(preset, levels: int, seeds: list[int], out, dataset, checkpoints_dir, map_fn=None,
                device: str = "auto", threads: int | None = None, task_name: str | None = None,
                yes: bool = False, chunk: int = 8, on_progress=None) -> BuildCounts:
    """Train what the table at ``out`` lacks of the grid and append it; returns the counts.
    ``on_progress(counts)`` is called after every chunk of runs."""
    runs = plan(preset, levels, seeds, yes)
    task_name = task_name or preset.name
    done = recorded_pairs(out, task_name)
    todo = [(c, s) for c, s in runs if (config_key(c), s) not in done]
    counts = BuildCounts(planned=len(runs), already=len(runs) - len(todo))
    dataset_dir = str(Path(dataset.text_path).parent)
    task = TrainingTask(preset, dataset_dir, dataset.sha256, dataset.name, checkpoints_dir,
                        evaluate=Evaluator(map_fn, dataset_dir, time_limit=eval_time_limit(preset, device)),
                        device=device, threads=threads, vocab_size=dataset.vocab_size)
    for start in range(0, len(todo), chunk):
        batch = todo[start:start + chunk]
        requests = []
        for config, seed in batch:
            run_config = task.run_config(config)
            requests.append(task.request(task.key(run_config, task.full_steps, seed), run_config,
                                         task.full_steps, seed))
        for (config, seed), request, result in zip(batch, requests, task(requests)):
            task.discard(request.key)
            if not isinstance(result, dict):
                counts.failed += 1
                continue
            append_recording(out, recording(task, task_name, config, seed, result, preset.name))
            counts.trained += 1
            counts.diverged += bool(result["curve"]["diverged"])
        if on_progress is not None:
            on_progress(counts)
    return counts


def recording(task: TrainingTask, task_name: str, config: dict, seed: int, result: dict, preset_name: str) -> dict:
    """One table line of a finished training run."""
    curve = result["curve"]
    values = [float(v) for v in curve["val_loss"]]
    train = [float(v) for v in curve.get("eval_train_loss") or []]
    line = {"task": task_name, "config_id": f"{config_key(config)}|seed={seed}", "metric": "val_loss",
            "values": values, "x": [int(s) for s in curve["eval_steps"]], "config": config, "seed": seed,
            "cost_per_step": task.cost_per_step(task.run_config(config)), "data_sha256": task.data_hash,
            "vocab_size": task.vocab_size,
            "source": f"gpnas table build, preset {preset_name}, {time.strftime('%Y-%m-%d')}"}
    if len(train) == len(values):
        line["train_values"] = train
    complete = task.full_steps // task.eval_interval + 1
    if curve["diverged"] or len(values) < complete or not all(math.isfinite(v) for v in values + train):
        first = values[0] if math.isfinite(values[0]) else math.log(task.vocab_size)
        cut = next((i for i, v in enumerate(values) if not math.isfinite(v)), len(values))
        line["values"] = values[:cut] + [first] * (complete - cut)
        line["x"] = list(range(0, task.full_steps + 1, task.eval_interval))
        if len(train) == len(values) and train and math.isfinite(train[0]):
            line["train_values"] = [v if math.isfinite(v) else train[0] for v in train[:cut]] + \
                [train[0]] * (complete - cut)
        else:
            line.pop("train_values", None)
        line["note"] = f"diverged at evaluation {cut}: later values set to the first (it learned nothing)"
    return line
