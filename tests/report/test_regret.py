import math

import numpy as np
import pytest
from scipy import stats

from gpnas.report import regret as rg

TRACE = [(10.0, 0.8), (30.0, 0.5), (60.0, 0.6), (90.0, 0.2)]


def test_incumbent_is_the_lowest_value_trained_by_then():
    assert math.isnan(rg.incumbent_at(TRACE, 9.9))
    assert rg.incumbent_at(TRACE, 10) == 0.8
    assert rg.incumbent_at(TRACE, 75) == 0.5
    assert rg.incumbent_at(TRACE, 1e9) == 0.2


def test_regret_at_fractions_by_hand():
    rows = rg.regret_rows("t", "m", 0, TRACE, budget=100, best=0.0, median=1.0, fractions=(0.05, 0.1, 0.3, 0.9))
    # before the first training the median is returned: regret 1
    assert [r["normalized_regret"] for r in rows] == pytest.approx([1.0, 0.8, 0.5, 0.2])
    assert math.isnan(rows[0]["incumbent"])
    rows = rg.regret_rows("t", "m", 0, TRACE, budget=100, best=0.1, median=0.6)
    assert len(rows) == 20 and rows[-1]["cost_fraction"] == 1.0
    assert rows[-1]["normalized_regret"] == pytest.approx(0.2)   # (0.2 - 0.1) / 0.5
    assert rows[5]["normalized_regret"] == pytest.approx(0.8)    # at 0.30: (0.5 - 0.1) / 0.5


def test_best_equal_to_median_gives_no_division():
    assert rg.normalized_regret(0.3, 0.3, 0.3) == 0.0
    assert rg.normalized_regret(0.4, 0.3, 0.3) == 1.0


def test_holm_on_known_p_values():
    assert rg.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert rg.holm([0.02, None, 0.3]) == [pytest.approx(0.04), None, pytest.approx(0.3)]   # None: not compared
    assert rg.holm([0.6, 0.9]) == [1.0, 1.0]   # capped at 1


def rows_from(values, task="t"):
    """values: {method: [regret at 1.0 per seed]} -> rows at fractions 0.5 and 1.0 (0.5 regret = 2x)."""
    rows = []
    for method, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            if v is None:
                continue
            rows += [{"task": task, "method": method, "seed": seed, "cost_fraction": f, "incumbent": 0.0,
                      "normalized_regret": v * k} for f, k in ((0.5, 2.0), (1.0, 1.0))]
    return rows


def test_summary_statistics_match_scipy():
    combined = [0.1, 0.2, 0.15, 0.3, 0.05, 0.2]
    random = [0.3, 0.25, 0.2, 0.5, 0.1, 0.2]
    hb = [0.2, 0.1, 0.3, 0.3, None, 0.4]           # one seed fewer: pairs on the other five
    table = {r["method"]: r for r in rg.summary_table(rows_from({"combined": combined, "random": random,
                                                                  "hyperband": hb}))}
    d = np.subtract(random, combined)
    assert table["random"]["p_wilcoxon"] == pytest.approx(stats.wilcoxon(d).pvalue)
    assert table["random"]["diff_vs_reference"] == pytest.approx(d.mean())
    assert table["hyperband"]["n_pairs"] == 5 and table["hyperband"]["n_seeds"] == 5
    p = sorted([table["random"]["p_wilcoxon"], table["hyperband"]["p_wilcoxon"]])
    assert sorted([table["random"]["p_holm"], table["hyperband"]["p_holm"]]) == pytest.approx(
        [2 * p[0], max(2 * p[0], p[1])])
    assert table["combined"]["p_wilcoxon"] is None and table["combined"]["p_holm"] is None
    assert table["random"]["mean_regret_end"] == pytest.approx(np.mean(random))
    assert table["random"]["mean_regret_half"] == pytest.approx(2 * np.mean(random))
    lo, hi = stats.t.interval(0.95, 5, loc=np.mean(random), scale=stats.sem(random))
    assert (table["random"]["mean_regret_end_lo"], table["random"]["mean_regret_end_hi"]) == pytest.approx((lo, hi))


def test_mean_rank_averages_ties():
    table = {r["method"]: r for r in rg.summary_table(rows_from({"combined": [0.1, 0.2], "a": [0.1, 0.3],
                                                                  "b": [0.5, 0.2]}))}
    # seed 0: ranks 1.5, 1.5, 3; seed 1: 1.5, 3, 1.5
    assert table["combined"]["mean_rank"] == pytest.approx(1.5)
    assert table["a"]["mean_rank"] == pytest.approx(2.25)
    assert table["b"]["mean_rank"] == pytest.approx(2.25)


