"""The in-search protocol for learning-curve predictors: prints the table that judges them.

Per task and repetition r: shuffle the task's curves with seed r; the first N
are the archive (completed curves a predictor is fitted on); every other curve
(at most --max-query) is seen through its first k = max(4, ceil(f n)) values
and its final value is predicted. Per (task, r): Spearman of predicted vs true
finals, regret@1 (true final of the curve predicted best minus the best true
final), MAE. Averaged over repetitions, then over tasks.

With --loo (leave one task out) the archive is N curves of every *other* task
and the query is the held-out task's curves: a predictor fitted on some tasks,
applied to another.

Predictors: last value, best so far, power law, ridge regression and gradient
boosting on the same features (the anchors a practitioner would write in ten
lines: the prefix features gpnas computes, the numeric config keys and the raw
last value, predicting the final value; scikit-learn, the `bench` extra), and
gpnas (``CurvePredictor``, cross-validated choice); ``gpnas_linear`` is gpnas's
linear model alone, whatever the choice.

    python3 experiments/insearch.py --curves FILE.jsonl --archive 40 --prefix 0.1 --reps 5
    python3 experiments/insearch.py --curves taskset_dev.jsonl --archive 30 --prefix 0.2 --reps 3
    python3 experiments/insearch.py --curves taskset_dev.jsonl --archive 30 --prefix 0.2 --reps 3 --loo
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpnas.predict.baselines import predict_best, predict_last, predict_power_law  # noqa: E402
from gpnas.predict.curves import group_by_task, read_curves  # noqa: E402
from gpnas.predict.features import available, feature_matrix, prefix_anchors  # noqa: E402
from gpnas.predict.fitness import spearman  # noqa: E402
from gpnas.predict.predictor import CurvePredictor, PredictorConfig  # noqa: E402


def learned_anchor(kind: str):
    """Ridge (alpha 1, standardised inputs) or gradient boosting on the gpnas features + last value."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def predict(archive, query, frac, seed):
        found = available(archive, frac)

        def X(curves):
            cols = feature_matrix(curves, frac, found.names, found.config_keys)
            last, _ = prefix_anchors(curves, frac)
            return np.column_stack([last] + [cols[n] for n in found.names])

        y = np.array([c.values[-1] for c in archive])
        model = (make_pipeline(StandardScaler(), Ridge(alpha=1.0)) if kind == "ridge"
                 else GradientBoostingRegressor(random_state=seed))
        model.fit(X(archive), y)
        return model.predict(X(query))
    return predict


def gpnas_predictor(config: dict):
    def predict(archive, query, frac, seed):
        model = CurvePredictor(PredictorConfig(prefix_frac=frac, seed=seed, **config)).fit(archive, holdout=[])
        predict.choices.append(model.best_.kind)
        linear = next(c for c in model.equations_ if c.kind == "linear")
        predict.linear_z.append({k: linear.cv.get(k, float("nan")) for k in ("error_z", "rank_z")})
        return model.predict(query)
    predict.choices, predict.linear_z = [], []
    return predict


def gpnas_linear(archive, query, frac, seed):
    """gpnas's linear model alone, whatever the choice (what the margins decide about)."""
    model = CurvePredictor(PredictorConfig(prefix_frac=frac, seed=seed, population=4, generations=0)).fit(
        archive, holdout=[])
    return model.predict(query, i=next(i for i, c in enumerate(model.equations_) if c.kind == "linear"))


def gpnas_prior(path: str, margin: float):
    """The choice among a prior's formulas (``gpnas predictors fit`` on other curves of the
    space), the linear model and the baselines, coefficients fitted on the archive, no
    evolution: what ``gpnas evolve --prior`` starts from. The prior's formulas never saw
    the archive, so their cross-validated figures are honest."""
    from gpnas.predict import trees

    prior = CurvePredictor.load(path)
    texts = [c.tree for c in prior.equations_ if c.kind == "tree" and c.tree]

    def predict(archive, query, frac, seed):
        found = available(archive, frac)
        pset = trees.make_pset(found.names)
        population = [trees.parse_tree(t, pset) for t in texts if _reads_only(t, prior.pset, found.names)]
        model = CurvePredictor.from_trees(population, archive, frac, found.names, found.config_keys,
                                          formulas=False, seed=seed, prior=[str(t) for t in population],
                                          prior_margin=predict.margin)
        predict.choices.append(model.best_.kind)
        return model.predict(query)
    predict.choices, predict.margin = [], margin
    return predict


def _reads_only(text, pset, names) -> bool:
    from gpnas.predict import trees

    return all(n.value in names for n in trees.parse_tree(text, pset) if isinstance(getattr(n, "value", None), str))


def baseline(f):
    return lambda archive, query, frac, seed: f(query, frac)


def metrics(pred, query) -> dict:
    final = np.array([c.values[-1] for c in query])
    pred = np.nan_to_num(np.asarray(pred, dtype=np.float64), nan=1e18, posinf=1e18, neginf=-1e18)
    return {"spearman": spearman(pred, final), "regret": float(final[int(np.argmin(pred))] - final.min()),
            "mae": float(np.mean(np.abs(pred - final)))}


