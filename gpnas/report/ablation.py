"""What an ablation tells its reader: per-mode statistics over seeds, a paired
test of each mode against combined, the table (markdown and CSV) and plots.

Everything here is a pure function of the run records in results.json
(``gpnas.jobs.ablation.make_record``); the statistics are scipy's. Intervals
are 95 % Student t intervals of the mean over seeds (``scipy.stats.t``); the
paired test is scipy's exact sign-flip permutation test of the per-seed
differences (``permutation_test``, two-sided). With K seeds its smallest
possible p-value is 2 / 2^K (0.0625 for 5 seeds): five seeds can show a
consistent direction, never 'significance' at 0.05 on their own. Bands in the
plots are drawn from 3 seeds on; fewer show the mean line alone.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

REFERENCE_MODE = "combined"
MIN_SEEDS_FOR_BAND = 3  # a 95 % band from two seeds is mostly the t quantile (12.7): not drawn
# (key, column title, digits) of the per-run metrics the table summarises
METRICS = (
    ("final_val_loss", "best true final val loss", 4),
    ("final_train_loss", "final train loss", 4),
    ("total_train_time_s", "train time (s)", 1),
    ("avg_inference_tokens_per_s", "inference tokens/s", 0),
    ("flops_to_baseline", "FLOPs to baseline loss", 0),
    ("flops_used", "FLOPs used", 0),
    ("tokens_used", "tokens used", 0),
)


def t_quantile(df: int) -> float:
    """Student t 0.975 quantile (two-sided 95 %)."""
    return float(stats.t.ppf(0.975, df))


def mean_ci(values) -> tuple[float | None, float | None, float | None]:
    """(mean, low, high) of the 95 % t interval; no interval from fewer than 2 values."""
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    if x.size == 0:
        return None, None, None
    mean = float(x.mean())
    if x.size < 2:
        return mean, None, None
    if np.ptp(x) == 0:  # scipy gives NaN for a zero-width interval
        return mean, mean, mean
    low, high = stats.t.interval(0.95, x.size - 1, loc=mean, scale=stats.sem(x))
    return mean, float(low), float(high)


def sign_flip_p(differences, max_exact: int = 16, samples: int = 100_000) -> float | None:
    """Two-sided p-value of the paired sign-flip permutation test for mean difference 0.

    Under the null each per-seed difference is as likely negative as positive;
    ``scipy.stats.permutation_test`` with one sample and ``permutation_type=
    'samples'`` flips signs: exact (all 2^n patterns) up to ``max_exact`` pairs,
    else ``samples`` seeded random patterns.
    """
    d = np.asarray(differences, dtype=float)
    if d.size == 0:
        return None
    if d.size == 1 or not np.any(d):  # one pair, or all 0: every sign pattern ties (scipy needs 2)
        return 1.0
    result = stats.permutation_test((d,), np.mean, permutation_type="samples", alternative="two-sided",
                                    n_resamples=math.inf if d.size <= max_exact else samples,
                                    random_state=np.random.default_rng(0))
    return float(min(1.0, result.pvalue))


def compute_to_reach(completions, target: float | None, unit: str = "flops") -> float | None:
    """Training compute (``unit``: "flops" or "tokens") spent when a completed
    evaluation first reached ``target`` (true final val loss <= target); None if
    never, no target, or the records predate that unit."""
    if target is None:
        return None
    hits = [c.get(unit) for c in completions if c["true"] is not None and c["true"] <= target]
    hits = [h for h in hits if h is not None]
    return float(min(hits)) if hits else None


def run_metrics(records) -> list[dict]:
    """One row per run: the table's metrics (None where a run has no value)."""
    baseline = {r["seed"]: r["best"]["final_val_loss"] for r in records
                if r["mode"] == "baseline" and r["best"] is not None}
    rows = []
    for r in records:
        best = r["best"] or {}
        rows.append({
            "mode": r["mode"], "seed": r["seed"], "budget_flops": r.get("budget_flops"),
            **{k: best.get(k) for k in ("final_val_loss", "best_val_loss", "final_train_loss",
                                        "total_train_time_s", "avg_inference_tokens_per_s", "n_params")},
            "flops_to_baseline": compute_to_reach(r["completions"], baseline.get(r["seed"])),
            "tokens_to_baseline": compute_to_reach(r["completions"], baseline.get(r["seed"]), "tokens"),
            "reached_baseline": None if r["seed"] not in baseline else
            compute_to_reach(r["completions"], baseline[r["seed"]], "tokens") is not None,
            "flops_used": r["compute"].get("flops"),
            "tokens_used": r["compute"]["tokens"],
            "evaluations": r["compute"]["evaluations"],
            "completed": len(r["completions"]),
            "generations": r["generations"],
            "wall_seconds": r["wall_seconds"],
        })
    return rows


