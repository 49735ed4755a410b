"""Tables: recorded complete curves of known configs, to replay whole searches.

A table is a curve file (``docs/curves.md``, JSON Lines, one curve per line)
whose curves are all complete and each carry their ``config``. A search run
against a table picks among the recorded configs and is served their recorded
curves instead of training, so a whole search costs seconds and methods can be
compared over many seeds (Syne Tune's simulator backend, NAS-Bench, DyHPO's
TaskSet tables). Besides the curve keys, a table line may hold:

- ``seed`` (int): several recordings of one config; a run's seed picks one;
- ``cost_per_step`` (> 0): what one training step costs (gpnas's own tables
  write training FLOPs per step); 1.0 when absent, so cost counts steps;
- ``x``: the evaluation steps, the same for every curve of a task
  (``0..n-1`` when absent);
- ``task``: a file may hold several tables, one per task;
- ``data_sha256``, ``vocab_size``: gpnas tables name the text their curves were
  trained on and its vocabulary (read from a task's first line), so a replay keys
  its evaluations and counts parameters as training does.

Config values are numbers or strings (strings are choices). Every curve of a
task has the same config keys and the same number of values, and a (config,
seed) pair is recorded once. Reading never executes anything from the file:
every line is parsed as JSON and checked; a problem is a ``TableError``, one
line naming ``FILE:LINE`` and the fix. ``append_recording`` and
``recorded_pairs`` let a table builder be killed and resumed.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections import namedtuple
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpnas.errors import FileFormatError
from gpnas.predict.curves import MAX_CONFIG_KEYS, _number_list

MAX_CHOICES = 8     # a numeric key with at most this many distinct values is searched as choices
MAX_NAMED = 10      # tasks named in one error message


class TableError(FileFormatError):
    """A table file that is malformed, incomplete or ambiguous."""


def config_key(config: dict) -> str:
    """The canonical JSON of a config: a config's identity in a table and its sort key."""
    return json.dumps(config, sort_keys=True)


@dataclass(frozen=True, eq=False)   # eq=False: arrays have no truth value, so compare by identity
class Recording:
    """One recorded curve of one config; ``values`` are lower-is-better."""

    seed: int | None
    values: np.ndarray                  # (n,) float64, the complete curve
    train_values: np.ndarray | None     # (n,) float64 training loss, where recorded
    line: int                           # line number in the file


@dataclass(frozen=True, eq=False)
class Table:
    """One task of a table file; configs in canonical-JSON order, recordings by seed."""

    path: str
    task: str
    sha256: str                         # of this task's lines, in file order: which table a result came from
    keys: tuple[str, ...]               # config keys, sorted
    configs: tuple[dict, ...]
    recordings: tuple[tuple[Recording, ...], ...]   # per config, sorted by seed (None first)
    steps: np.ndarray                   # (n,) float64, the evaluation steps shared by every curve
    cost_per_step: np.ndarray           # (len(configs),) float64
    data_sha256: str | None = None      # gpnas tables: the text the curves were trained on (the first line's)
    vocab_size: int | None = None       # gpnas tables: its vocabulary (it enters the parameter count)

    def __post_init__(self):
        # read-only arrays, so a frozen table stays frozen; finals are computed once since
        # regret needs best() and median() after every replayed evaluation
        for array in (self.steps, self.cost_per_step):
            array.setflags(write=False)
        finals = np.array([np.mean([r.values[-1] for r in recs]) for recs in self.recordings])
        finals.setflags(write=False)
        object.__setattr__(self, "_finals", finals)

    @property
    def horizon(self) -> int:
        """Evaluations in every curve, n."""
        return len(self.steps)

    def finals(self) -> np.ndarray:
        """(len(configs),) each config's final value, the mean over its recordings."""
        return self._finals

    def best(self) -> float:
        return float(np.min(self._finals))

    def median(self) -> float:
        return float(np.median(self._finals))

    def recording(self, config_index: int, seed: int) -> Recording:
        """The recording with this seed if there is one, else ``recordings[seed % count]``:
        the same run seed always gets the same curve, and different seeds spread over them."""
        recordings = self.recordings[config_index]
        for recording in recordings:
            if recording.seed == seed:
                return recording
        return recordings[seed % len(recordings)]


