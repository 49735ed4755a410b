"""A surrogate of how configs start: the third way to rank a father's candidate sons.

The mother's formula and the chosen predictor are fitted on the run's completed
curves (a few dozen); the run has seen many more configs start (every male's
early run). The surrogate uses all of them: a ridge regression of the early
value's rank (so a blown-up run is just the worst, not a 1e18 that decides the
fit) on the config features (log10 where the task says so), each standardised,
with their squares (a learning rate has an optimum, not a direction). It is
refitted from the run's own records whenever it is asked for, so a resumed run
ranks as an uninterrupted one does. numpy only; a dozen features and a few
hundred rows cost microseconds.
"""

from __future__ import annotations

import math

import numpy as np

MIN_ROWS_PER_TERM = 1.5   # fit only with at least this many configs per coefficient
ALPHA = 1.0               # ridge penalty on the standardised terms


def numeric_keys(configs, config_keys: dict) -> tuple[tuple, dict]:
    """(the config keys every one of ``configs`` holds as a number, sorted; key -> whether it is
    read in log10), ``config_keys`` mapping a feature name to its key as ``females.Features``
    does (``log10_<key>``: log10)."""
    names = tuple(k for k in sorted(set(config_keys.values()))
                  if configs and all(isinstance(c.get(k), (int, float)) for c in configs))
    return names, {k: f"log10_{k}" in config_keys for k in names}


def config_values(configs, names, log) -> np.ndarray:
    """(n, len(names)) the configs' values of ``names``, log10 where ``log`` says (and positive)."""
    with np.errstate(all="ignore"):
        return np.array([[math.log10(c[n]) if log[n] and c[n] > 0 else float(c[n]) for n in names]
                         for c in configs], dtype=float)


class Surrogate:
    def __init__(self, names: tuple, log: dict, mean, scale, coef):
        self.names, self.log, self.mean, self.scale, self.coef = names, log, mean, scale, coef

    def _design(self, X: np.ndarray) -> np.ndarray:
        Z = (X - self.mean) / self.scale
        return np.column_stack([np.ones(len(Z)), Z, Z ** 2])

    @classmethod
    def fit(cls, rows: list, config_keys: dict) -> "Surrogate | None":
        """From (curve config, early value) rows; ``config_keys`` maps a feature name to its key
        as ``females.Features`` does (``log10_<key>``: log10). None with too few rows."""
        names, log = numeric_keys([c for c, _ in rows], config_keys)
        if not names or len(rows) < MIN_ROWS_PER_TERM * (1 + 2 * len(names)):
            return None
        X = config_values([c for c, _ in rows], names, log)
        y = np.array([v for _, v in rows], dtype=float)
        y = np.argsort(np.argsort(np.nan_to_num(y, nan=np.inf), kind="mergesort"), kind="mergesort") / len(y)
        keep = np.all(np.isfinite(X), axis=1)
        X, y = X[keep], y[keep]
        if len(y) < MIN_ROWS_PER_TERM * (1 + 2 * len(names)):
            return None
        mean, scale = X.mean(axis=0), X.std(axis=0)
        scale[scale == 0] = 1.0
        model = cls(names, log, mean, scale, None)
        D = model._design(X)
        penalty = ALPHA * np.eye(D.shape[1])
        penalty[0, 0] = 0.0
        model.coef = np.linalg.solve(D.T @ D + penalty, D.T @ (y - y.mean()))
        model.coef[0] += y.mean()
        return model

    def predict(self, configs) -> np.ndarray:
        """Predicted rank of the early value (lower: a better start) of each config."""
        X = config_values(configs, self.names, self.log)
        with np.errstate(all="ignore"):
            out = self._design(X) @ self.coef
        return np.where(np.isfinite(out), out, np.inf)
