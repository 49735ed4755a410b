"""What a finished (or interrupted) run tells its user: summary.json, the
closed-form formulas, the best predictor as a reusable file, and plots.

``summarize`` returns plain data; ``render_summary`` turns it into the text
that ``gpnas evolve`` and ``gpnas show`` print. The parts of a summary that
depend on the machine or on what was already cached (``timing``, ``cache``)
are kept apart, so two runs with the same seed have equal summaries otherwise.
"""

from __future__ import annotations

import bisect
import math
import shlex
from pathlib import Path

import numpy as np

from gpnas.predict import closedform
from gpnas.predict import predictor as pred
from gpnas.predict.baselines import MIN_RANKED, spearman
from gpnas.predict.features import FEATURES
from gpnas.runs.folder import write_atomic, write_json
from gpnas.search import females as fem
from gpnas.search.mating import son_statistics

NONDETERMINISTIC = ("timing", "cache")
# inside otherwise deterministic records: measured durations and speeds, and the
# closed-form texts (sympy simplifies under a time bound, so a busy machine may
# stop earlier; the tree string beside each text is exact), and whether the
# reference came from the cache
MACHINE_DEPENDENT = ("total_train_time_s", "avg_inference_tokens_per_s", "train_tokens_per_s", "train_seconds",
                     "formula", "latex", "cached")
TOP_FEMALES = 5


def _num(x, digits=6):
    if x is None:
        return None
    x = float(x)
    return round(x, digits) if math.isfinite(x) else None


def female_table(engine, state) -> tuple[list[dict], dict, dict]:
    """The run's predictor choice: formulas and baselines by the criterion that chose them.

    The choice is ``gpnas predictors fit``'s: cross-validation on the training
    part of the completed curves among the females' Pareto front and the
    baselines (``females.choose``). Beside the cross-validated figures, each row
    is scored on the held-out quarter of the completed curves (curves no female
    was fitted on); Spearman and regret of fewer than 5 curves are n/a.
    Returns (rows, baselines, choice); the rows are ordered by the
    cross-validated objective, the chosen one marked.
    """
    curve_set = engine.completed_curves(state)
    prior = engine.prior_trees(curve_set) if hasattr(engine, "prior_trees") else []
    model = fem.choose(state.females + prior, curve_set, prior=getattr(engine, "prior", ())) if state.females else None
    if model is None:
        return [], {}, {}
    held = curve_set.held.curves
    rows = []
    order = sorted(range(len(model.equations_)), key=lambda i: model.equations_[i].cv["objective"])
    for i in order:
        c = model.equations_[i]
        scores = pred.score_predictions(model.predict(held, i=i), held)["mean"] if held else {}
        rows.append({
            "kind": c.kind, "tree": c.tree or "", "formula": model.formula_text(i), "latex": model.formula_latex(i),
            "complexity": c.complexity, "chosen": i == model.best_index_,
            "cv_objective": _num(c.cv["objective"]), "cv_spearman": _num(c.cv["spearman"]),
            "cv_regret": _num(c.cv["regret"]), "cv_error": _num(c.cv["error"]),
            "holdout_error": _num(scores.get("mae")), "spearman": _num(scores.get("spearman")),
            "regret": _num(scores.get("regret")),
        })
    formulas = [r for r in rows if r["kind"] == "tree"][:TOP_FEMALES]
    baselines = {r["kind"]: r for r in rows if r["kind"] != "tree"}
    chosen = {"kind": model.best_.kind, "beats_last": bool(model.beats_last_), "text": model.describe_choice(),
              "formula": next(r["formula"] for r in rows if r["chosen"]),
              "r_range": list(model.plausible_range_ or ()),
              "names": closedform.glossary([r["formula"] for r in [*formulas, *baselines.values()]],
                                           {n: f.formula for n, f in FEATURES.items()}, model.config_keys_),
              "curves": len(curve_set.curves), "held_out": int(np.sum(curve_set.holdout)),
              "last_generation": last_generation_choice(state)}
    engine.chosen_predictor = model
    return formulas, baselines, chosen


def last_generation_choice(state) -> dict | None:
    """The predictor the run's last generation used, as its logbook row has it (the same
    figures as logbook.csv): the end-of-run choice above is made again on the final
    females and every completed curve, so the two may differ, and the summary shows both."""
    row = state.logbook[-1] if state.logbook else None
    if not row or row.get("cv_spearman") is None:
        return None
    return {"generation": row["generation"], "predictor": row.get("predictor") or "last",
            "cv_spearman": row.get("cv_spearman"), "cv_spearman_last": row.get("cv_spearman_last")}


