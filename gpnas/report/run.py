"""What a finished (or interrupted) run tells its user: summary.json, the
closed-form formulas, the best predictor as a reusable file, and plots.

``summarize`` returns plain data; ``render_summary`` turns it into the text
that ``gpnas evolve`` and ``gpnas show`` print. The parts of a summary that
depend on the machine or on what was already cached (``timing``, ``cache``)
are kept apart, so two runs with the same seed have equal summaries otherwise.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gpnas.predict import closedform, trees
from gpnas.predict import predictor as pred
from gpnas.runs.folder import write_atomic, write_json
from gpnas.search import females as fem
from gpnas.search.mating import son_statistics

NONDETERMINISTIC = ("timing", "cache")
# inside otherwise deterministic records: measured durations and speeds, and the
# closed-form texts (sympy simplifies under a time bound, so a busy machine may
# stop earlier; the tree string beside each text is exact)
MACHINE_DEPENDENT = ("total_train_time_s", "avg_inference_tokens_per_s", "train_tokens_per_s", "train_seconds",
                     "formula", "latex")
TOP_FEMALES = 5


def _num(x, digits=6):
    if x is None:
        return None
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def female_table(engine, state) -> tuple[list[dict], dict]:
    """The top females on the run's completed curves, and the baselines beside them.

    Error, Spearman and regret are measured on the held-out split of the
    completed curves (curves no female was fitted on).
    """
    curve_set = engine.completed_curves(state)
    if not state.females or not curve_set.curves:
        return [], {}
    r, _ = fem.score(state.females, curve_set, engine.pset)
    finals = fem.to_final(r, curve_set.last, curve_set.scale)
    held = curve_set.holdout
    held_curves = [c for c, h in zip(curve_set.curves, held) if h]
    order = sorted(range(len(state.females)), key=lambda i: (state.females[i].fitness.values[0],
                                                             len(state.females[i])))
    rows, seen, simplified = [], set(), {}
    for i in order:
        tree = state.females[i]
        if str(tree) not in simplified:
            simplified[str(tree)] = closedform.simplify_bounded(closedform.to_sympy(tree))
        expr = simplified[str(tree)]
        if closedform.as_text(expr) in seen:  # different trees, one formula: report it once
            continue
        seen.add(closedform.as_text(expr))
        scores = pred.score_predictions(finals[i, held], held_curves)["mean"] if held_curves else {}
        rows.append({
            "tree": str(tree),
            "formula": f"last + scale * clip({closedform.as_text(expr)}, -1, 1)",
            "latex": (rf"\mathrm{{last}} + \mathrm{{scale}} \cdot \mathrm{{clip}}\left({closedform.as_latex(expr)}"
                      r", -1, 1\right)"),
            "complexity": len(tree),
            "train_error": _num(tree.fitness.values[0]),
            "holdout_error": _num(scores.get("mae")),
            "spearman": _num(scores.get("spearman")),
            "regret": _num(scores.get("regret")),
        })
        if len(rows) == TOP_FEMALES:
            break
    baselines = {}
    if held_curves:
        for name, baseline in pred.BASELINES.items():
            scores = pred.score_predictions(baseline(held_curves, engine.prefix_frac), held_curves)["mean"]
            baselines[name] = {"error": _num(scores["mae"]), "spearman": _num(scores["spearman"]),
                               "regret": _num(scores["regret"])}
    return rows, baselines


def uses_hyperparameters(tree) -> bool:
    """Whether a female reads any hyperparameter terminal (only then can she guide a son)."""
    return any(getattr(node, "value", None) in trees.HYPERPARAMETER_TERMINALS for node in tree)


def summarize(engine, state, folder, wall_seconds: float) -> dict:
    """Everything the user is told at the end of a run, as data."""
    formulas, baselines = female_table(engine, state)
    stats = state.mating_stats
    sons = son_statistics(state.sons)
    compute = dict(vars(state.compute))
    compute["train_seconds"] = _num(compute["train_seconds"], 3)
    evaluation = engine.eval_seconds
    return {
        "mode": engine.mode.name,
        "seed": engine.seed,
        "preset": engine.preset.name,
        "generations": state.generation,
        "budget_exhausted": state.exhausted,
        "best_architecture": state.hall_of_fame[0] if state.hall_of_fame else None,
        "hall_of_fame": state.hall_of_fame[:5],
        "females": formulas,
        "baselines": baselines,
        "mating": {**stats, **{k: _num(v) if isinstance(v, float) else v for k, v in sons.items()},
                   "females_using_hyperparameters": sum(map(uses_hyperparameters, state.females))},
        "calibration": calibration_summary(state.promotions),
        "compute": compute,
        "promotions": state.promotions,
        "failures": state.failures,
        "timing": {
            "wall_seconds": _num(wall_seconds, 2),
            "evaluation_seconds": _num(evaluation, 2),
            "engine_seconds": _num(max(0.0, wall_seconds - evaluation), 2),
            "engine_fraction": _num(max(0.0, wall_seconds - evaluation) / wall_seconds, 4) if wall_seconds else None,
        },
        "cache": {
            "trained": sum(r["evaluated"] for r in state.logbook),
            "hits": sum(r["cache_hits"] for r in state.logbook),
        },
    }


def calibration_summary(promotions) -> dict:
    """How close the male fitness of promoted males came to their true final loss:
    mean signed error (predicted - true) and mean absolute error, calibrated
    (the fitness promotion used) and raw (the ensemble's mean before calibration)."""
    pairs = [p for p in promotions if isinstance(p.get("predicted"), (int, float))
             and isinstance(p.get("raw"), (int, float)) and isinstance(p.get("true"), (int, float))]
    if not pairs:
        return {"promoted": 0}
    true = np.array([p["true"] for p in pairs])
    out = {"promoted": len(pairs)}
    for name, key in (("calibrated", "predicted"), ("raw", "raw")):
        error = np.array([p[key] for p in pairs]) - true
        out[f"{name}_bias"] = _num(error.mean())
        out[f"{name}_mae"] = _num(np.abs(error).mean())
    return out


def deterministic_part(summary: dict) -> dict:
    """The summary without what depends on the machine or on the cache: the
    timing and cache sections, measured durations and speeds, formula texts."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in MACHINE_DEPENDENT}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return strip({k: v for k, v in summary.items() if k not in NONDETERMINISTIC})


def write_report(folder, summary: dict, engine, state) -> None:
    """summary.json, formulas.md, predictor.json (best female) and plots."""
    path = Path(folder.path)
    write_json(path / "summary.json", summary)
    write_atomic(path / "formulas.md", formulas_markdown(summary))
    if summary["females"]:
        export_predictor(path / "predictor.json", summary["females"], engine.prefix_frac)
    plot_run(path / "plots", engine, state)


def export_predictor(path: Path, rows: list[dict], prefix_frac: float) -> None:
    """The run's top formulas as a predictor file (``gpnas predictors predict``
    reads it), with its LaTeX and Python exports beside it."""
    predictor = pred.CurvePredictor(pred.PredictorConfig(prefix_frac=prefix_frac))
    keys = ("tree", "formula", "complexity", "train_error", "holdout_error", "spearman", "regret")
    predictor.equations_ = [{k: (math.nan if row[k] is None else row[k]) for k in keys} for row in rows]
    predictor.best_index_ = 0
    predictor.save(path)


def formulas_markdown(summary: dict) -> str:
    lines = [f"# Evolved predictor formulas ({summary['mode']}, seed {summary['seed']})", ""]
    if not summary["females"]:
        return "\n".join(lines + ["This mode evolves no predictors.", ""])
    lines += ["Predicted final validation loss from the early prefix of a learning curve:",
              "`last` is the last early value, `scale` the curve's first value, and the other",
              "names are the features documented in `gpnas/features.py`.", ""]
    for rank, row in enumerate(summary["females"], 1):
        lines += [
            f"## {rank}. held-out error {row['holdout_error']}, Spearman {row['spearman']}, "
            f"regret {row['regret']}, complexity {row['complexity']}",
            "", "```", row["formula"], "```", "", f"$$ {row['latex']} $$", "",
        ]
    lines += ["## Baselines on the same curves", ""]
    for name, scores in summary["baselines"].items():
        lines.append(f"- {name}: error {scores['error']}, Spearman {scores['spearman']}, regret {scores['regret']}")
    return "\n".join(lines) + "\n"


def plot_run(out: Path, engine, state) -> None:
    """Learning curves of the promoted males, and predicted against true final loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    best = state.hall_of_fame[0]["key"] if state.hall_of_fame else None
    for promotion in state.promotions:
        record = engine.archive.get(promotion["key"])
        if record is None or record.result is None:
            continue
        curve = record.result["curve"]
        is_best = promotion["key"] == best
        ax.plot(curve["eval_steps"], curve["val_loss"], color="C3" if is_best else "0.6",
                lw=2 if is_best else 0.8, zorder=3 if is_best else 1)
    ax.axvline(engine.budget.early_iters, color="C0", ls="--", lw=1, label="early budget")
    ax.set(xlabel="training step", ylabel="validation loss", title="Promoted males (best in red)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)

    pairs = [(p["predicted"], p["true"]) for p in state.promotions if p["predicted"] is not None]
    fig, ax = plt.subplots(figsize=(5, 5))
    if pairs:
        predicted, true = np.array(pairs).T
        ax.scatter(true, predicted, s=18)
        lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1)
    ax.set(xlabel="true final validation loss", ylabel="predicted (male fitness)",
           title="Predicted vs true, promoted males")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_true.png", dpi=110)
    plt.close(fig)


