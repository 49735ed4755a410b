"""The predictor side: learning curves, their features, GP trees, closed forms
and the ``CurvePredictor`` estimator.

It reads learning curves from any framework and predicts where they end. It
may import numpy, sympy, DEAP's ``gp`` and ``tools`` (trees and their
operators), ``gpnas.config`` and ``gpnas.errors``; never torch, the trainer,
or anything above it.
"""

__all__ = ["CurvePredictor", "PredictorConfig"]


def __getattr__(name):
    # lazily, so a training worker that only needs ``curves`` never imports sympy
    if name in __all__:
        from gpnas.predict import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