def summary_rows(records, modes) -> list[dict]:
    """Per mode: mean and 95 % interval of every metric, and the paired test
    of its best true final val loss against combined on the same seeds."""
    runs = run_metrics(records)
    reference = {r["seed"]: r["final_val_loss"] for r in runs if r["mode"] == REFERENCE_MODE}
    table = []
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        if not mine:
            continue
        row = {"mode": mode, "seeds": len(mine)}
        for key, _, _ in METRICS:
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = mean_ci([r[key] for r in mine])
        reached = [r["reached_baseline"] for r in mine if r["reached_baseline"] is not None]
        row["reached_baseline"] = f"{sum(reached)}/{len(reached)}" if reached else None
        pairs = [(r["final_val_loss"], reference[r["seed"]]) for r in mine
                 if r["final_val_loss"] is not None and reference.get(r["seed"]) is not None]
        diffs = [a - b for a, b in pairs]
        if mode != REFERENCE_MODE and diffs:
            row["diff_vs_combined"], row["diff_lo"], row["diff_hi"] = mean_ci(diffs)
            row["p_sign_flip"] = sign_flip_p(diffs)
            row["better_than_combined"] = f"{sum(d < 0 for d in diffs)}/{len(diffs)}"
        else:
            row["diff_vs_combined"] = row["diff_lo"] = row["diff_hi"] = row["p_sign_flip"] = None
            row["better_than_combined"] = None
        table.append(row)
    return table


def _fmt(x, digits):
    if x is not None and abs(x) >= 1e9:  # FLOPs: three significant digits
        return f"{x:.3g}"
    return "n/a" if x is None else f"{x:,.{digits}f}"


def _interval(row, key, digits):
    mean, lo, hi = row[key], row[f"{key}_lo"], row[f"{key}_hi"]
    if mean is None:
        return "n/a"
    if lo is not None and abs(mean) >= 1e9:  # FLOPs: the half-width in the same notation
        return f"{mean:.3g} ± {(hi - lo) / 2:.2g}"
    return _fmt(mean, digits) if lo is None else f"{_fmt(mean, digits)} ± {_fmt((hi - lo) / 2, digits)}"


