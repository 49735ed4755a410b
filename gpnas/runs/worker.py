"""One male evaluation as a pure function, and the bridge from trainer results
to the predictor side's curves.

An evaluation is fully described by an ``EvalTask`` (architecture, budget,
seed, where the data lives, where the checkpoint lives), so it can run
in-process, in a local worker or on a Ray node and give the same result. The
engine builds tasks and hands them to whatever ``map`` it was given; it never
imports the trainer itself.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class EvalTask:
    """Everything a worker needs to train one male, as plain picklable data."""

    key: str                   # archive key of the result this task produces
    train_config: dict         # TrainConfig fields; max_iters is the full budget
    seed: int
    stop_at: int | None        # None: train to max_iters
    data_dir: str              # folder holding input.txt
    checkpoint: str | None     # where to save the early state / resume from
    resume_from: str | None = None  # an early checkpoint to continue (freeze-thaw)
    device: str = "auto"
    threads: int | None = None
    measure_inference: bool = False
    start: int = 0             # the step it resumes from (what it is charged for starts there)


@functools.lru_cache(maxsize=4)
def _dataset(data_dir: str):
    from gpnas.train.data import load_dataset

    return load_dataset(data_dir, download=False)


def run_evaluation(task: EvalTask) -> dict:
    """Train (or resume) one male and return the trainer's result as a dict.

    When ``resume_from`` is given, that early checkpoint is copied to this
    task's own checkpoint file first, so the early record keeps its state and a
    crash halfway through the full run never corrupts it. Running out of
    memory (CUDA or host) raises ``OutOfMemory`` naming the shape, after the
    device's cache is emptied; the map records it as a failed evaluation.
    """
    import torch

    from gpnas.train.trainer import TrainConfig, train

    if task.checkpoint:
        Path(task.checkpoint).parent.mkdir(parents=True, exist_ok=True)
        if task.resume_from and Path(task.resume_from).exists():
            shutil.copyfile(task.resume_from, task.checkpoint)
        else:  # a leftover from a run killed before it was archived: start clean
            Path(task.checkpoint).unlink(missing_ok=True)
    out_of_memory = None
    try:
        result = train(
            TrainConfig(**task.train_config),
            _dataset(task.data_dir),
            seed=task.seed,
            stop_at=task.stop_at,
            checkpoint=Path(task.checkpoint) if task.checkpoint else None,
            device=task.device,
            # a pool worker's thread count was set when it started; keep it
            threads=task.threads or torch.get_num_threads(),
            measure_inference=task.measure_inference,
        )
    except (torch.cuda.OutOfMemoryError, MemoryError, RuntimeError) as error:
        if not is_out_of_memory(error):
            raise
        out_of_memory = _first_line(str(error)) or type(error).__name__
    if out_of_memory is not None:
        # Outside the except block, the failed run's frames (and tensors) are gone:
        # give their cached blocks back before the next evaluation asks for memory.
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemory(f"out of memory training {_shape(task.train_config)} on {task.device} "
                          f"({out_of_memory})")
    return result.to_dict()


class OutOfMemory(RuntimeError):
    """An evaluation that did not fit in the device's memory (recorded as a failed evaluation)."""


def is_out_of_memory(error: BaseException) -> bool:
    """torch's CUDA OOM, Python's MemoryError, or a RuntimeError saying it ran out of memory."""
    import torch

    if isinstance(error, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _shape(config: dict) -> str:
    return " ".join(f"{k}={config[k]}" for k in ("n_layer", "n_head", "n_embd") if k in config)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:200] if text.strip() else ""


def run_shipped(item: tuple) -> dict:
    """``run_evaluation`` for a (task, text) pair, where the training text
    travels with the task (on Ray, the object store keeps one copy per node).

    A worker that sees the driver's data folder uses it; one that does not (a
    node of a cluster) writes the text once into its own cache and trains on
    that copy, verified by its SHA-256.
    """
    task, text = item
    if text is not None and not (Path(task.data_dir) / "input.txt").is_file():
        task = replace(task, data_dir=str(materialize(text)))
    return run_evaluation(task)


def materialize(text: bytes) -> Path:
    """A folder holding ``text`` as input.txt, under this machine's gpnas cache."""
    from gpnas.train.data import cache_dir

    folder = cache_dir() / "shipped" / hashlib.sha256(text).hexdigest()
    target = folder / "input.txt"
    if not target.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".input.txt.{os.getpid()}"
        tmp.write_bytes(text)
        os.replace(tmp, target)
    return folder


class Evaluator:
    """The engine's ``evaluate``: runs tasks through a map, the training text shipped
    once (``Map.share``) for workers that cannot see the dataset's folder.

    The engine calls ``evaluator(tasks)`` and gets one result (or ``Failure``) per
    task, in order; which map runs them is this object's business. ``time_limit``
    (seconds, None for none) is each evaluation's limit: one still running then is
    a ``Failure`` and its worker is replaced (``parallel`` maps; a plain function
    given as the map runs without a limit).
    """

    def __init__(self, map_fn, dataset_dir, time_limit: float | None = None):
        from gpnas.runs.parallel import Map, SerialMap  # the default runs in-process, like the serial backend

        self.map = map_fn or SerialMap()
        self.time_limit = time_limit if isinstance(self.map, Map) else None
        share = getattr(self.map, "share", None)
        self.data_handle = share((Path(dataset_dir) / "input.txt").read_bytes()) if share else None

    def __call__(self, tasks: list) -> list:
        if not tasks:
            return []
        items = [(t, self.data_handle) for t in tasks]
        if self.time_limit is None:
            return self.map(run_shipped, items)
        return self.map(run_shipped, items, timeout=self.time_limit)
