"""``gpnas predictors fit | predict | eval``: evolve, apply and score curve predictors."""

from __future__ import annotations

import json
import math

import click

from gpnas.cli.output import echo, plural
from gpnas.predict import closedform
from gpnas.predict.baselines import score_baselines
from gpnas.predict.curves import prefix_length, read_curves
from gpnas.predict.predictor import CurvePredictor, PredictorConfig, in_sample


def _fmt(v, digits=4):
    if isinstance(v, float):
        return "nan" if not math.isfinite(v) else f"{v:.{digits}g}"
    return str(v)


def _scores_table(rows: dict) -> list[str]:
    """rows: name -> score dict (with 'mean'); one line per name."""
    lines = [f"{'predictor':<12} {'mae':>10} {'median_ae':>10} {'spearman':>9} {'regret':>10}"]
    for name, s in rows.items():
        m = s["mean"]
        lines.append(f"{name:<12} {_fmt(m['mae']):>10} {_fmt(m['median_ae']):>10} "
                     f"{_fmt(m['spearman']):>9} {_fmt(m['regret']):>10}")
    return lines


def check_complete(curves, path, frac: float) -> None:
    """Fitting and scoring need a final value beyond the prefix seen: a curve of n
    values whose prefix (k = max(4, ceil(frac n)) values) is the whole curve would
    be scored as if the prefix held its target."""
    for number, curve in enumerate(curves, 1):
        n, k = len(curve.values), prefix_length(curve.n, frac)
        if curve.horizon is not None and curve.horizon > n:
            raise click.UsageError(f"{path}: curve {number} ({curve.task} {curve.config_id}) is a prefix "
                                   f"({n} of {curve.horizon} values); fitting and scoring need complete curves: "
                                   "drop it, or use 'predictors predict' for it")
        if n <= k:
            raise click.UsageError(f"{path}: curve {number} ({curve.task} {curve.config_id}) has "
                                   f"{plural(n, 'value')} and a predictor reads the first {k}, so the final value "
                                   "it should predict would be among them; give curves longer than their prefix "
                                   "(more than 4 values, --prefix-frac below 1) or drop this one")


prefix_option = click.option("--prefix-frac", type=click.FloatRange(0, 1, min_open=True),
                             default=None, help="Fraction of each curve seen (k = max(4, ceil(frac*n))). "
                             "Default: 0.2 for fit, the predictor's own for predict/eval.")
curves_option = click.option("--curves", "curves_path", required=True, type=click.Path(dir_okay=False),
                             help="JSON Lines file, one curve per line: {\"values\": [...]} plus optional x, task, config_id, "
                                  "metric, higher_is_better, config, horizon (README: Predictors).")
predictor_option = click.option("--predictor", "predictor_path", required=True, type=click.Path(),
                                help="Folder written by 'predictors fit', or its predictor.json.")


@click.group()
def predictors():
    """Evolve learning-curve predictors (females) and use them on curve files."""


@predictors.command()
@curves_option
@prefix_option
@click.option("--generations", type=click.IntRange(0), default=30, show_default=True)
@click.option("--population", type=click.IntRange(4), default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--rank-margin", type=click.FloatRange(0), default=PredictorConfig.rank_margin, show_default=True,
              help="Standard errors by which an evolved formula must rank better than the last value, fold by "
                   "fold, to be chosen; smaller gives formulas more chances and risks more on small archives "
                   "(see the README's in-search protocol).")
@click.option("--linear-margin", type=click.FloatRange(0), default=PredictorConfig.linear_margin, show_default=True,
              help="Standard errors by which the linear model's leave-one-out squared error must beat the last "
                   "value + offset's to be chosen (its leave-one-out ranking must also be no worse than the last "
                   "value's).")
@click.option("--holdout-task", multiple=True, metavar="NAME",
              help="Keep this task's curves out of fitting and score the predictor on them (repeatable). "
                   "The choice itself is made by cross-validation on the fitted curves.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for predictor.json, predictor.tex, predictor.py.")