def markdown_table(rows) -> str:
    """The table as GitHub markdown: mean ± 95 % half-width over seeds."""
    head = ["mode", "seeds", *(title for _, title, _ in METRICS), "Δ val loss vs combined [95 % CI]",
            "better / pairs", "p (sign-flip)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["mode"], str(row["seeds"])]
        for key, _, digits in METRICS:
            cell = _interval(row, key, digits)
            if key == "flops_to_baseline" and row["reached_baseline"]:
                cell = f"{cell} (reached {row['reached_baseline']})"
            cells.append(cell)
        if row["diff_vs_combined"] is None:
            cells += ["—", "—", "—"]
        else:
            ci = ("" if row["diff_lo"] is None else
                  f" [{row['diff_lo']:+.4f}, {row['diff_hi']:+.4f}]")
            cells += [f"{row['diff_vs_combined']:+.4f}{ci}", row["better_than_combined"],
                      f"{row['p_sign_flip']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------- plots

def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def best_so_far(completions, grid) -> np.ndarray:
    """Best true final val loss reached by each compute (training FLOPs) in ``grid`` (NaN before the first)."""
    out = np.full(len(grid), np.nan)
    points = sorted((c["flops"], c["true"]) for c in completions if c["true"] is not None and c.get("flops") is not None)
    best = math.inf
    for tokens, true in points:
        best = min(best, true)
        out[np.asarray(grid) >= tokens] = best
    return out


def plot_best_so_far(records, modes, path) -> None:
    """Best val loss so far against training FLOPs: mean over seeds and 95 % band."""
    plt = _pyplot()
    top = max((r["compute"].get("flops") or 0 for r in records), default=1) or 1
    grid = np.linspace(0, top, 200)
    fig, ax = plt.subplots(figsize=(8, 5))
    for i, mode in enumerate(modes):
        mine = [r for r in records if r["mode"] == mode]
        if not mine:
            continue
        if mode == "baseline":
            losses = [r["best"]["final_val_loss"] for r in mine if r["best"]]
            if losses:
                ax.axhline(float(np.mean(losses)), color="k", ls="--", lw=1, label="baseline (reference)")
            continue
        curves = np.array([best_so_far(r["completions"], grid) for r in mine])
        n = np.sum(~np.isnan(curves), axis=0)
        full = n == len(mine)  # only where every seed has a completed evaluation
        mean = curves.mean(axis=0)  # NaN until every seed has a completed evaluation
        color = f"C{i % 10}"
        ax.plot(grid, mean, color=color, label=mode)
        if len(mine) >= MIN_SEEDS_FOR_BAND:
            half = t_quantile(len(mine) - 1) * np.std(curves, axis=0, ddof=1) / math.sqrt(len(mine))
            ax.fill_between(grid, mean - half, mean + half, color=color, alpha=0.15, where=full)
    seeds = sorted({len([r for r in records if r["mode"] == m]) for m in modes} - {0})
    band = "95 % t band" if seeds and min(seeds) >= MIN_SEEDS_FOR_BAND else f"band from {MIN_SEEDS_FOR_BAND} seeds on"
    ax.set(xlabel="training FLOPs charged", ylabel="best true final val loss so far",
           title=f"Best architecture found against compute (mean over seeds, {band})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _smooth(values, width: int) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    width = max(1, min(width, x.size))
    return np.convolve(x, np.ones(width) / width, mode="valid")


def plot_best_curves(records, modes, path) -> None:
    """Training and validation loss of each mode's best architecture (over all seeds)."""
    plt = _pyplot()
    fig, (ax_train, ax_val) = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for i, mode in enumerate(modes):
        mine = [r for r in records if r["mode"] == mode and r["best"] and r["best_curve"]]
        if not mine:
            continue
        best = min(mine, key=lambda r: r["best"]["final_val_loss"])
        c, color = best["best_curve"], f"C{i % 10}"
        width = max(1, len(c["train_loss"]) // 40)
        smooth = _smooth(c["train_loss"], width)
        ax_train.plot(np.arange(width, width + smooth.size), smooth, color=color, label=f"{mode} (s{best['seed']})")
        ax_val.plot(c["eval_steps"], c["val_loss"], color=color, label=mode)
    ax_train.set(xlabel="step", ylabel="loss", title="Training loss of each mode's best (moving average)")
    ax_val.set(xlabel="step", title="Validation loss of each mode's best")
    ax_train.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_predicted_vs_true(records, path, modes=("female", "combined")) -> None:
    """The male fitness (predicted final loss) of every promoted male against its true final loss."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4.6), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        pairs = np.array([(c["true"], c["predicted"]) for r in records if r["mode"] == mode
                          for c in r["completions"] if c["predicted"] is not None and c["true"] is not None])
        if pairs.size:
            ax.scatter(pairs[:, 0], pairs[:, 1], s=14, alpha=0.7)
            lo, hi = float(pairs.min()), float(pairs.max())
            ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
            ax.lines[-1].set_label("y = x (perfect prediction)")
            ax.legend(fontsize=8, loc="lower right")
            mae = float(np.mean(np.abs(pairs[:, 1] - pairs[:, 0])))
            text = f"mean abs error {mae:.4f}, n={len(pairs)}"
            if len(pairs) > 2 and np.ptp(pairs[:, 0]) > 0 and np.ptp(pairs[:, 1]) > 0:
                text += f"\nSpearman {stats.spearmanr(pairs[:, 0], pairs[:, 1]).statistic:.2f}"
            ax.text(0.04, 0.92, text, transform=ax.transAxes, va="top")
        ax.set(xlabel="true final val loss", ylabel="predicted final val loss", title=mode)
    fig.suptitle("Predicted vs true final loss of promoted males (all seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_plots(records, modes, folder) -> list:
    """The three figures as PNG files in ``folder``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / "best_so_far.png", folder / "best_curves.png", folder / "predicted_vs_true.png"]
    plot_best_so_far(records, modes, paths[0])
    plot_best_curves(records, modes, paths[1])
    plot_predicted_vs_true(records, paths[2])
    return paths


def coupling_rows(records, modes) -> list[dict]:
    """Per mode with predictions: the mating operator's guided sons (share, early
    loss against random sons of the same generation) and the calibration of
    promoted males (calibrated prediction - true final), mean and 95 % interval
    over seeds. Records from before these were kept give None."""
    rows = []
    for mode in modes:
        mine = [r for r in records if r["mode"] == mode]
        per_seed = {"guided_fraction": [], "paired_difference": [], "calibration_bias": [], "raw_bias": []}
        for r in mine:
            m = r.get("mating") or {}
            for key in ("guided_fraction", "paired_difference"):
                if isinstance(m.get(key), (int, float)):
                    per_seed[key].append(m[key])
            pairs = [c for c in r["completions"] if isinstance(c.get("raw"), (int, float))
                     and isinstance(c.get("predicted"), (int, float)) and c.get("true") is not None]
            if pairs:
                per_seed["calibration_bias"].append(float(np.mean([c["predicted"] - c["true"] for c in pairs])))
                per_seed["raw_bias"].append(float(np.mean([c["raw"] - c["true"] for c in pairs])))
        if not any(per_seed.values()):
            continue
        row = {"mode": mode, "seeds": len(mine)}
        for key, values in per_seed.items():
            row[key], row[f"{key}_lo"], row[f"{key}_hi"] = mean_ci(values)
        rows.append(row)
    return rows


def coupling_markdown(rows) -> str:
    head = ["mode", "seeds", "guided share of sons", "early loss guided - random (same generation)",
            "promoted: calibrated - true", "promoted: raw - true"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["mode"], str(row["seeds"]), _interval(row, "guided_fraction", 3),
                                         _interval(row, "paired_difference", 4),
                                         _interval(row, "calibration_bias", 4), _interval(row, "raw_bias", 4)])
                     + " |")
    return "\n".join(lines) + "\n"


def write_tables(records, modes, folder) -> dict:
    """table.md, table.csv (per mode), runs.csv (per run) and coupling.md (guided sons
    and calibration, per mode) in ``folder``; returns
    {"markdown": text, "paths": [...]}."""
    from gpnas.runs.folder import csv_text, write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(records, modes)
    markdown = markdown_table(rows)
    paths = [folder / "table.md", folder / "table.csv", folder / "runs.csv", folder / "coupling.md"]
    write_atomic(paths[0], markdown)
    write_atomic(paths[1], csv_text(rows))
    write_atomic(paths[2], csv_text(run_metrics(records)))
    write_atomic(paths[3], coupling_markdown(coupling_rows(records, modes)))
    return {"markdown": markdown, "paths": paths}
