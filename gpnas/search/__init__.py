"""The search: males (architecture genomes), females (predictor trees), the
cross-gender mating operator, the calibration of predictions and the
promotion rule, the co-evolution engine, its state, and the standard methods
(random search, Hyperband's successive halving, regularized evolution).

It may import ``gpnas.runs`` (evaluations go through an ``Evaluator`` and the
archive), ``gpnas.predict``, ``gpnas.config`` and ``gpnas.errors``; never the
trainer directly, the report or the CLI. DEAP's creator classes are made in
``individuals`` alone.
"""
