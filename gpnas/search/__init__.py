"""The search: the search space (genes and their geometry, ``space``), the
ledger every search evaluates through (``ledger``), the generation loop they
share (``loop``), males (architecture genomes), females (predictor trees), the
cross-gender mating operator, the calibration of predictions and the
promotion rule, the co-evolution engine and its modes, its state, and the
standard methods (random search, Hyperband's successive halving, regularized
evolution).

It may import ``gpnas.runs`` (evaluation tasks, the archive), ``gpnas.predict``,
``gpnas.config`` and ``gpnas.errors``; never torch or the trainer (the tasks
bring costs and curves from below), the report or the CLI. DEAP's creator
classes are made in ``individuals`` alone.
"""