def describe_last_generation(chosen: dict) -> str:
    """'generation 20 used the linear model (cv Spearman 0.895 vs last value 0.981; logbook.csv)'."""
    last = chosen.get("last_generation")
    if not last:
        return ""
    kind = last["predictor"]
    name = {"linear": "the linear model", "last": "the last value", "last+offset": "the last value + offset",
            "power_law": "the power law"}.get(kind, f"the formula {kind}")
    name = name if len(name) <= 70 else name[:67] + "..."
    return (f"generation {last['generation']} used {name} (cv Spearman {_fmt(last['cv_spearman'], '.3f')} vs last "
            f"value {_fmt(last['cv_spearman_last'], '.3f')}; logbook.csv); the choice above is made again at the "
            f"end on the final females and all {chosen.get('curves', 'n/a')} completed curves")


def uses_hyperparameters(tree, config_keys) -> bool:
    """Whether a female reads any hyperparameter terminal (only then can she guide a son)."""
    return any(getattr(node, "value", None) in config_keys for node in tree)


def summarize(engine, state, folder, wall_seconds: float, reference: dict | None = None) -> dict:
    """Everything the user is told at the end of a run, as data. ``reference``:
    the preset's reference architecture trained the same way (jobs.run.train_reference)."""
    formulas, baselines, chosen = female_table(engine, state)
    stats = state.mating_stats
    sons = son_statistics(state.sons)
    compute = dict(vars(state.compute))
    compute["train_seconds"] = _num(compute["train_seconds"], 3)
    evaluation = engine.ledger.eval_seconds
    return {
        "mode": engine.name,
        "seed": engine.seed,
        "preset": engine.preset.name,
        "table": ({"path": engine.ledger.task.table.path, "task": engine.ledger.task.name,
                   "sha256": engine.ledger.task.table.sha256,
                   "own": bool(engine.ledger.task.tokens_per_step)}  # the preset's own table: FLOPs, tokens
                  if engine.ledger.task.kind == "table" else None),
        "generations": state.generation,
        "budget_exhausted": state.exhausted,
        "best_architecture": state.hall_of_fame[0] if state.hall_of_fame else None,
        "reference": reference,
        "hall_of_fame": state.hall_of_fame[:5],
        "females": formulas,
        "baselines": baselines,
        "predictor": chosen,
        "mating": {**stats, **{k: _num(v) if isinstance(v, float) else v for k, v in sons.items()},
                   "females_using_hyperparameters": sum(uses_hyperparameters(f, engine.features.config_keys)
                                                        for f in state.females)},
        "calibration": calibration_summary(state.promotions, early_lasts(engine, state.promotions)),
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
            # the reference counts where this call trained it: it is in the archive too
            "trained": sum(r["evaluated"] for r in state.logbook) + int(bool(reference) and not reference["cached"]),
            "hits": sum(r["cache_hits"] for r in state.logbook) + int(bool(reference) and reference["cached"]),
        },
    }


def early_lasts(engine, promotions) -> list:
    """Each promoted male's last early value (the value the last-value baseline predicts),
    read from his complete curve at the early step; None where the archive lacks it."""
    out = []
    for p in promotions:
        record = engine.ledger.archive.get(p["key"])
        curve = record.result.get("curve") if record is not None and isinstance(record.result, dict) else None
        at = bisect.bisect_right(curve["eval_steps"], engine.ledger.early) - 1 if curve else -1
        out.append(float(curve["val_loss"][at]) if at >= 0 else None)
    return out


