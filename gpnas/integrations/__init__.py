"""gpnas's predictors where people already tune: Optuna studies as curve files,
and a pruner that stops trials by predicting where their curves end
(``gpnas.integrations.optuna``).

It may import ``gpnas.predict``, ``gpnas.config`` and ``gpnas.errors``, never
the trainer, the search or the CLI; it is the only part that imports Optuna,
an optional extra (``pip install 'gpnas[optuna]'``).
"""