def test_all_zero_differences_and_a_single_method():
    table = {r["method"]: r for r in rg.summary_table(rows_from({"combined": [0.1, 0.2, 0.3],
                                                                  "a": [0.1, 0.2, 0.3]}))}
    assert table["a"]["p_wilcoxon"] == 1.0 and table["a"]["diff_vs_reference"] == 0.0
    (only,) = rg.summary_table(rows_from({"random": [0.1, 0.2]}))
    assert only["p_wilcoxon"] is None and only["mean_rank"] == 1.0


def test_pooled_rows_average_over_tasks_per_seed_first():
    rows = rows_from({"combined": [0.1, 0.3], "a": [0.2, 0.2]}, "t1") + \
        rows_from({"combined": [0.3, 0.1], "a": [0.0, 0.6]}, "t2")
    table = {(r["task"], r["method"]): r for r in rg.summary_table(rows)}
    pooled = table[("all", "a")]
    assert pooled["mean_regret_end"] == pytest.approx(np.mean([0.1, 0.4]))   # seeds: (0.2+0)/2, (0.2+0.6)/2
    assert pooled["diff_vs_reference"] == pytest.approx(np.mean([0.1 - 0.2, 0.4 - 0.2]))
    # ranks: t1 seeds (2, 1), t2 seeds (1, 2): per seed mean 1.5
    assert pooled["mean_rank"] == pytest.approx(1.5)
    ranks = rg.ranks_per_fraction(rows, "all")
    assert {r["rank"] for r in ranks if r["cost_fraction"] == 1.0} == {1.5}


def test_nan_rows_and_a_method_on_one_task_only():
    rows = rows_from({"combined": [0.1, 0.3], "a": [0.2, 0.2], "b": [0.4, 0.4]}, "t1") + \
        rows_from({"combined": [0.3, 0.1], "a": [0.0, 0.6]}, "t2")
    rows[0]["normalized_regret"] = math.nan   # combined, seed 0, fraction 0.5
    rows[1]["normalized_regret"] = math.nan   # combined, seed 0, fraction 1.0
    table = {(r["task"], r["method"]): r for r in rg.summary_table(rows)}
    assert ("all", "b") not in table                       # b ran on one task: not pooled
    assert table[("t1", "a")]["n_pairs"] == 1               # seed 0 of combined has no value
    assert table[("t1", "combined")]["mean_regret_end"] == pytest.approx(0.3)


def test_cost_to_target_counts_misses():
    traces = {"a": {0: [(10, 0.5), (20, 0.3)], 1: [(5, 0.2)]},
              "b": {0: [(10, 0.9)], 1: [(40, 0.3)], 2: []}}
    # bests: 0.3, 0.2, 0.9, 0.3 -> target 0.3
    out = rg.cost_to_target(traces)
    assert out["a"] == {"target": 0.3, "n_seeds": 2, "misses": 0, "median_cost": 12.5}
    assert out["b"]["misses"] == 2 and out["b"]["median_cost"] == math.inf
    assert rg.cost_to_target(traces, target=0.25)["a"]["misses"] == 1


def test_files_and_plots(tmp_path):
    rows = []
    for method, scale in (("combined", 1.0), ("random", 2.0), ("hyperband", 1.5)):
        for seed in range(4):
            trace = [(10.0 * (k + 1) * scale, 1.0 / (k + 1 + seed)) for k in range(9)]
            rows += rg.regret_rows("t", method, seed, trace, budget=100, best=0.0, median=1.0)
    table = rg.summary_table(rows)
    rg.write_csv(tmp_path / "rows.csv", rows)
    rg.write_markdown(tmp_path / "table.md", table, "Regret", ["50 seeds", "budget 100"])
    assert (tmp_path / "rows.csv").read_text().startswith("task,method,seed,cost_fraction")
    text = (tmp_path / "table.md").read_text()
    assert text.startswith("# Regret") and "| t | random | 4 |" in text and "- budget 100" in text
    rg.plot_regret(tmp_path / "regret.png", rows, "t")
    rg.plot_rank(tmp_path / "rank.png", rows, "t")
    for name in ("regret.png", "rank.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
