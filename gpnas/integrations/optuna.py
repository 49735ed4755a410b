"""Optuna studies as curve files, and ``PredictorPruner``: an Optuna pruner that
predicts where a trial's curve ends with a gpnas predictor.

A trial's intermediate values (``trial.report(value, step)``), in step order,
are its learning curve; its numeric params are the curve's ``config``. Inside
this module every curve is lower-is-better: a maximised study's values become
``1 - value``, as the curve files have it (docs/curves.md).

The pruner, at a report of a trial with m values so far::

    no pruning before n_startup_trials completed trials, at a step below
        n_warmup_steps, before the predictor's prefix k = max(4, ceil(frac * n)),
        or at the last evaluation (n, the complete trial's evaluations)
    prune a non-finite value
    predicted = the predictor's final value of the trial at m = k, the prefix it was
                fitted for; at later reports the last value so far (a formula fitted
                on 4 values is not trusted to extrapolate from 20)
    threshold = the `quantile` of the completed trials' finals
    margin    = the `error_quantile` of |predicted - final| over completed trials
                the predictor was not fitted on, seen through their first m values
                by the same predictor
    prune  iff  predicted > threshold + margin

The predictor is a saved ``predictor.json`` (``gpnas predictors fit``), a
``CurvePredictor``, or (by default) one refitted on the study's completed
trials every ``refit_every`` completions once ``min_fit_trials`` have
completed; until then, and whenever a fit fails, the last value so far is
the prediction (``predictor="last"`` keeps it always). A refit holds every
third completed trial out of fitting: those give its margin.

Optuna is an optional extra (``pip install 'gpnas[optuna]'``) and this is the
one module that imports it.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpnas.errors import ConfigError, DataError, GpnasError
from gpnas.predict.curves import Curve, prefix_length
from gpnas.predict.predictor import CurvePredictor, PredictorConfig

try:
    import optuna
    from optuna.pruners import BasePruner
    from optuna.study import StudyDirection
    from optuna.trial import TrialState
except ImportError:  # pragma: no cover - exercised only where the extra is missing
    raise GpnasError("Optuna is not installed; install gpnas's optuna extra: pip install 'gpnas[optuna]'") from None


# ------------------------------------------------------------ studies as curves
def open_study(storage: str, study_name: str) -> optuna.Study:
    """Load a single-objective study, or raise a GpnasError naming what is wrong and the fix."""
    path = _sqlite_path(storage)
    if path is not None:
        _check_sqlite_file(storage, path)
    try:
        names = optuna.get_all_study_names(storage=storage)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises many types: a bad URL, a missing driver, no server
        why = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise GpnasError(f"cannot open storage {storage!r} ({why}); give a URL Optuna can open, "
                         "such as sqlite:///study.db") from None
    if study_name not in names:
        known = ", ".join(sorted(names)[:10]) or "none"
        raise GpnasError(f"no study named {study_name!r} in {storage}; studies there: {known}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    if len(study.directions) != 1:
        raise GpnasError(f"study {study_name!r} has {len(study.directions)} objectives; curve files hold one "
                         "value per evaluation: use a single-objective study")
    return study


def _check_sqlite_file(storage: str, path: Path) -> None:
    """Refuse a missing file or another program's database before Optuna would create its tables in it."""
    if not path.is_file():
        raise GpnasError(f"cannot open storage {storage!r}: {path} does not exist; give the SQLite file "
                         "the study was created in (sqlite:///PATH)")
    try:
        with contextlib.closing(sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)) as db:
            tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as error:
        raise GpnasError(f"cannot open storage {storage!r} ({error}); give the SQLite file an Optuna "
                         "study was created in") from None
    if not {"studies", "trials"} <= tables:
        raise GpnasError(f"cannot open storage {storage!r}: {path} holds no Optuna studies (no 'studies' "
                         "table); give the SQLite file an Optuna study was created in")


def _sqlite_path(storage: str) -> Path | None:
    prefix = "sqlite:///"
    if not isinstance(storage, str) or not storage.startswith(prefix):
        return None
    rest = storage[len(prefix):].split("?")[0]
    return None if rest in ("", ":memory:") else Path(rest)