def fit(curves_path, prefix_frac, generations, population, seed, rank_margin, linear_margin, holdout_task, out_dir):
    """Evolve predictors on complete curves; print the equations and the baselines."""
    curves = read_curves(curves_path)
    check_complete(curves, curves_path, prefix_frac or 0.2)
    config = PredictorConfig(prefix_frac=prefix_frac or 0.2, population=population,
                             generations=generations, seed=seed, rank_margin=rank_margin,
                             linear_margin=linear_margin)
    holdout = None
    if holdout_task:
        tasks = {c.task for c in curves}
        missing = [t for t in holdout_task if t not in tasks]
        if missing:
            raise click.UsageError(f"--holdout-task {missing[0]!r} is not a task in {curves_path}; "
                                   f"tasks: {', '.join(sorted(tasks))}")
        holdout = [c for c in curves if c.task in holdout_task]
        curves = [c for c in curves if c.task not in holdout_task]
    model = CurvePredictor(config).fit(curves, holdout=holdout or [])
    n = len(model.train_curves_)
    echo(f"fitted on {n} curve{'s' if n != 1 else ''} of {len({c.task for c in model.train_curves_})} "
               f"task(s); {model.n_evaluated_} distinct trees evaluated; {len(model.features_)} features")
    if model.left_out_:
        echo(f"config keys not in every curve, left out: {', '.join(model.left_out_)}")
    echo("")
    r_range = model.plausible_range_
    within = f", r within [{r_range[0]:.3g}, {r_range[1]:.3g}]" if r_range else ""
    echo(f"  {'kind':<11} {'cx':>3} {'cv_obj':>7} {'cv_err':>7} {'cv_rho':>7} {'cv_regret':>9}"
         f"  r (final = last + scale * r{within})")
    order = sorted(range(len(model.equations_)), key=lambda i: model.equations_[i].cv["objective"])
    for i in order:
        c = model.equations_[i]
        mark = "*" if i == model.best_index_ else ("+" if i in model.ensemble_ else " ")
        cv = c.cv
        echo(f"{mark} {c.kind:<11} {c.complexity:>3} {_fmt(cv['objective']):>7} {_fmt(cv['error']):>7} "
                   f"{_fmt(cv['spearman'], 3):>7} {_fmt(cv['regret']):>9}  "
                   f"{closedform.shorten(c.formula or _BASELINE_TEXT[c.kind])}")
    echo("")
    echo(model.describe_choice())
    if model.nested_:
        nested = model.nested_
        echo(f"nested cross-validation of the whole fit ({nested['folds']} folds): Spearman "
                   f"{nested['procedure']['spearman']:.3f} vs last value {nested['last']['spearman']:.3f}; "
                   + ("kept" if nested["better"] else "not better: the last value is used"))
    if model.holdout_scores_:
        echo("")
        echo(f"held-out tasks ({', '.join(holdout_task)}), mean over tasks:")
        for line in _scores_table({k: {"mean": v} for k, v in model.holdout_scores_.items()}):
            echo("  " + line)
    path = model.save(out_dir)
    echo("")
    if model.best_.kind != "power_law":
        echo(f"chosen: final = {model.formula_text()}" + (f"  (r within [{r_range[0]:.3g}, {r_range[1]:.3g}]; the "
                                                         "whole formula is in the .py and .tex files)"
                                                         if r_range else ""))
    echo(f"wrote {path}" + (" (+ .tex, .py)" if path.with_suffix(".py").exists() else ""))


_BASELINE_TEXT = {"last": "last", "last+offset": "last + scale * offset", "power_law": "power law c + a t^-alpha",
                  "linear": "a0 + sum of b_j feature_j"}


@predictors.command()
@predictor_option
@curves_option
@prefix_option
def predict(predictor_path, curves_path, prefix_frac):
    """Predict final values: one JSON line per curve {"task", "config_id", "prediction"}."""
    model = CurvePredictor.load(predictor_path)
    curves = read_curves(curves_path)
    for c, p in zip(curves, model.predict(curves, prefix_frac=prefix_frac)):
        line = {"task": c.task, "config_id": c.config_id, "prediction": float(p) if math.isfinite(p) else None}
        if line["prediction"] is None:  # JSON has no NaN: null, and why
            line["reason"] = "the prediction overflowed (not a finite number); check the curve's values"
        echo(json.dumps(line, allow_nan=False))


@predictors.command(name="eval")
@predictor_option
@curves_option
@prefix_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
def eval_command(predictor_path, curves_path, prefix_frac, as_json):
    """Score a predictor and the baselines on complete curves, per task and on average."""
    model = CurvePredictor.load(predictor_path)
    curves = read_curves(curves_path)
    frac = prefix_frac or model.config.prefix_frac
    check_complete(curves, curves_path, frac)
    rows = {"gpnas": model.score(curves, prefix_frac=frac), **score_baselines(curves, frac)}
    seen = in_sample(model, curves)
    note = (f"in-sample: the predictor was fitted on {seen} of these {plural(len(curves), 'curve')}, so its "
            "figures are optimistic; score it on curves it was not fitted on (fit with --holdout-task NAME "
            "to keep a task out)" if seen else "")
    if as_json:
        echo(json.dumps({"prefix_frac": frac, "curves": curves_path, "in_sample_curves": seen,
                         "scores": rows}, indent=1))
        return
    if note:
        echo(note)
    for task in rows["gpnas"]["per_task"]:
        n = rows["gpnas"]["per_task"][task]["n"]
        echo(f"{task} ({n} curve{'s' if n != 1 else ''})")
        per = {name: {"mean": s["per_task"][task]} for name, s in rows.items()}
        for line in _scores_table(per):
            echo("  " + line)
    echo("mean over tasks" + (" (in-sample)" if seen else ""))
    for line in _scores_table(rows):
        echo("  " + line)
    if note:
        echo(note)