def calibration_summary(promotions, lasts=None) -> dict:
    """How close the male fitness of promoted males came to their true final loss:
    mean signed error (predicted - true) and mean absolute error, calibrated
    (the fitness promotion used) and raw (the ensemble's mean before calibration).
    With ``lasts`` (``early_lasts``), also the run's honest test of its predictions: each
    was made before the male's curve completed, by a predictor that had not seen it;
    their Spearman with the true finals beside the last early value's."""
    lasts = list(lasts) if lasts is not None else [None] * len(promotions)
    pairs = [(p, last) for p, last in zip(promotions, lasts) if isinstance(p.get("predicted"), (int, float))
             and isinstance(p.get("raw"), (int, float)) and isinstance(p.get("true"), (int, float))]
    if not pairs:
        return {"promoted": 0}
    true = np.array([p["true"] for p, _ in pairs])
    out = {"promoted": len(pairs)}
    for name, key in (("calibrated", "predicted"), ("raw", "raw")):
        error = np.array([p[key] for p, _ in pairs]) - true
        out[f"{name}_bias"] = _num(error.mean())
        out[f"{name}_mae"] = _num(np.abs(error).mean())
    ranked = [(p["raw"], last, p["true"]) for p, last in pairs if isinstance(last, float)]
    if len(ranked) >= MIN_RANKED:
        raw, last, final = np.array(ranked).T
        out["spearman_raw"], out["spearman_last"] = _num(spearman(raw, final)), _num(spearman(last, final))
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
    """summary.json, formulas.md, predictor.json (best female), best_config.py
    (nanoGPT), plots and report.html."""
    from gpnas.report.handoff import nanogpt_config
    from gpnas.report.html import write_html

    path = Path(folder.path)
    write_json(path / "summary.json", summary)
    write_atomic(path / "formulas.md", formulas_markdown(summary))
    model = getattr(engine, "chosen_predictor", None)
    if model is not None:  # the predictor file `gpnas predictors predict` reads, with .tex and .py
        model.save(path / "predictor.json")
    if summary.get("best_train_config"):
        write_atomic(path / "best_config.py", nanogpt_config(summary["best_train_config"], path.name,
                                                             engine.ledger.task.name))
    plot_run(path / "plots", engine, state, summary.get("reference"))
    write_html(path, summary)


def formulas_markdown(summary: dict) -> str:
    lines = [f"# Evolved predictor formulas ({summary['mode']}, seed {summary['seed']})", ""]
    if not summary.get("predictor"):
        return "\n".join(lines + ["This mode evolves no predictors, or too few curves completed.", ""])
    chosen = summary["predictor"]
    r_range = chosen.get("r_range") or []
    lines += ["Each formula predicts the final validation loss from the early prefix of a learning curve as",
              "`final = last + scale*(r)`" + (f", with r kept within its plausible range [{r_range[0]:.3g}, "
                                              f"{r_range[1]:.3g}] (the training curves' r widened by half its "
                                              "span; no prediction goes beyond it)" if len(r_range) == 2 else "")
              + ". Ordered by the cross-validated objective that chose the predictor; the names are explained "
              "at the end.", "", chosen["text"], "", *([describe_last_generation(chosen), ""]
                                                       if describe_last_generation(chosen) else [])]
    for rank, row in enumerate(summary["females"], 1):
        lines += [
            f"## {rank}. cross-validated Spearman {row['cv_spearman']}, regret {row['cv_regret']}; "
            f"held-out error {row['holdout_error']}, Spearman {row['spearman']}, regret {row['regret']}; "
            f"complexity {row['complexity']}{' (chosen)' if row['chosen'] else ''}",
            "", "```", row["formula"], "```", "", f"$$ {row['latex']} $$", "",
        ]
    lines += ["## Baselines on the same curves", ""]
    for name, s in summary["baselines"].items():
        lines.append(f"- {name}{' (chosen)' if s['chosen'] else ''}: cross-validated Spearman {s['cv_spearman']}, "
                     f"regret {s['cv_regret']}; held-out error {s['holdout_error']}, Spearman {s['spearman']}, "
                     f"regret {s['regret']}")
        if name == "linear":
            lines += ["", "```", s["formula"], "```", ""]
    if chosen.get("names"):
        lines += ["", "## The names in these formulas", "",
                  "The early curve is v_1..v_k (k evaluations), s = |v_1| its own scale and R_i = (v_i - v_1) / s "
                  "its values as a fraction of where it started; t is the evaluation index.", ""]
        lines += [f"- `{name}`: {meaning}" for name, meaning in chosen["names"]]
    return "\n".join(lines) + "\n"


def config_text(a: dict) -> str:
    """A config as the summary prints it: nanoGPT's genes in their order, any other key by key."""
    if all(k in a for k in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")):
        return (f"n_layer={a['n_layer']} n_head={a['n_head']} n_embd={a['n_embd']} "
                f"dropout={a['dropout']} learning_rate={a['learning_rate']:.4g}")
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in a.items())