def render_summary(summary: dict) -> str:
    """The end-of-run text: best architecture, formulas, mating, compute."""
    lines = [f"== gpnas {summary['mode']} run, preset {summary['preset']}, seed {summary['seed']}, "
             f"{summary['generations']} generations =="]
    best = summary["best_architecture"]
    if best:
        a = best["arch"]
        lines += [
            "best architecture: "
            f"n_layer={a['n_layer']} n_head={a['n_head']} n_embd={a['n_embd']} "
            f"dropout={a['dropout']} learning_rate={a['learning_rate']:.4g}",
            f"  final val loss {best['final_val_loss']:.4f}   best val loss {best['best_val_loss']:.4f}   "
            f"final train loss {best['final_train_loss']:.4f}",
            f"  total train time {best['total_train_time_s']:.1f} s   "
            f"inference {_fmt(best.get('avg_inference_tokens_per_s'), '.0f')} tokens/s   "
            f"params {best['n_params']:,}",
        ]
    else:
        lines.append("best architecture: none completed yet")
    if summary["females"]:
        lines.append("top predictors (held-out error | Spearman | regret):")
        for rank, row in enumerate(summary["females"], 1):
            lines.append(f"  {rank}. {_fmt(row['holdout_error'])} | {_fmt(row['spearman'])} | "
                         f"{_fmt(row['regret'])}   final = {row['formula']}")
        for name, s in summary["baselines"].items():
            lines.append(f"  baseline {name}: {_fmt(s['error'])} | {_fmt(s['spearman'])} | {_fmt(s['regret'])}")
    m = summary["mating"]
    if m["guided"] + m["random"]:
        share = m.get("guided_fraction")
        lines.append(f"sons: {m['guided']} chosen by the mother (guided), {m['random']} at random (her predictions "
                     f"did not differ among the candidates){'' if share is None else f'; guided share {share:.0%}'}")
        if m.get("guided_early_loss") is not None or m.get("random_early_loss") is not None:
            paired = m.get("paired_difference")
            lines.append(f"  early loss: guided {_fmt(m.get('guided_early_loss'))} (n={m.get('guided_trained', 0)}), "
                         f"random {_fmt(m.get('random_early_loss'))} (n={m.get('random_trained', 0)}); "
                         + ("no generation had both" if paired is None else
                            f"guided - random within a generation {paired:+.4f} on average over "
                            f"{m['paired_generations']} generations, guided lower in {m['guided_lower_generations']}"))
    if m["chose"] + m["tournament"]:
        lines.append(f"daughters: {m['chose']} crossed with the father's choice, {m['tournament']} by tournament; "
                     f"{m['females_using_hyperparameters']} of the final females read a hyperparameter")
    cal = summary.get("calibration") or {}
    if cal.get("promoted"):
        lines.append(f"promoted males: calibrated prediction - true final {cal['calibrated_bias']:+.4f} on average "
                     f"(mean |error| {cal['calibrated_mae']:.4f}); before calibration {cal['raw_bias']:+.4f} "
                     f"({cal['raw_mae']:.4f}); n={cal['promoted']}")
    c, t = summary["compute"], summary["timing"]
    failed = f", {c['failed']} of them failed" if c.get("failed") else ""
    lines.append(f"compute: {c['evaluations']} evaluations{failed}, {c.get('flops', 0):.3g} training FLOPs, "
                 f"{c['steps']:,} steps, {c['tokens']:,} tokens, {c['train_seconds']:.1f} s training")
    lines.append(f"wall time {_fmt(t['wall_seconds'], '.1f')} s, of which engine overhead "
                 f"{_fmt(t['engine_seconds'], '.1f')} s ({_fmt((t['engine_fraction'] or 0) * 100, '.1f')} %); "
                 f"cache hits {summary['cache']['hits']}")
    for failure in summary["failures"]:
        lines.append(f"failed: {failure['arch']}: {failure['reason']}")
    return "\n".join(lines)


def _fmt(x, spec=".4f"):
    return "n/a" if x is None else format(x, spec)