def numeric_params(params: dict) -> dict:
    """The trial's int and float params (bools and categorical strings are left out)."""
    return {k: v for k, v in params.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def intermediate(trial) -> tuple[list[int], list[float]]:
    """(steps, values) of a trial's reports, in step order."""
    steps = sorted(trial.intermediate_values)
    return steps, [float(trial.intermediate_values[s]) for s in steps]


@dataclass
class StudyCounts:
    """What the study's trials became."""

    written: int = 0
    pruned: int = 0
    failed: int = 0           # FAIL
    unfinished: int = 0       # RUNNING or WAITING
    no_reports: int = 0       # complete, but nothing reported (no curve)
    not_finite: int = 0       # complete, with a NaN/inf report

    def left_out(self) -> str:
        parts = [f"{self.pruned} pruned", f"{self.failed} failed"]
        for n, what in ((self.unfinished, "unfinished"), (self.no_reports, "finished without reports"),
                        (self.not_finite, "finished with a NaN/inf report")):
            if n:
                parts.append(f"{n} {what}")
        return ", ".join(parts)


def study_curves(study) -> tuple[list[dict], StudyCounts]:
    """Every finished trial with reports as a curve-file line (dict), in trial order."""
    higher = study.direction == StudyDirection.MAXIMIZE
    metric = (study.metric_names or ["value"])[0] if hasattr(study, "metric_names") else "value"
    lines, counts = [], StudyCounts()
    for trial in study.get_trials(deepcopy=False):
        if trial.state == TrialState.PRUNED:
            counts.pruned += 1
            continue
        if trial.state == TrialState.FAIL:
            counts.failed += 1
            continue
        if trial.state != TrialState.COMPLETE:
            counts.unfinished += 1
            continue
        steps, values = intermediate(trial)
        if not values:
            counts.no_reports += 1
            continue
        if not all(math.isfinite(v) for v in values):
            counts.not_finite += 1
            continue
        lines.append({"task": study.study_name, "config_id": str(trial.number), "metric": str(metric),
                      "higher_is_better": higher, "values": values, "x": steps,
                      "config": numeric_params(trial.params), "source": "optuna"})
    counts.written = len(lines)
    return lines, counts


def export_study(storage: str, study_name: str, out) -> StudyCounts:
    """Write the study's finished trials as a curve file; GpnasError when none has a curve."""
    study = open_study(storage, study_name)
    lines, counts = study_curves(study)
    if not lines:
        raise DataError(f"study {study_name!r} has no finished trial with reported values "
                        f"({counts.left_out()}); let trials complete and call trial.report(value, step)")
    Path(out).write_text("".join(json.dumps(d) + "\n" for d in lines), encoding="utf-8")
    return counts


# ------------------------------------------------------------ the pruner
@dataclass
class Decision:
    """The last decision of a PredictorPruner, for logs and tests."""

    trial: int
    step: int
    pruned: bool
    reason: str
    predicted: float = math.nan
    threshold: float = math.nan
    margin: float = math.nan


class PredictorPruner(BasePruner):
    """Prune a trial when a gpnas predictor says its final value will be worse than
    a quantile of the completed trials' finals, by more than the predictor's error.

    predictor: None (refit on the study, see the module doc), "last" (the last
        value so far), a CurvePredictor, or the path of a predictor.json (or its folder).
    quantile: of the completed trials' finals, the bar a trial must be predicted to reach.
    error_quantile: of the predictor's absolute errors on completed trials it was not
        fitted on, at the same prefix length: the margin added to the bar.
    n_startup_trials, n_warmup_steps: as Optuna's MedianPruner.
    n_evaluations: reports a complete trial makes (default: the median over completed trials).
    prefix_frac: the prefix a refitted predictor and the last value need, k = max(4, ceil(frac * n));
        a loaded predictor uses its own.
    refit_every, min_fit_trials, predictor_config: when and how the predictor is refitted.
    """

    def __init__(self, predictor=None, *, quantile: float = 0.5, error_quantile: float = 0.8,
                 n_startup_trials: int = 5, n_warmup_steps: int = 0, n_evaluations: int | None = None,
                 prefix_frac: float = 0.1, refit_every: int = 5, min_fit_trials: int = 12,
                 predictor_config: PredictorConfig | None = None):
        if not 0.0 <= quantile <= 1.0 or not 0.0 <= error_quantile <= 1.0:
            raise ConfigError(f"quantile {quantile} and error_quantile {error_quantile} must be in [0, 1]")
        if n_startup_trials < 0 or n_warmup_steps < 0 or refit_every < 1 or min_fit_trials < 3:
            raise ConfigError("n_startup_trials and n_warmup_steps must be >= 0, refit_every >= 1 "
                              "and min_fit_trials >= 3")
        if n_evaluations is not None and n_evaluations < 2:
            raise ConfigError(f"n_evaluations {n_evaluations} must be at least 2")
        prefix_length(10, prefix_frac)  # ValueError for a fraction outside (0, 1]
        self.quantile, self.error_quantile = quantile, error_quantile
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps
        self.n_evaluations, self.prefix_frac = n_evaluations, prefix_frac
        self.refit_every, self.min_fit_trials = refit_every, min_fit_trials
        self.predictor_config = predictor_config or PredictorConfig(prefix_frac=prefix_frac)
        self.refit = predictor is None
        if isinstance(predictor, (str, Path)) and str(predictor) != "last":
            predictor = CurvePredictor.load(predictor)
        if predictor is not None and not isinstance(predictor, (CurvePredictor, str)):
            raise ConfigError(f"predictor must be None, 'last', a CurvePredictor or a predictor.json path, "
                              f"not {type(predictor).__name__}")
        self.model = None if isinstance(predictor, str) else predictor
        self.fitted_on: set[int] = set()   # trial numbers the current model was fitted on
        self.fits = 0                      # refits done
        self._fit_at = 0                   # completed trials at the last refit attempt
        self.last_decision: Decision | None = None

    # -- Optuna's interface --
    def prune(self, study, trial) -> bool:
        decision = self.decide(study, trial)
        self.last_decision = decision
        return decision.pruned

    def decide(self, study, trial) -> Decision:
        """The pruning decision for ``trial``'s latest report, with its reason and figures."""
        if len(study.directions) != 1:
            raise ConfigError("PredictorPruner needs a single-objective study")
        step = trial.last_step
        if step is None:
            return Decision(trial.number, -1, False, "no report yet")
        if step < self.n_warmup_steps:
            return Decision(trial.number, step, False, "warm-up")
        _, values = intermediate(trial)
        if not math.isfinite(values[-1]):
            return Decision(trial.number, step, True, "non-finite value")
        maximize = study.direction == StudyDirection.MAXIMIZE
        completed = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                     if t.intermediate_values]
        if len(completed) < max(1, self.n_startup_trials):
            return Decision(trial.number, step, False, "startup")
        curves = {t.number: _curve(t, maximize, study.study_name) for t in completed}
        curves = {k: c for k, c in curves.items() if np.all(np.isfinite(c.values))}
        if len(curves) < max(1, self.n_startup_trials):  # completed, but with NaN/inf reports
            return Decision(trial.number, step, False, "startup")
        n = self.n_evaluations or int(np.median([len(c.values) for c in curves.values()]))
        m = len(values)
        if self.refit:
            self._maybe_refit(curves)
        frac = self.model.config.prefix_frac if self.model is not None else self.prefix_frac
        if m < prefix_length(n, frac):
            return Decision(trial.number, step, False, "before the predictor's prefix")
        if m >= n:
            return Decision(trial.number, step, False, "at its last evaluation")
        finals = np.array([c.values[-1] for c in curves.values()])
        threshold = float(np.quantile(finals, self.quantile))
        model = self.model if m == prefix_length(n, frac) else None  # at its own prefix only
        # the completed trials the predictor did not learn from, seen through their first m values
        fitted_on = self.fitted_on if model is not None else set()
        judges = [c for k, c in curves.items() if k not in fitted_on and len(c.values) > m]
        seen = [Curve(values=c.values[:m], task=c.task, config_id=c.config_id, horizon=len(c.values),
                      config=c.config) for c in judges]
        own = _curve(trial, maximize, study.study_name, horizon=n)
        predicted = self._predict(seen + [own], model)
        margin = 0.0
        if judges:
            errors = np.abs(predicted[:-1] - np.array([c.values[-1] for c in judges]))
            margin = float(np.quantile(np.nan_to_num(errors, nan=np.inf), self.error_quantile))
        p = float(predicted[-1])
        pruned = bool(p > threshold + margin)
        by = "predictor" if model is not None else "last value"
        return Decision(trial.number, step, pruned, f"{by}: " + ("worse than the bar" if pruned else "kept"),
                        p, threshold, margin)

    # -- the predictor --
    @staticmethod
    def _predict(curves, model) -> np.ndarray:
        """Final values of curves seen through all the values they hold (lower is better);
        the last value where ``model`` is None."""
        if model is None:
            return np.array([c.values[-1] for c in curves])
        return np.asarray(model.predict(curves, prefix_frac=1.0), dtype=np.float64)

    def _maybe_refit(self, curves: dict) -> None:
        done = len(curves)
        if done < self.min_fit_trials or (self.fits and done < self._fit_at + self.refit_every):
            return
        self._fit_at = done
        ordered = [curves[k] for k in sorted(curves)]
        train = [c for i, c in enumerate(ordered) if i % 3 != 2]
        held = [c for i, c in enumerate(ordered) if i % 3 == 2]
        try:
            model = CurvePredictor(self.predictor_config).fit(train, holdout=held)
        except GpnasError:  # too few or unsuitable curves: keep what we had (the last value at first)
            return
        self.model, self.fits = model, self.fits + 1
        self.fitted_on = {int(c.config_id) for c in train}


def _curve(trial, maximize: bool, task: str, horizon: int | None = None) -> Curve:
    steps, values = intermediate(trial)
    v = np.array(values, dtype=np.float64)
    return Curve(values=1.0 - v if maximize else v, task=task, config_id=str(trial.number),
                 x=np.array(steps, dtype=np.float64), horizon=horizon, config=numeric_params(trial.params))


__all__ = ["Decision", "PredictorPruner", "StudyCounts", "export_study", "open_study", "study_curves"]