def arch_label(arch: dict) -> str:
    """One line naming a config: nanoGPT's five genes in their order, any other config key by key."""
    if all(k in arch for k in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")):
        return (f"n_layer={arch['n_layer']} n_head={arch['n_head']} n_embd={arch['n_embd']} "
                f"dropout={float(arch['dropout']):.3g} lr={float(arch['learning_rate']):.3g}")
    return " ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in arch.items())


def plot_run(out: Path, engine, state, reference: dict | None = None) -> None:
    """Learning curves of the promoted males (the best and the reference named in
    the legend), and predicted against true final loss (y = x, Spearman, error)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(8, 4.8))
    best = state.hall_of_fame[0] if state.hall_of_fame else None
    others = False
    for promotion in state.promotions:
        record = engine.ledger.archive.get(promotion["key"])
        if record is None or record.result is None or (best and promotion["key"] == best["key"]):
            continue
        curve = record.result["curve"]
        ax.plot(curve["eval_steps"], curve["val_loss"], color="0.65", lw=0.8, zorder=1,
                label=None if others else "other fully trained males")
        others = True
    for entry, color, style, name in ((reference, "k", "--", "reference (preset)"), (best, "C3", "-", "best")):
        record = engine.ledger.archive.get(entry["key"]) if entry and entry.get("final_val_loss") is not None else None
        if record is None or record.result is None:
            continue
        curve = record.result["curve"]
        ax.plot(curve["eval_steps"], curve["val_loss"], color=color, ls=style, lw=2, zorder=3,
                label=f"{name}: {arch_label(entry['arch'])}, final {entry['final_val_loss']:.4f}")
    ax.axvline(engine.ledger.early, color="C0", ls=":", lw=1, label="early budget (males' score)")
    ax.set(xlabel="training step", ylabel="validation loss", title="Fully trained males")
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)

    pairs = [(p["predicted"], p["true"]) for p in state.promotions if p["predicted"] is not None]
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    if pairs:
        predicted, true = np.array(pairs).T
        ax.scatter(true, predicted, s=18, label=f"promoted males (n={len(pairs)})")
        lo, hi = float(min(true.min(), predicted.min())), float(max(true.max(), predicted.max()))
        ax.plot([lo, hi], [lo, hi], color="0.5", lw=1, label="y = x (perfect prediction)")
        ax.text(0.04, 0.96, prediction_scores_text(predicted, true), transform=ax.transAxes, va="top")
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no male was promoted by a prediction", ha="center", transform=ax.transAxes)
    ax.set(xlabel="true final validation loss", ylabel="predicted final loss (male fitness)",
           title="Predicted vs true, promoted males")
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_true.png", dpi=110)
    plt.close(fig)


def prediction_scores_text(predicted, true) -> str:
    """Spearman (with its p-value, from 3 points) and mean absolute error of predictions."""
    from scipy import stats

    predicted, true = np.asarray(predicted, float), np.asarray(true, float)
    mae = float(np.mean(np.abs(predicted - true)))
    if len(true) < 3 or np.ptp(true) == 0 or np.ptp(predicted) == 0:
        return f"mean abs error {mae:.4f}\nSpearman n/a (n={len(true)})"
    rho, p = stats.spearmanr(predicted, true)
    shown = "p<0.001" if p < 0.001 else f"p={p:.2g}"
    return f"mean abs error {mae:.4f}\nSpearman {rho:.2f} ({shown}, n={len(true)})"


def render_summary(summary: dict) -> str:
    """The end-of-run text: best architecture, formulas, mating, compute."""
    lines = [f"== gpnas {summary['mode']} run, preset {summary['preset']}, seed {summary['seed']}, "
             f"{summary['generations']} generations =="]
    best = summary["best_architecture"]
    if best:
        lines += [
            f"best architecture: {config_text(best['arch'])}",
            f"  final val loss {best['final_val_loss']:.4f}   best val loss {best['best_val_loss']:.4f}   "
            f"final train loss {_fmt(best['final_train_loss'])}",
        ]
        if best.get("total_train_time_s") is not None:  # trained, not replayed from a table
            lines.append(f"  total train time {best['total_train_time_s']:.1f} s   "
                         f"inference {_fmt(best.get('avg_inference_tokens_per_s'), '.0f')} tokens/s   "
                         f"params {best['n_params']:,}")
    else:
        lines.append("best architecture: none completed yet")
    ref = summary.get("reference")
    if ref:
        a = ref["arch"]
        how = "from the archive" if ref.get("cached") else "trained at the end of the run"
        if ref.get("final_val_loss") is None:
            lines.append(f"reference architecture (the preset's): failed: {ref.get('failure')}")
        else:
            vs = ""
            if best:
                diff = best["final_val_loss"] - ref["final_val_loss"]
                vs = f"; the best is {abs(diff):.4f} {'lower' if diff < 0 else 'higher'}"
            lines.append(f"reference architecture: {config_text(a)}")
            params = f"   params {ref['n_params']:,}" if ref.get("n_params") is not None else ""
            lines.append(f"  final val loss {ref['final_val_loss']:.4f}{params}{vs}")
            lines.append(f"  (the preset's [reference], trained like every male: same budget and seed; {how}, "
                         f"{ref['tokens']:,} tokens not charged to the run)")
    if summary.get("predictor"):
        lines.append(f"predictor {summary['predictor']['text']}")
        if describe_last_generation(summary["predictor"]):
            lines.append(f"  {describe_last_generation(summary['predictor'])}")
        lines.append("  by cross-validated objective (cv Spearman | cv regret || held-out error | Spearman | regret):")
        rows = [*summary["females"], *summary["baselines"].values()]
        for row in sorted(rows, key=lambda r: r["cv_objective"] if r["cv_objective"] is not None else math.inf):
            name = {"tree": "formula", "linear": "linear model"}.get(row["kind"], f"baseline {row['kind']}")
            lines.append(f"  {'*' if row['chosen'] else ' '} {_fmt(row['cv_spearman'], '.3f')} | "
                         f"{_fmt(row['cv_regret'])} || {_fmt(row['holdout_error'])} | "
                         f"{_fmt(row['spearman'], '.3f')} | {_fmt(row['regret'])}   "
                         f"{name}: final = {closedform.shorten(row['formula'])}")
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
        if cal.get("spearman_raw") is not None:
            lines.append(f"  predicted before their curves completed, by predictors that had not seen them: Spearman "
                         f"{cal['spearman_raw']:.3f} with the true finals; the last early value "
                         f"{cal['spearman_last']:.3f}")
    c, t = summary["compute"], summary["timing"]
    failed = f", {c['failed']} of them failed" if c.get("failed") else ""
    foreign = summary.get("table") is not None and not summary["table"].get("own")
    unit = "cost units of the table" if foreign else "training FLOPs"
    lines.append(f"compute: {c['evaluations']} evaluations{failed}, {c.get('flops', 0):.3g} {unit}, "
                 f"{c['steps']:,} steps, {c['tokens']:,} tokens, {c['train_seconds']:.1f} s training")
    lines.append(f"wall time {_fmt(t['wall_seconds'], '.1f')} s, of which engine overhead "
                 f"{_fmt(t['engine_seconds'], '.1f')} s ({_fmt((t['engine_fraction'] or 0) * 100, '.1f')} %); "
                 f"cache hits {summary['cache']['hits']}")
    failures = summary["failures"]
    if failures:
        reasons = {}
        for failure in failures:
            reasons.setdefault(failure["reason"], []).append(failure)
        lines.append(f"failed evaluations: {len(failures)} (they score worst and are never promoted)")
        for reason, group in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
            lines.append(f"  {len(group)} x {reason}")
    return "\n".join(lines)


def render_closing(summary: dict, folder, data_dir: str | None = None, next_generations: int | None = None) -> str:
    """The last lines of a run: where everything went and how to go on."""
    from gpnas.report.handoff import train_command

    path = Path(folder)
    names = [n for n in ("summary.json", "report.html", "formulas.md", "predictor.json", "best_config.py",
                         "hall_of_fame.json", "logbook.csv", "plots/curves.png", "plots/predicted_vs_true.png")
             if (path / n).exists()]
    quoted = shlex.quote(str(path))  # commands are printed to be pasted: a path with spaces stays one word
    lines = [f"written to {path}/: {', '.join(names)}",
             "  archive.sqlite holds every evaluation and its learning curve (the cache); snapshots/ the state "
             "after each generation"]
    if (path / "report.html").exists():
        lines.append(f"  open {shlex.quote(str(path / 'report.html'))} in a browser: summary, formulas and plots on one page")
    if summary.get("best_train_config"):
        lines.append("train the best architecture as the run did, and see what it writes:")
        lines.append("  " + train_command(summary["best_train_config"], summary["seed"], data_dir))
        if (path / "best_config.py").exists():
            lines.append(f"  with nanoGPT: python train.py {shlex.quote(str(path / 'best_config.py'))}")
    more = next_generations or summary["generations"] + 10
    lines.append(f"continue the search: gpnas evolve --resume {quoted} --generations {more}")
    lines.append(f"see it again: gpnas show {quoted}   (--html rewrites report.html, --json prints summary.json)")
    return "\n".join(lines)


def _fmt(x, spec=".4f"):
    return "n/a" if x is None else format(x, spec)
