"""Learning curves as the predictors see them: plain arrays, lower is better.

A curve is a sequence of evaluations of one training run (validation loss at
regular steps or epochs). Files are JSON Lines, one curve per line, as in
``docs/curves.md``::

    {"task": "...", "config_id": "...", "metric": "val_loss",
     "higher_is_better": false, "values": [0.69, 0.61, ...],
     "x": [0, 250, ...], "config": {"learning_rate": 0.001, ...},
     "horizon": 51}

``values`` is required; everything else is optional. ``horizon`` (not in the
shared files) says how many evaluations the complete run has when ``values``
holds only its start. Curves where higher is better (accuracy) are turned into
lower-is-better by ``1 - value`` when read, before anything else sees them.

The prefix convention, used everywhere: a curve of n evaluations is seen
through its first ``k = max(4, ceil(frac * n))`` values (capped at n); the
predictor also knows n, the horizon, and the target is the final value,
``values[n - 1]``. Feature time runs over evaluation indices 1..k, so curves
should be evaluated at evenly spaced steps (``x`` is kept but not needed).

Loading never executes anything from a file; every problem is a
``FileFormatError`` naming ``FILE:LINE`` and the fix.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpnas.errors import DataError, FileFormatError

MIN_PREFIX = 4
MAX_CONFIG_KEYS = 200


def prefix_length(n: int, frac: float) -> int:
    """Evaluations seen of a curve of ``n``: ``max(4, ceil(frac * n))``, capped at n."""
    if not 0.0 < frac <= 1.0:
        raise ValueError(f"prefix fraction must be in (0, 1], got {frac}")
    # round first so 0.2 * 50 == 10 exactly, not 11 through float error
    return int(min(n, max(MIN_PREFIX, math.ceil(round(frac * n, 9)))))


@dataclass(frozen=True)
class Curve:
    """One learning curve; ``values`` are float64 and lower is better."""

    values: np.ndarray
    task: str = ""
    config_id: str = ""
    x: np.ndarray | None = None
    horizon: int | None = None  # evaluations in the complete curve; None: values is complete
    config: Mapping[str, float] = field(default_factory=dict)
    metric: str = "val_loss"
    train_values: np.ndarray | None = None  # training loss at the same evaluations, where recorded

    def __post_init__(self):
        object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float64).reshape(-1))
        for name in ("x", "train_values"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=np.float64).reshape(-1))
        if len(self.values) == 0:
            raise DataError("a curve needs at least one value")

    @property
    def n(self) -> int:
        """Evaluations in the complete curve."""
        return int(self.horizon) if self.horizon is not None else len(self.values)

    @property
    def complete(self) -> bool:
        return len(self.values) >= self.n

    @property
    def final(self) -> float:
        """The final value (only meaningful when the curve is complete)."""
        return float(self.values[-1])

    def prefix(self, frac: float) -> "Curve":
        """The first ``prefix_length(n, frac)`` values, knowing the horizon n."""
        k = min(len(self.values), prefix_length(self.n, frac))
        return Curve(
            values=self.values[:k], task=self.task, config_id=self.config_id,
            x=None if self.x is None else self.x[:k], horizon=self.n,
            config=dict(self.config), metric=self.metric,
            train_values=None if self.train_values is None else self.train_values[:k],
        )


def curve_from_learning_curve(curve: Mapping, *, task: str = "", config_id: str = "",
                              config: Mapping[str, float] | None = None) -> Curve:
    """The trainer's ``LearningCurve.to_dict()`` as a validation-loss Curve, with the
    training loss on the fixed training batches at the same evaluations.

    The horizon is the number of evaluations the complete run will have: the
    trainer evaluates at 0, eval_interval, 2 * eval_interval, ... and at the
    last step, so a partial (early) run knows how far it will go. A diverged
    run's NaN/inf losses are kept; features treat them as blow-ups.
    """
    steps = [int(s) for s in curve["eval_steps"]]
    values = [float(v) for v in curve["val_loss"]]
    max_iters = int(curve["max_iters"])
    horizon = len(values)
    if len(steps) >= 2 and steps[1] > steps[0]:
        interval = steps[1] - steps[0]
        planned = list(range(steps[0], max_iters, interval))
        horizon = max(len(values), len(planned) + (1 if planned[-1] != max_iters else 0))
    train = [float(v) for v in curve.get("eval_train_loss") or []]
    return Curve(values=np.array(values), task=task, config_id=config_id,
                 x=np.array(steps, dtype=np.float64), horizon=horizon,
                 config=dict(config or {}), metric="val_loss",
                 train_values=np.array(train) if len(train) == len(values) else None)


def _number_list(value, what: str) -> list[float]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"'{what}' must be a non-empty list of numbers")
    out = []
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"'{what}[{i}]' is {json.dumps(v)[:30]}, not a number")
        if not math.isfinite(v):
            raise ValueError(f"'{what}[{i}]' is {v}; drop the curve or cut it before it diverges")
        out.append(float(v))
    return out


def curve_from_dict(d) -> Curve:
    """One JSON object as a Curve; ValueError (one line) when malformed."""
    if not isinstance(d, dict):
        raise ValueError("expected a JSON object per line")
    if "values" not in d:
        raise ValueError("missing 'values' (the curve, one number per evaluation)")
    values = _number_list(d["values"], "values")
    higher = d.get("higher_is_better", False)
    if not isinstance(higher, bool):
        raise ValueError("'higher_is_better' must be true or false")
    if higher:
        values = [1.0 - v for v in values]  # accuracy -> error rate
    x = train = None
    if d.get("x") is not None:
        x = _number_list(d["x"], "x")
        if len(x) != len(values):
            raise ValueError(f"'x' has {len(x)} entries but 'values' has {len(values)}")
    if d.get("train_values") is not None:
        train = _number_list(d["train_values"], "train_values")
        if len(train) != len(values):
            raise ValueError(f"'train_values' has {len(train)} entries but 'values' has {len(values)}")
        if higher:
            train = [1.0 - v for v in train]
    horizon = d.get("horizon")
    if horizon is not None and (isinstance(horizon, bool) or not isinstance(horizon, int)
                                or horizon < len(values)):
        raise ValueError("'horizon' must be an integer >= the number of values")
    config = d.get("config") or {}
    if not isinstance(config, dict):
        raise ValueError("'config' must be an object of hyperparameters")
    if len(config) > MAX_CONFIG_KEYS:
        raise ValueError(f"'config' has {len(config)} keys; at most {MAX_CONFIG_KEYS} are read")
    # every finite number is a hyperparameter a predictor may read; other values
    # (strings, lists, booleans) are kept out: features need numbers
    clean = {}
    for key, v in config.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise ValueError(f"'config.{key}' is {v}; a hyperparameter must be a finite number")
            clean[str(key)] = float(v)
    for key in ("task", "config_id", "metric"):
        if key in d and not isinstance(d[key], (str, int)):
            raise ValueError(f"'{key}' must be a string")
    return Curve(values=np.array(values), task=str(d.get("task", "")),
                 config_id=str(d.get("config_id", "")),
                 x=None if x is None else np.array(x), horizon=horizon, config=clean,
                 metric=str(d.get("metric", "val_loss")),
                 train_values=None if train is None else np.array(train))


def read_curves(path) -> list[Curve]:
    """Read a JSON Lines curve file; blank lines are skipped.

    Raises FileFormatError "FILE:LINE: problem" for the first bad line (a
    repeated (task, config_id) pair included), and for a file that cannot be
    read or holds no curve.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise FileFormatError(f"{path}: cannot read curve file ({error.__class__.__name__}: "
                              f"{getattr(error, 'strerror', None) or error}); pass a JSON Lines file") from None
    curves, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as error:
            raise FileFormatError(f"{path}:{number}: not JSON ({error.msg}); "
                                  "each line must be one JSON object") from None
        except RecursionError:
            raise FileFormatError(f"{path}:{number}: JSON nested too deeply; "
                                  "each line must be one flat JSON object") from None
        try:
            curve = curve_from_dict(d)
        except ValueError as error:
            raise FileFormatError(f"{path}:{number}: {error}") from None
        if curve.config_id:  # an id names one curve: a second one would be scored twice or mixed up
            first = seen.setdefault((curve.task, curve.config_id), number)
            if first != number:
                raise FileFormatError(f"{path}:{number}: duplicate curve id {curve.config_id!r} in task "
                                      f"{curve.task!r} (first on line {first}); give each curve its own config_id")
        curves.append(curve)
    if not curves:
        raise FileFormatError(f"{path}:1: no curves in file; expected one JSON object per line")
    return curves