def _read_lines(path: Path) -> tuple[list[tuple[int, bytes]], bool]:
    """(line number, raw bytes) of the non-blank lines, and whether the file ends with a newline."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise TableError(f"{path}: cannot read table ({error.strerror or error}); "
                         "pass a JSON Lines curve file") from None
    # split on b"\n" only: str.splitlines would also split inside strings holding U+2028 and the like
    lines = [(number, raw) for number, raw in enumerate(data.split(b"\n"), start=1) if raw.strip()]
    return lines, data.endswith(b"\n")


def _load(path: Path, number: int, raw: bytes) -> tuple[dict, str]:
    """One line as a JSON object and its task."""
    try:
        d = json.loads(raw)
    except ValueError as error:   # JSONDecodeError and UnicodeDecodeError
        raise TableError(f"{path}:{number}: not JSON ({getattr(error, 'msg', error.__class__.__name__)}); "
                         "each line must be one JSON object") from None
    except RecursionError:
        raise TableError(f"{path}:{number}: JSON nested too deeply; each line must be one flat JSON object") from None
    if not isinstance(d, dict):
        raise TableError(f"{path}:{number}: expected a JSON object per line")
    task = d.get("task", "")   # the default read_curves uses, so both readers name tasks alike
    if isinstance(task, bool) or not isinstance(task, (str, int)):
        raise TableError(f"{path}:{number}: 'task' must be a string")
    return d, str(task)


# one parsed table curve; cost is None where the line has no cost_per_step
_Line = namedtuple("_Line", "config seed values train_values x cost")


def _parse(d: dict) -> _Line:
    """One table curve, checked field by field; ValueError (one line, with the fix) when bad."""
    config = d.get("config")
    if config is None:
        raise ValueError("curve without 'config'; a table curve must carry its hyperparameters")
    if not isinstance(config, dict) or not config:
        raise ValueError("'config' must be a non-empty object of hyperparameters")
    if len(config) > MAX_CONFIG_KEYS:
        raise ValueError(f"'config' has {len(config)} keys; at most {MAX_CONFIG_KEYS} are read")
    for key, v in config.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, str)):
            raise ValueError(f"'config.{key}' is {json.dumps(v)[:30]}; a table's hyperparameter must be "
                             "a number or a string")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError(f"'config.{key}' is {v}; a hyperparameter must be a finite number")
    if "values" not in d:
        raise ValueError("missing 'values' (the curve, one number per evaluation)")
    values = np.array(_number_list(d["values"], "values"))
    higher = d.get("higher_is_better", False)
    if not isinstance(higher, bool):
        raise ValueError("'higher_is_better' must be true or false")
    n = len(values)
    horizon = d.get("horizon", n)
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < n:
        raise ValueError(f"'horizon' must be an integer >= the {n} values; fix or remove it")
    if horizon > n:
        raise ValueError(f"incomplete curve: {n} of its {horizon} values; a table holds complete curves "
                         "only (finish the run or drop the line)")
    arrays = {}
    for name in ("train_values", "x"):
        if d.get(name) is not None:
            arrays[name] = np.array(_number_list(d[name], name))
            if len(arrays[name]) != n:
                raise ValueError(f"'{name}' has {len(arrays[name])} entries but 'values' has {n}")
    x, train = arrays.get("x"), arrays.get("train_values")
    if x is not None and np.any(np.diff(x) <= 0):
        raise ValueError("'x' must increase; give the evaluation steps in order")
    if higher:   # accuracy -> error rate, before anything compares curves
        values = 1.0 - values
        train = None if train is None else 1.0 - train
    seed = d.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"'seed' is {json.dumps(seed)[:30]}; a seed must be an integer (or absent)")
    cost = d.get("cost_per_step")
    if cost is not None and (isinstance(cost, bool) or not isinstance(cost, (int, float))
                             or not math.isfinite(cost) or cost <= 0):
        raise ValueError(f"'cost_per_step' is {json.dumps(cost)[:30]}; it must be a positive number "
                         "(training FLOPs or seconds per step), or absent for 1.0")
    return _Line(dict(config), seed, values, train, x, None if cost is None else float(cost))


def _check_like_first(line: _Line, first: _Line, first_number: int) -> None:
    """A curve must agree with its task's first curve; ValueError naming the first line when not."""
    if len(line.values) != len(first.values):
        raise ValueError(f"curve has {len(line.values)} values but line {first_number}'s has "
                         f"{len(first.values)}; every curve of a task needs the same number of evaluations")
    for key in sorted(set(first.config) ^ set(line.config)):   # a key only one of the two has
        here, there = ("lacks", "has") if key in first.config else ("has", "lacks")
        raise ValueError(f"config {here} key {key!r} that line {first_number} {there}; "
                         "give every curve of a task the same config keys")
    for key, v in line.config.items():
        if isinstance(v, str) != isinstance(first.config[key], str):
            raise ValueError(f"'config.{key}' is a {_kind(v)} here but a {_kind(first.config[key])} "
                             f"on line {first_number}; use one type per key")
    for name, here, there in (("x", line.x, first.x), ("cost_per_step", line.cost, first.cost)):
        if (here is None) != (there is None):
            raise ValueError(f"{'no' if here is None else 'a'} '{name}' here but {'one' if here is None else 'none'} "
                             f"on line {first_number}; give every curve of a task '{name}' or none")
    if line.x is not None and not np.array_equal(line.x, first.x):
        i = int(np.flatnonzero(line.x != first.x)[0])
        raise ValueError(f"'x' differs from line {first_number}'s at index {i} ({line.x[i]:g} vs "
                         f"{first.x[i]:g}); every curve of a task must be evaluated at the same steps")


