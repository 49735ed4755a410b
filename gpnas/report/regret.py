"""Anytime normalized regret of searches replayed on a table, as HPOBench, DyHPO
and DPL report it: regret against cost, mean rank against cost, paired tests
against a reference mode with a Holm correction, and the cost to reach a target.

A *trace* is one run's list of events ``(cost_spent_so_far, true_final_value)``,
one per configuration trained fully, in order; the cost is the cumulative cost
(the table's unit) charged when that full training completed. The incumbent at
cost c is the lowest true final value over events with cost <= c.

Normalized regret of an incumbent y on a table with best value b and median m::

    r(y) = (y - b) / (m - b)

0 is the table's best, 1 its median configuration. Conventions (stated once here):

- Before its first full training a method has nothing to return: the
  incumbent is taken to be the table's median, so r = 1.
- If m == b (no spread between best and median), r = 0 where y <= b, else 1:
  the formula would give inf, which no mean survives; off the best on such a
  table is scored as no better than the median.
- Regrets are read at ``FRACTIONS`` of the budget (0.05, 0.10, ..., 1.00).

Pure functions of the rows; the statistics are scipy's (95 % Student t
intervals over seeds, Wilcoxon signed-rank test, ``rankdata``); scipy offers
no Holm correction (``false_discovery_control`` is Benjamini-Hochberg), so
``holm`` is written out here.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

from gpnas.errors import DataError
from gpnas.report.ablation import MIN_SEEDS_FOR_BAND, mean_ci, t_quantile

FRACTIONS = tuple(round(0.05 * k, 2) for k in range(1, 21))
REFERENCE = "combined"
POOLED = "all"  # the task name of the rows pooled over tasks
_COST_TOLERANCE = 1e-9  # relative: fraction * budget is a float (0.29 * 100 = 28.999999999999996)


def incumbent_at(trace, cost) -> float:
    """Lowest true final value over events with cost <= ``cost``; NaN before the first
    (NaN values in the trace are skipped)."""
    values = [v for c, v in trace if c <= cost and v is not None and not math.isnan(v)]
    return float(min(values)) if values else math.nan


def normalized_regret(incumbent, best, median) -> float:
    """(incumbent - best) / (median - best); NaN incumbent -> 1.0 (the median is
    returned); median == best -> 0.0 at the best, else 1.0 (module docstring)."""
    if not (math.isfinite(best) and math.isfinite(median)) or median < best:
        raise DataError(f"table best {best} and median {median}: the median must be finite and >= the best; "
                        "rebuild the table's summary")
    if incumbent is None or math.isnan(incumbent):
        return 1.0
    if median == best:
        return 0.0 if incumbent <= best else 1.0
    return float((incumbent - best) / (median - best))


def regret_rows(task, method, seed, trace, budget, best, median, fractions=FRACTIONS) -> list[dict]:
    """One row per cost fraction: task, method, seed, cost_fraction, incumbent
    (NaN before the first full training) and normalized_regret (1.0 there)."""
    rows = []
    for f in fractions:
        incumbent = incumbent_at(trace, f * budget * (1 + _COST_TOLERANCE))
        rows.append({"task": task, "method": method, "seed": seed, "cost_fraction": f,
                     "incumbent": incumbent, "normalized_regret": normalized_regret(incumbent, best, median)})
    return rows


# ------------------------------------------------------------- per seed

def _ordered(values) -> list:
    return list(dict.fromkeys(values))


def _per_seed(rows) -> dict:
    """{task: {method: {seed: {fraction: regret}}}}, with the pooled task "all"
    when there are two tasks or more: per method and seed, the mean over tasks;
    only methods run on every task, and only the seeds they ran on every task
    (a mean over fewer tasks would not compare with the others)."""
    data: dict = {}
    for r in rows:
        data.setdefault(r["task"], {}).setdefault(r["method"], {}).setdefault(r["seed"], {})[
            round(r["cost_fraction"], 6)] = r["normalized_regret"]
    if len(data) > 1 and POOLED not in data:
        pooled: dict = {}
        for method in _ordered(m for t in data.values() for m in t):
            if any(method not in t for t in data.values()):
                continue
            tasks = [t[method] for t in data.values()]
            seeds = set.intersection(*(set(t) for t in tasks))
            for seed in sorted(seeds):
                fractions = set.intersection(*(set(t[seed]) for t in tasks))
                pooled.setdefault(method, {})[seed] = {f: float(np.mean([t[seed][f] for t in tasks]))
                                                       for f in sorted(fractions)}
        data[POOLED] = pooled
    return data


def _ranks(methods: dict, fraction: float) -> dict:
    """{method: {seed: rank}} among the methods present for each seed at ``fraction``
    (1 = lowest regret, ties averaged)."""
    out: dict = {}
    for seed in _ordered(s for m in methods.values() for s in m):
        here = [(m, v[seed][fraction]) for m, v in methods.items()
                if seed in v and fraction in v[seed] and not math.isnan(v[seed][fraction])]
        for (m, _), rank in zip(here, stats.rankdata([x for _, x in here])):
            out.setdefault(m, {})[seed] = float(rank)
    return out


def ranks_per_fraction(rows, task) -> list[dict]:
    """Rows of task, method, seed, cost_fraction, rank: each method's rank among the
    methods run on that seed, per fraction. For the pooled task "all", a seed's rank
    is its mean rank over the tasks (each rank among the methods run on that task)."""
    data = _per_seed(rows)
    out = []
    tasks = [t for t in data if t != POOLED] if task == POOLED else [task]
    for t in tasks:
        fractions = sorted({f for m in data.get(t, {}).values() for s in m.values() for f in s})
        for f in fractions:
            for method, seeds in _ranks(data[t], f).items():
                out += [{"task": t, "method": method, "seed": s, "cost_fraction": f, "rank": r}
                        for s, r in seeds.items()]
    if task == POOLED:  # a seed's mean rank over the tasks, for the methods and seeds pooled
        grouped: dict = {}
        for r in out:
            grouped.setdefault((r["method"], r["seed"], r["cost_fraction"]), []).append(r["rank"])
        out = [{"task": POOLED, "method": m, "seed": s, "cost_fraction": f, "rank": float(np.mean(v))}
               for (m, s, f), v in grouped.items() if s in data[POOLED].get(m, {}) and len(v) == len(tasks)]
    return out


# ------------------------------------------------------------- statistics

def holm(p_values) -> list:
    """Holm's step-down adjusted p-values, in the input order (None stays None):
    sorted ascending p_(1) <= ... <= p_(m), adjusted p_(i) = max_{j<=i} min(1, (m - j + 1) p_(j))."""
    present = [(i, p) for i, p in enumerate(p_values) if p is not None and not math.isnan(p)]
    m = len(present)
    out = [None] * len(p_values)
    running = 0.0
    for j, (i, p) in enumerate(sorted(present, key=lambda x: x[1])):
        running = max(running, min(1.0, (m - j) * p))
        out[i] = running
    return out


def wilcoxon_p(differences) -> float | None:
    """Two-sided Wilcoxon signed-rank p of paired differences (scipy's defaults:
    zero differences dropped); 1.0 when every difference is 0, None without pairs."""
    d = np.asarray([x for x in differences if not math.isnan(x)], dtype=float)
    if d.size == 0:
        return None
    if not np.any(d):
        return 1.0
    with warnings.catch_warnings():  # scipy warns that few pairs give a coarse exact p
        warnings.simplefilter("ignore")
        return float(stats.wilcoxon(d, alternative="two-sided").pvalue)


def _at(seeds: dict, fraction: float) -> dict:
    return {s: v[fraction] for s, v in seeds.items() if fraction in v and not math.isnan(v[fraction])}


def summary_table(rows, reference=REFERENCE) -> list[dict]:
    """One row per (task, method), then the pooled rows (task "all") when there are
    two tasks or more. Columns: n_seeds; mean_regret_end and its 95 % t interval
    (_lo, _hi) at fraction 1.0; mean_regret_half at 0.5; mean_rank at 1.0 (rank
    among the methods on each seed, ties averaged, mean over seeds); against
    ``reference`` on the seeds both ran (n_pairs): diff_vs_reference (method -
    reference, mean regret at 1.0) with its interval, p_wilcoxon and p_holm
    (Holm over the methods compared within the task). No tests with one method."""
    data = _per_seed(rows)
    end, half = 1.0, 0.5
    table = []
    for task, methods in data.items():
        ranks = _ranks(methods, end)
        if task == POOLED:  # per seed, the mean of its ranks over the tasks
            per_task = {t: _ranks(data[t], end) for t in data if t != POOLED}
            ranks = {m: {s: float(np.mean(here)) for s in seeds
                         if (here := [per_task[t][m][s] for t in per_task if s in per_task[t].get(m, {})])}
                     for m, seeds in methods.items()}
        ref = _at(methods.get(reference, {}), end)
        task_rows = []
        for method, seeds in methods.items():
            at_end = _at(seeds, end)
            row = {"task": task, "method": method, "n_seeds": len(seeds)}
            row["mean_regret_end"], row["mean_regret_end_lo"], row["mean_regret_end_hi"] = mean_ci(at_end.values())
            row["mean_regret_half"] = mean_ci(_at(seeds, half).values())[0]
            row["mean_rank"] = mean_ci(ranks.get(method, {}).values())[0]
            common = sorted(set(at_end) & set(ref))
            diffs = [at_end[s] - ref[s] for s in common]
            compared = method != reference and bool(ref) and bool(diffs)
            row["n_pairs"] = len(diffs) if compared else 0
            row["diff_vs_reference"], row["diff_lo"], row["diff_hi"] = mean_ci(diffs) if compared else (None,) * 3
            row["p_wilcoxon"] = wilcoxon_p(diffs) if compared else None
            task_rows.append(row)
        for row, p in zip(task_rows, holm([r["p_wilcoxon"] for r in task_rows])):
            row["p_holm"] = p
        table += task_rows
    return table


def target_value(traces_by_method) -> float:
    """The median, over every (method, seed) run, of the best value the run found."""
    bests = [incumbent_at(t, math.inf) for traces in traces_by_method.values() for t in _traces(traces)]
    bests = [b for b in bests if not math.isnan(b)]
    if not bests:
        raise DataError("no run trained a configuration fully: no target to reach")
    return float(np.median(bests))


def _traces(traces) -> list:
    return list(traces.values()) if isinstance(traces, dict) else list(traces)


def cost_to_target(traces_by_method, target=None) -> dict:
    """Per method ({method: {seed: trace}} or {method: [trace, ...]}): the cost at which
    each seed's incumbent first reaches <= ``target``; returns {method: {"target",
    "median_cost", "misses", "n_seeds"}}. A seed that never reaches it counts as an
    infinite cost, so median_cost is the median over all seeds (inf when half or
    more miss). ``target`` defaults to ``target_value``: the median over runs of the
    best values all methods found."""
    if target is None:
        target = target_value(traces_by_method)
    out = {}
    for method, traces in traces_by_method.items():
        costs = []
        for trace in _traces(traces):
            hits = [c for c, v in trace if v is not None and not math.isnan(v) and v <= target]
            costs.append(float(min(hits)) if hits else math.inf)
        out[method] = {"target": float(target), "n_seeds": len(costs), "misses": sum(math.isinf(c) for c in costs),
                       "median_cost": float(np.median(costs)) if costs else None}
    return out


# ------------------------------------------------------------- files

def write_csv(path, rows) -> None:
    """The rows as CSV, columns in first-seen order; None as an empty cell."""
    columns = _ordered(k for r in rows for k in r)
    with Path(path).open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: ("" if r.get(k) is None else r[k]) for k in columns} for r in rows)


def _num(x, digits=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def markdown_text(table_rows, title, notes=()) -> str:
    """``summary_table`` rows as a markdown section: title, table, notes as bullets."""
    head = ["task", "method", "seeds", "regret at 100 % [95 % CI]", "regret at 50 %", "mean rank",
            "Δ regret vs reference [95 % CI]", "pairs", "p (Wilcoxon)", "p (Holm)"]
    lines = [f"# {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in table_rows:
        end = _num(r["mean_regret_end"])
        if r["mean_regret_end_lo"] is not None:
            end += f" [{_num(r['mean_regret_end_lo'])}, {_num(r['mean_regret_end_hi'])}]"
        diff = "—" if r["diff_vs_reference"] is None else f"{r['diff_vs_reference']:+.3f}"
        if r["diff_lo"] is not None:
            diff += f" [{r['diff_lo']:+.3f}, {r['diff_hi']:+.3f}]"
        cells = [str(r["task"]), str(r["method"]), str(r["n_seeds"]), end, _num(r["mean_regret_half"]),
                 _num(r["mean_rank"], 2), diff, str(r["n_pairs"] or "—"),
                 "—" if r["p_wilcoxon"] is None else f"{r['p_wilcoxon']:.3g}",
                 "—" if r["p_holm"] is None else f"{r['p_holm']:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [notes] if isinstance(notes, str) else list(notes)
    if notes:
        lines += [""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


def write_markdown(path, table_rows, title, notes=()) -> None:
    Path(path).write_text(markdown_text(table_rows, title, notes))


# ------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_bands(path, series, ylabel, title, log=False) -> None:
    """series: {method: (fractions, seeds x fractions array)}; mean line and 95 % t
    band (from MIN_SEEDS_FOR_BAND seeds on) per method."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    lowest = math.inf
    for i, (method, (x, values)) in enumerate(series.items()):
        mean, color, n = np.nanmean(values, axis=0), f"C{i % 10}", values.shape[0]
        ax.plot(x, mean, color=color, label=f"{method} ({n})")
        lowest = min(lowest, float(np.nanmin(mean)))
        if n >= MIN_SEEDS_FOR_BAND:
            half = t_quantile(n - 1) * np.nanstd(values, axis=0, ddof=1) / math.sqrt(n)
            ax.fill_between(x, mean - half, mean + half, color=color, alpha=0.15)
    if log and series and lowest > 0:
        ax.set_yscale("log")
    ax.set(xlabel="fraction of the budget spent", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _series(per_method: dict) -> dict:
    """{method: {seed: {fraction: value}}} -> {method: (fractions, seeds x fractions)}."""
    out = {}
    for method, seeds in per_method.items():
        x = sorted({f for v in seeds.values() for f in v})
        if x:
            out[method] = (np.array(x), np.array([[v.get(f, np.nan) for f in x] for v in seeds.values()]))
    return out


def plot_regret(path, rows, task) -> None:
    """Mean normalized regret against the cost fraction per method, 95 % bands, one
    PNG (log y when every mean is above 0). Task "all" pools over tasks."""
    series = _series(_per_seed(rows).get(task, {}))
    _plot_bands(path, series, "normalized regret (0 best, 1 median)",
                f"{task}: anytime normalized regret (mean over seeds, 95 % t band)", log=True)


def plot_rank(path, rows, task) -> None:
    """Mean rank among methods against the cost fraction per method, 95 % bands, one PNG."""
    per_method: dict = {}
    for r in ranks_per_fraction(rows, task):
        per_method.setdefault(r["method"], {}).setdefault(r["seed"], {})[r["cost_fraction"]] = r["rank"]
    _plot_bands(path, _series(per_method), "mean rank (1 best)", f"{task}: mean rank against cost")
