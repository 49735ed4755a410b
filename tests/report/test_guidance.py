"""The coupling judged against a table: where a ranker's pick stands among the candidates,
a ranker that knows the truth scores 0 and one that inverts it 1, and a table ablation
records it for the modes that mate."""

import numpy as np
import pytest

from gpnas.config import load_preset, preset_to_dict
from gpnas.jobs import table_ablation as ta
from gpnas.report import guidance as gd
from gpnas.runs.table import read_table
from tests.jobs.test_table_ablation import write_table


def test_pick_percentile_places_the_lowest_r_among_the_truth():
    truth = [3.0, 1.0, 2.0, 4.0]
    assert gd.pick_percentile([3, 1, 2, 4], truth) == 0.0           # picks the truly best
    assert gd.pick_percentile([-3, -1, -2, -4], truth) == 1.0       # picks the truly worst
    assert gd.pick_percentile([0, 1, 0, 1], truth) == pytest.approx((2 / 3 + 1 / 3) / 2)  # tied picks averaged
    assert gd.pick_percentile([0, 1, 1, 1], [2.0, 2.0, 1.0, 5.0]) == pytest.approx((1 + 0.5) / 3)  # equal truths
    assert gd.pick_percentile([0, 1], [float("nan"), 1.0]) == 1.0   # a NaN truth is the worst


def test_choice_stats_of_an_oracle_an_inverted_ranker_and_a_flat_one():
    rng = np.random.default_rng(0)
    finals = {i: float(v) for i, v in enumerate(rng.normal(size=40))}
    rankings = []
    for start in range(0, 40, 8):
        ids = list(range(start, start + 8))
        true = np.array([finals[i] for i in ids])
        rankings.append({"candidates": ids, "mother": true, "predictor": -true})
    rankings.append({"candidates": [0, 1, 2], "mother": np.zeros(3), "predictor": None})
    stats = gd.choice_stats(rankings, lambda i: (finals[i], finals[i]))
    assert stats["mother"] == {"choices": 5, "flat": 1, "pick_early": 0.0, "pick_final": 0.0,
                               "spearman_final": pytest.approx(1.0)}
    assert stats["predictor"]["pick_final"] == 1.0 and stats["predictor"]["spearman_final"] == pytest.approx(-1)
    assert stats["predictor"]["flat"] == 0


def test_below_half_is_tested_one_sided_over_seeds():
    assert gd.below_half_p([0.2, 0.3, 0.25, 0.1, 0.35, 0.3]) < 0.05
    assert gd.below_half_p([0.8, 0.7, 0.75, 0.9, 0.65, 0.7]) > 0.5
    assert gd.below_half_p([0.2, 0.3]) is None


def test_a_table_ablation_records_the_coupling_of_the_modes_that_mate(tmp_path):
    table = write_table(tmp_path / "t.jsonl")
    preset = preset_to_dict(load_preset("micro", ["ga.seed_archive=4"]))
    budget = 12 * ta.full_cost(read_table(table))
    combined = ta.run_search((str(table), "t", "combined", 0, preset, budget))
    assert set(combined["guidance"]) == {"mother", "judged", "predictor", "surrogate"}
    mother = combined["guidance"]["mother"]
    assert mother["choices"] + mother["flat"] > 0
    assert mother["pick_final"] is None or 0 <= mother["pick_final"] <= 1
    assert "guided_fraction" in combined["sons"]
    assert "guidance" not in ta.run_search((str(table), "t", "male", 0, preset, budget))
    # logging the rankings does not change the search: the same search without the log
    from gpnas.config import preset_from_dict
    from gpnas.jobs.run import make_search
    from gpnas.runs.archive import Archive
    from gpnas.runs.tasks import replay_task
    task, space = replay_task(preset_from_dict(preset), read_table(table, "t"))
    with Archive(tmp_path / "a.sqlite") as archive:
        search = make_search(preset_from_dict(preset), "combined", task, archive, 0, max_cost=budget, space=space)
        assert search.rankings is None
        state = search.run(ta.MAX_GENERATIONS)
    assert [[float(p["flops"]), float(p["true"])] for p in state.promotions] == combined["trace"]
    rows = gd.guidance_rows([combined, {**combined, "seed": 1}])
    mother_row = next(r for r in rows if r["ranker"] == "mother")
    assert mother_row["seeds"] == 2 and {r["ranker"] for r in rows} <= set(gd.RANKERS)
    assert "pick percentile" in gd.guidance_markdown(rows)