def _kind(value) -> str:
    return "string" if isinstance(value, str) else "number"


def _name_tasks(tasks: list[str]) -> str:
    named = ", ".join(repr(t) for t in tasks[:MAX_NAMED])
    return named + (f" and {len(tasks) - MAX_NAMED} more" if len(tasks) > MAX_NAMED else "")


def table_tasks(path) -> list[str]:
    """The tasks in a table file, in first-seen order."""
    path = Path(path)
    lines, _ = _read_lines(path)
    return list(dict.fromkeys(_load(path, number, raw)[1] for number, raw in lines))


def read_table(path, task: str | None = None) -> Table:
    """One task of a table file (``task`` may be None when the file holds exactly one)."""
    path = Path(path)
    lines, _ = _read_lines(path)
    loaded = [(number, raw, *_load(path, number, raw)) for number, raw in lines]
    tasks = list(dict.fromkeys(t for _, _, _, t in loaded))
    if not tasks:
        raise TableError(f"{path}:1: no curves in file; expected one JSON object per line")
    if task is None:
        if len(tasks) > 1:
            raise TableError(f"{path}: holds {len(tasks)} tasks ({_name_tasks(tasks)}); "
                             "choose one with --task NAME")
        task = tasks[0]
    task = str(task)
    if task not in tasks:
        raise TableError(f"{path}: no task {task!r}; the file holds {_name_tasks(tasks)}")
    digest = hashlib.sha256()
    first, first_number = None, 0
    by_config: dict[str, tuple[dict, dict]] = {}   # config key -> (config, {seed: (Recording, cost)})
    for number, raw, d, line_task in loaded:
        if line_task != task:
            continue
        digest.update(raw + b"\n")
        try:
            line = _parse(d)
            if first is None:
                first, first_number = line, number
                first_data = d.get("data_sha256") if isinstance(d.get("data_sha256"), str) else None
                vocab = d.get("vocab_size")
                first_vocab = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else None
            else:
                _check_like_first(line, first, first_number)
        except ValueError as error:
            raise TableError(f"{path}:{number}: {error}") from None
        key = config_key(line.config)
        config, seen = by_config.setdefault(key, (line.config, {}))
        if line.seed in seen:
            raise TableError(f"{path}:{number}: config {key[:60]} with seed {line.seed} is already recorded "
                             f"on line {seen[line.seed][0].line}; drop one line or give them different seeds")
        for array in (line.values, line.train_values):
            if array is not None:
                array.setflags(write=False)
        seen[line.seed] = (Recording(line.seed, line.values, line.train_values, number), line.cost)
    configs, recordings, costs = [], [], []
    for key in sorted(by_config):
        config, seen = by_config[key]
        # None first, then seeds in order: a stable order for recording()'s modulo pick
        ordered = [seen[s] for s in sorted(seen, key=lambda s: (s is not None, s or 0))]
        configs.append(config)
        recordings.append(tuple(r for r, _ in ordered))
        costs.append(1.0 if first.cost is None else float(np.mean([c for _, c in ordered])))
    steps = np.arange(len(first.values), dtype=np.float64) if first.x is None else first.x.copy()
    return Table(path=str(path), task=task, sha256=digest.hexdigest(), keys=tuple(sorted(first.config)),
                 configs=tuple(configs), recordings=tuple(recordings), steps=steps,
                 cost_per_step=np.array(costs, dtype=np.float64), data_sha256=first_data,
                 vocab_size=first_vocab)