def splits(curves, archive_n, reps, max_query, loo):
    """(task, rep, archive, query) in the protocol's order."""
    by_task = {t: [curves[i] for i in ix] for t, ix in group_by_task(curves).items()}
    for task, own in by_task.items():
        for r in range(reps):
            rng = np.random.default_rng(r)
            if loo:
                archive = []
                for other, cs in by_task.items():
                    if other != task:
                        archive += [cs[i] for i in rng.permutation(len(cs))[:archive_n]]
                query = [own[i] for i in rng.permutation(len(own))[:max_query]]
            else:
                order = rng.permutation(len(own))
                archive = [own[i] for i in order[:archive_n]]
                query = [own[i] for i in order[archive_n:archive_n + max_query]]
            if len(query) >= 2 and len(archive) >= 8:
                yield task, r, archive, query


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--curves", required=True, help="JSON Lines curve file")
    ap.add_argument("--archive", type=int, default=40, help="completed curves per task the predictors see")
    ap.add_argument("--prefix", type=float, default=0.1, help="prefix fraction f")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--max-query", type=int, default=300)
    ap.add_argument("--loo", action="store_true", help="leave one task out: fit on the other tasks")
    ap.add_argument("--methods", default="last,best,power_law,ridge,gbm,gpnas")
    ap.add_argument("--generations", type=int, default=30, help="gpnas: GP generations")
    ap.add_argument("--population", type=int, default=200, help="gpnas: population")
    ap.add_argument("--rank-margin", type=float, default=PredictorConfig.rank_margin,
                    help="gpnas: standard errors by which an evolved formula must rank better than the last value")
    ap.add_argument("--linear-margin", type=float, default=PredictorConfig.linear_margin,
                    help="gpnas: standard errors by which the linear model's leave-one-out squared error must "
                         "beat the last value + offset's")
    ap.add_argument("--nested", action="store_true",
                    help="gpnas: also check the choice by nested cross-validation (PredictorConfig.nested)")
    ap.add_argument("--prior", help="a predictor file: adds gpnas_prior (its formulas, refitted on each archive)")
    ap.add_argument("--prior-margin", type=float, default=PredictorConfig.prior_margin,
                    help="gpnas_prior: standard errors by which a prior's formula must rank better than the last value")
    ap.add_argument("--json", help="also write the per-task results here")
    args = ap.parse_args(argv)

    curves = read_curves(args.curves)
    methods = {"last": baseline(predict_last), "best": baseline(predict_best),
               "power_law": baseline(predict_power_law), "ridge": learned_anchor("ridge"),
               "gbm": learned_anchor("gbm"), "gpnas_linear": gpnas_linear,
               "gpnas": gpnas_predictor({"generations": args.generations, "population": args.population,
                                         "rank_margin": args.rank_margin, "linear_margin": args.linear_margin,
                                         "nested": args.nested})}
    if args.prior:
        methods["gpnas_prior"] = gpnas_prior(args.prior, args.prior_margin)
    methods = {m: methods[m] for m in args.methods.split(",") + (["gpnas_prior"] if args.prior else [])}
    results = {m: {} for m in methods}
    seconds = dict.fromkeys(methods, 0.0)
    for task, r, archive, query in splits(curves, args.archive, args.reps, args.max_query, args.loo):
        for name, predict in methods.items():
            start = time.process_time()
            pred = predict(archive, query, args.prefix, r)
            seconds[name] += time.process_time() - start
            results[name].setdefault(task, []).append(metrics(pred, query))
    tasks = sorted(next(iter(results.values())))
    print(f"# in-search protocol: {Path(args.curves).name}, {len(tasks)} task(s), archive {args.archive}"
          f"{' (of every other task, leave one task out)' if args.loo else ''}, prefix {args.prefix}, "
          f"{args.reps} repetitions, at most {args.max_query} query curves")
    print(f"# machine: {platform.processor() or platform.machine()}, Python {platform.python_version()}")
    table = {}
    for name in methods:
        per_task = {t: {k: float(np.mean([row[k] for row in results[name][t]])) for k in ("spearman", "regret", "mae")}
                    for t in tasks}
        table[name] = {"mean": {k: float(np.mean([per_task[t][k] for t in tasks])) for k in ("spearman", "regret", "mae")},
                       "per_task": per_task, "per_repetition": results[name], "cpu_seconds": seconds[name]}
    print("\n| predictor | Spearman | regret@1 | MAE | CPU s |\n| --- | --- | --- | --- | --- |")
    for name, row in table.items():
        m = row["mean"]
        print(f"| {name} | {m['spearman']:.3f} | {m['regret']:.4f} | {m['mae']:.4f} | {row['cpu_seconds']:.1f} |")
    if len(tasks) > 1:
        print("\nSpearman per task:\n\n| task | " + " | ".join(methods) + " |\n| --- |" + " --- |" * len(methods))
        for t in tasks:
            print(f"| {t} | " + " | ".join(f"{table[m]['per_task'][t]['spearman']:.3f}" for m in methods) + " |")
    if "gpnas" in methods:
        choices = methods["gpnas"].choices
        print("\ngpnas chose: " + ", ".join(f"{k} {choices.count(k)}" for k in sorted(set(choices)))
              + f" (of {len(choices)} fits)")
        table["gpnas"]["choices"] = {k: choices.count(k) for k in set(choices)}
        z = methods["gpnas"].linear_z
        print("the linear model's leave-one-out gains, in standard errors, per fit (squared error over the last "
              "value + offset / Spearman over the last value): " + " ".join(f"{v['error_z']:+.2f}/{v['rank_z']:+.2f}"
                                                                         for v in z))
        table["gpnas"]["linear_z"] = [{k: x if np.isfinite(x) else None for k, x in v.items()} for v in z]
    if "gpnas_prior" in methods:
        choices = methods["gpnas_prior"].choices
        print("\ngpnas_prior chose: " + ", ".join(f"{k} {choices.count(k)}" for k in sorted(set(choices)))
              + f" (of {len(choices)} fits)")
        table["gpnas_prior"]["choices"] = {k: choices.count(k) for k in set(choices)}
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "table": table}, indent=1) + "\n")


if __name__ == "__main__":
    main()
