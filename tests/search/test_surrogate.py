"""The surrogate of a run's early values: it finds a planted optimum in the learning rate,
ignores blow-ups beyond their rank, needs enough rows, and a search ranking sons by it
picks its lowest prediction among the candidates."""

import math
import random

import numpy as np

from gpnas.search.surrogate import Surrogate

KEYS = {"log10_learning_rate": "learning_rate", "width": "width"}


def rows(n=80, seed=0, blowups=0):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lr, width = 10 ** rng.uniform(-4, -1), rng.uniform(16, 64)
        value = (math.log10(lr) + 2.5) ** 2 + 0.002 * (64 - width) + rng.gauss(0, 0.01)
        out.append(({"learning_rate": lr, "width": width}, 1e18 if i < blowups else value))
    return out


def test_a_planted_optimum_in_the_learning_rate_is_found():
    model = Surrogate.fit(rows(), KEYS)
    lrs = 10 ** np.linspace(-4, -1, 31)
    pred = model.predict([{"learning_rate": lr, "width": 40.0} for lr in lrs])
    assert abs(math.log10(lrs[int(np.argmin(pred))]) + 2.5) <= 0.2
    wide, narrow = model.predict([{"learning_rate": 3e-3, "width": 64.0}, {"learning_rate": 3e-3, "width": 16.0}])
    assert wide < narrow


def test_blowups_count_as_the_worst_rank_only_and_too_few_rows_fit_nothing():
    clean, noisy = Surrogate.fit(rows(), KEYS), Surrogate.fit(rows(blowups=5), KEYS)
    probe = [{"learning_rate": 10 ** x, "width": 40.0} for x in np.linspace(-4, -1, 13)]
    assert np.argmin(clean.predict(probe)) == np.argmin(noisy.predict(probe))
    assert Surrogate.fit(rows(n=6), KEYS) is None
    assert Surrogate.fit([], KEYS) is None


def test_a_search_ranking_sons_by_the_surrogate_runs_and_logs_every_ranker(tmp_path):
    from gpnas.config import load_preset, preset_to_dict
    from gpnas.jobs import table_ablation as ta
    from gpnas.runs.table import read_table
    from tests.jobs.test_table_ablation import write_table

    table = write_table(tmp_path / "t.jsonl", n_configs=60)
    preset = preset_to_dict(load_preset("micro", ["ga.seed_archive=4", "ga.son_ranker=surrogate"]))
    record = ta.run_search((str(table), "t", "combined", 0, preset, 12 * ta.full_cost(read_table(table))))
    assert set(record["guidance"]) == {"mother", "judged", "predictor", "surrogate"} and record["trace"]
    judged = record["guidance"]["surrogate"]
    assert judged["choices"] + judged["flat"] > 0