def infer_space(table: Table) -> dict[str, dict]:
    """The search space the recorded configs span, one gene per key, in preset TOML form."""
    space = {}
    for key in table.keys:
        distinct = sorted({c[key] for c in table.configs})   # one type per key: read_table checked
        if isinstance(distinct[0], str) or len(distinct) <= MAX_CHOICES:
            space[key] = {"choices": distinct}
        elif all(float(v).is_integer() for v in distinct):
            space[key] = {"min": int(distinct[0]), "max": int(distinct[-1])}
        else:
            lo, hi = float(distinct[0]), float(distinct[-1])
            space[key] = {"min": lo, "max": hi}
            if lo > 0 and hi / lo >= 10:   # spans a decade: search it in log space
                space[key]["log"] = True
            # normalised units follow the recorded values (their empirical quantiles), so a
            # search spreads over the recorded configs (nearest-config decoding in 8 uniform
            # dimensions piles onto the few configs at the edge of sparse regions)
            space[key]["quantiles"] = [float(v) for v in distinct]
    return space


def _repair_tail(path: Path) -> None:
    """Make the file end with a newline before an append: a killed writer's partial last
    line is cut off, a complete last line that only lacks its newline gets one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with open(path, "rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            f.write(b"\n")
        except ValueError:
            f.truncate(start)


def append_recording(path, curve: dict) -> None:
    """Append one table curve as a JSON line and fsync it: what a resumable builder writes
    after each finished run. A curve read_table would refuse is refused; nothing is written."""
    path = Path(path)
    try:
        if not isinstance(curve, dict):
            raise ValueError("expected a dict")
        _parse(curve)
        data = json.dumps(curve, allow_nan=False).encode("utf-8") + b"\n"
    except (ValueError, TypeError) as error:
        name = str(curve.get("config") if isinstance(curve, dict) else curve)[:60]
        raise TableError(f"{path}: cannot append the curve of config {name}: {error}") from None
    _repair_tail(path)
    with open(path, "ab") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def recorded_pairs(path, task) -> set[tuple[str, int | None]]:
    """(config_key(config), seed) of every curve of ``task`` already in the file (none when
    there is no file yet). A killed writer's partial last line is ignored; any other bad
    line is a TableError."""
    path = Path(path)
    if not path.exists():
        return set()
    lines, ends_with_newline = _read_lines(path)
    if lines and not ends_with_newline:
        try:
            json.loads(lines[-1][1])
        except ValueError:
            lines = lines[:-1]
    pairs = set()
    for number, raw in lines:
        d, line_task = _load(path, number, raw)
        if line_task != str(task):
            continue
        try:
            line = _parse(d)
        except ValueError as error:
            raise TableError(f"{path}:{number}: {error}") from None
        pairs.add((config_key(line.config), line.seed))
    return pairs