def curve_to_dict(curve: Curve) -> dict:
    d = {"task": curve.task, "config_id": curve.config_id, "metric": curve.metric,
         "higher_is_better": False, "values": [float(v) for v in curve.values]}
    if curve.x is not None:
        d["x"] = [float(v) for v in curve.x]
    if curve.horizon is not None and curve.horizon != len(curve.values):
        d["horizon"] = int(curve.horizon)
    if curve.config:
        d["config"] = {k: float(v) for k, v in curve.config.items()}
    if curve.train_values is not None:
        d["train_values"] = [float(v) for v in curve.train_values]
    return d


def write_curves(path, curves: Iterable[Curve]) -> None:
    """Write curves as JSON Lines (lower-is-better values, as held in memory)."""
    lines = []
    for curve in curves:
        if not np.all(np.isfinite(curve.values)):
            raise DataError(f"curve {curve.task}/{curve.config_id} holds NaN/inf; "
                            "cut it before it diverges to write it")
        lines.append(json.dumps(curve_to_dict(curve)))
    Path(path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def group_by_task(curves: Sequence[Curve]) -> dict[str, np.ndarray]:
    """task -> indices of its curves, in first-seen order."""
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(curves):
        groups.setdefault(c.task, []).append(i)
    return {t: np.array(ix, dtype=np.int64) for t, ix in groups.items()}
