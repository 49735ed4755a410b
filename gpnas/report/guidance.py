"""Does the coupling carry information? The mother's choice among a father's
candidate neighbours judged against the truth a table records.

In a search against a table every candidate son has a recorded curve, so each
choice can be judged without training anything: the son the mother would pick
(her lowest output r; tied lowest count on average) is placed among the
candidates by their true value,

    pick percentile = (#candidates truly better + 0.5 * #truly equal) / (n - 1)

0 when she picks the truly best, 1 the truly worst, 0.5 what a uniform draw
gives on average. The same is computed for the run's chosen predictor ranking
the same candidates (the alternative operator), from the same log, and for
both the early value (what the son's early run will show) and the final value
(what the search is after). Per search (seed) the mean over its choices; over
seeds a one-sided Wilcoxon signed-rank test of percentile < 0.5 (scipy), and
the mean Spearman correlation of r with the true final values.

Choices where the ranker's outputs are all equal (a formula that does not read
the config) carry no ranking and are left out, counted in ``flat``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

from gpnas.report.ablation import mean_ci

RANKERS = ("mother", "judged", "predictor", "surrogate")
SAME = 1e-12


def pick_percentile(r, truth) -> float:
    """Where the lowest-r candidates stand among all by ``truth`` (0 best, 1 worst), averaged
    over the tied lowest; NaN truths count as worst."""
    r, truth = np.asarray(r, float), np.nan_to_num(np.asarray(truth, float), nan=np.inf)
    n = len(r)
    picks = np.flatnonzero(r <= r.min() + SAME)
    return float(np.mean([(np.sum(truth < truth[i]) + 0.5 * (np.sum(truth == truth[i]) - 1)) / (n - 1)
                          for i in picks]))


def choice_stats(rankings: list, truth) -> dict:
    """Per ranker: mean pick percentile (early, final), mean Spearman of r with the
    final values, choices judged and flat. ``rankings``: ``mating.MatingContext.rankings``'s
    entries; ``truth(genome) -> (early value, final value)``."""
    out = {}
    for ranker in RANKERS:
        early, final, rho, flat = [], [], [], 0
        for entry in rankings:
            r = entry.get(ranker)
            if r is None or len(entry["candidates"]) < 2 or not np.all(np.isfinite(r)):
                continue
            if float(np.ptp(r)) <= SAME:
                flat += 1
                continue
            values = np.array([truth(c) for c in entry["candidates"]], dtype=float)
            early.append(pick_percentile(r, values[:, 0]))
            final.append(pick_percentile(r, values[:, 1]))
            if np.ptp(np.nan_to_num(values[:, 1], nan=np.inf)) > 0:
                rho.append(float(stats.spearmanr(r, np.nan_to_num(values[:, 1], nan=np.inf)).statistic))
        out[ranker] = {"choices": len(early), "flat": flat,
                       "pick_early": float(np.mean(early)) if early else None,
                       "pick_final": float(np.mean(final)) if final else None,
                       "spearman_final": float(np.nanmean(rho)) if rho else None}
    return out


def below_half_p(values) -> float | None:
    """One-sided Wilcoxon signed-rank p of values < 0.5 (None with fewer than 5 seeds
    or all at 0.5)."""
    d = np.asarray([v for v in values if v is not None], float) - 0.5
    if len(d) < 5 or not np.any(d):
        return None
    return float(stats.wilcoxon(d, alternative="less").pvalue)


def guidance_rows(records: list) -> list[dict]:
    """One row per (task, method, ranker) over the records that carry ``guidance``
    (each search's ``choice_stats``), with a pooled task "all" when there are several."""
    groups: dict = {}
    for r in records:
        for ranker, s in (r.get("guidance") or {}).items():
            for task in (r["task"], "all"):
                groups.setdefault((task, r["method"], ranker), []).append((r["task"], s))
    tasks = {r["task"] for r in records if r.get("guidance")}
    rows = []
    for (task, method, ranker), entries in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        if task == "all" and len(tasks) < 2:
            continue
        row = {"task": task, "method": method, "ranker": ranker, "seeds": len(entries),
               "choices": sum(s["choices"] for _, s in entries), "flat": sum(s["flat"] for _, s in entries)}
        for key in ("pick_early", "pick_final", "spearman_final"):
            values = [s[key] for _, s in entries if isinstance(s.get(key), (int, float))]
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = mean_ci(values)
            if key.startswith("pick"):
                row[f"{key}_p"] = below_half_p(values)
        rows.append(row)
    return rows


def _cell(row, key) -> str:
    if row.get(key) is None or (isinstance(row[key], float) and math.isnan(row[key])):
        return "-"
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    text = f"{row[key]:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and not math.isnan(lo) else "")
    p = row.get(f"{key}_p")
    return text + (f" (p {p:.2g})" if p is not None else "")


def guidance_markdown(rows: list) -> str:
    head = ["task", "method", "ranker", "seeds", "choices judged", "flat", "pick percentile, early value",
            "pick percentile, final value", "Spearman r vs final"]
    lines = ["# The coupling: the mother's choice of a son against the table's truth", "",
             "Pick percentile: where the candidate a ranker picks stands among the father's candidate "
             "neighbours by their recorded value (0 the best, 1 the worst, 0.5 chance); mean over seeds with "
             "95 % interval and the one-sided Wilcoxon p of below 0.5. `mother` is the operator of the run; "
             "`predictor` is the run's chosen predictor and `surrogate` the ridge on the run's early values "
             "(search.surrogate) ranking the same candidates; whichever the run's ga.son_ranker does not name "
             "is logged, not used.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["task"], row["method"], row["ranker"], str(row["seeds"]),
                                         str(row["choices"]), str(row["flat"]), _cell(row, "pick_early"),
                                         _cell(row, "pick_final"), _cell(row, "spearman_final")]) + " |")
    return "\n".join(lines) + "\n"
