"""``gpnas predictors fit | predict | eval``: evolve, apply and score curve predictors."""

from __future__ import annotations

import json
import math

import click

from gpnas.cli.output import echo, plural
from gpnas.predict.curves import prefix_length, read_curves
from gpnas.predict.predictor import CurvePredictor, PredictorConfig, score_baselines


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
@click.option("--population", type=click.IntRange(4), default=300, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--holdout-task", multiple=True, metavar="NAME",
              help="Keep this task's curves out of fitting (repeatable). Without it, "
                   "20% of each task's curves are held out.")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for predictor.json, predictor.tex, predictor.py.")
def fit(curves_path, prefix_frac, generations, population, seed, holdout_task, out_dir):
    """Evolve predictors on complete curves; print the equations and the baselines."""
    curves = read_curves(curves_path)
    check_complete(curves, curves_path, prefix_frac or 0.2)
    config = PredictorConfig(prefix_frac=prefix_frac or 0.2, population=population,
                             generations=generations, seed=seed)
    holdout = None
    if holdout_task:
        tasks = {c.task for c in curves}
        missing = [t for t in holdout_task if t not in tasks]
        if missing:
            raise click.UsageError(f"--holdout-task {missing[0]!r} is not a task in {curves_path}; "
                                   f"tasks: {', '.join(sorted(tasks))}")
        holdout = [c for c in curves if c.task in holdout_task]
        curves = [c for c in curves if c.task not in holdout_task]
    model = CurvePredictor(config).fit(curves, holdout=holdout)
    n_valid = len(model.validation_curves_)
    echo(f"fitted on {plural(len(model.train_curves_), 'curve')} ({len(model.train_curves_) - n_valid} evolved on, "
         f"{n_valid} validation), held out {len(model.holdout_curves_)}; "
         f"{model.n_evaluated_} distinct trees evaluated")
    echo("")
    echo(f"  {'cx':>3} {'train_fit':>9} {'valid_fit':>9} {'hold_err':>9} {'spearman':>8} {'regret':>9}"
         "  formula (r; final = last + scale*clip(r, -1, 1))")
    for i, row in enumerate(model.equations_):
        mark = "*" if i == model.best_index_ else " "
        echo(f"{mark} {row['complexity']:>3} {_fmt(row['train_error']):>9} {_fmt(row['valid_fitness']):>9} "
             f"{_fmt(row['holdout_error']):>9} "
             f"{_fmt(row['spearman']):>8} {_fmt(row['regret']):>9}  {row['formula']}")
    if model.holdout_curves_:
        echo("")
        echo("held-out curves, mean over tasks:")
        rows = {"evolved": model.score(model.holdout_curves_), **model.baselines_}
        for line in _scores_table(rows):
            echo("  " + line)
    path = model.save(out_dir)
    echo("")
    echo(f"best: final = {model.sympy()}")
    echo(f"wrote {path} (+ .tex, .py)")


@predictors.command()
@predictor_option
@curves_option
@prefix_option
def predict(predictor_path, curves_path, prefix_frac):
    """Predict final values: one JSON line per curve {"task", "config_id", "prediction"}."""
    model = CurvePredictor.load(predictor_path)
    curves = read_curves(curves_path)
    for c, p in zip(curves, model.predict(curves, prefix_frac=prefix_frac)):
        echo(json.dumps({"task": c.task, "config_id": c.config_id, "prediction": float(p)}))


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
    rows = {"evolved": model.score(curves, prefix_frac=frac), **score_baselines(curves, frac)}
    if as_json:
        echo(json.dumps({"prefix_frac": frac, "curves": curves_path, "scores": rows}, indent=1))
        return
    for task in rows["evolved"]["per_task"]:
        echo(f"{task} ({plural(rows['evolved']['per_task'][task]['n'], 'curve')})")
        per = {name: {"mean": s["per_task"][task]} for name, s in rows.items()}
        for line in _scores_table(per):
            echo("  " + line)
    echo("mean over tasks")
    for line in _scores_table(rows):
        echo("  " + line)
