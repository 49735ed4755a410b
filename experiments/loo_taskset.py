"""Leave-one-task-out study of the evolved curve predictors on TaskSet curves.

    python3 experiments/loo_taskset.py [--seeds 0 1 2] [--population 300] [--generations 30]

For every task: fit on the other tasks' curves (every curve, no subsampling
unless --max-per-task), evaluate on the held-out task at prefix fraction
0.2, next to the baselines (last value, best so far, power law). Several
seeds per fold, since one GP run is noisy. Writes
results/predictors/loo_taskset.{md,json}, command.txt and machine.txt.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout, uninstalled

from gpnas.predict.curves import read_curves  # noqa: E402
from gpnas.predict.predictor import CurvePredictor, PredictorConfig, score_baselines  # noqa: E402

DEFAULT_CURVES = next((p / "shared/data/curves/taskset_dev.jsonl" for p in (ROOT.parent, ROOT.parent.parent)
                       if (p / "shared/data/curves/taskset_dev.jsonl").exists()),
                      ROOT.parent / "shared/data/curves/taskset_dev.jsonl")
METRICS = ("mae", "median_ae", "spearman", "regret")


def short(task: str) -> str:
    return task.split("imdb_")[-1] if "imdb_" in task else task


def run(args) -> dict:
    curves = read_curves(args.curves)
    rng = np.random.default_rng(0)
    tasks = sorted({c.task for c in curves})
    if args.max_per_task:
        keep = []
        for t in tasks:
            ix = [i for i, c in enumerate(curves) if c.task == t]
            keep += sorted(rng.choice(ix, min(len(ix), args.max_per_task), replace=False).tolist())
        curves = [curves[i] for i in sorted(keep)]
    folds = []
    for task in tasks:
        hold = [c for c in curves if c.task == task]
        train = [c for c in curves if c.task != task]
        baselines = score_baselines(hold, args.prefix_frac)
        runs = []
        for seed in args.seeds:
            start = time.perf_counter()
            config = PredictorConfig(prefix_frac=args.prefix_frac, population=args.population,
                                     generations=args.generations, seed=seed)
            model = CurvePredictor(config).fit(train, holdout=hold)
            score = model.score(hold)["per_task"][task]
            runs.append({"seed": seed, "seconds": time.perf_counter() - start,
                         "tree": model.best_["tree"], "formula": str(model.sympy()),
                         "complexity": model.best_["complexity"], **{m: score[m] for m in METRICS}})
            print(f"{short(task):40s} seed {seed}: spearman {score['spearman']:.4f} regret "
                  f"{score['regret']:.4f} ({runs[-1]['seconds']:.1f}s)  {model.best_['tree']}", flush=True)
        evolved = {m: float(np.mean([r[m] for r in runs])) for m in METRICS}
        folds.append({"task": task, "n_train": len(train), "n_holdout": len(hold), "runs": runs,
                      "evolved": evolved,
                      "baselines": {b: s["per_task"][task] for b, s in baselines.items()}})
    names = ["evolved", "last", "best", "power_law"]

    def fold_scores(f, name):
        return f["evolved"] if name == "evolved" else f["baselines"][name]

    mean = {n: {m: float(np.mean([fold_scores(f, n)[m] for f in folds])) for m in METRICS} for n in names}
    per_seed = {str(s): {m: float(np.mean([f["runs"][i][m] for f in folds])) for m in METRICS}
                for i, s in enumerate(args.seeds)}
    wins = {m: int(sum(f["evolved"][m] > f["baselines"]["last"][m] if m == "spearman"
                   else f["evolved"][m] < f["baselines"]["last"][m] for f in folds)) for m in ("spearman", "regret")}
    ties = {m: int(sum(np.isclose(f["evolved"][m], f["baselines"]["last"][m]) for f in folds))
            for m in ("spearman", "regret")}
    return {"curves": str(args.curves), "prefix_frac": args.prefix_frac, "seeds": args.seeds,
            "population": args.population, "generations": args.generations,
            "max_per_task": args.max_per_task, "folds": folds, "mean": mean,
            "evolved_mean_per_seed": per_seed, "evolved_vs_last_wins": wins, "evolved_vs_last_ties": ties}


def markdown(res) -> str:
    names = ["evolved", "last", "best", "power_law"]
    out = [f"# Leave-one-task-out, TaskSet curves, prefix fraction {res['prefix_frac']}", "",
           f"Fit on five tasks, evaluated on the sixth; evolved = mean over seeds {res['seeds']} "
           f"(population {res['population']}, {res['generations']} generations); "
           + ("all curves of every task." if not res["max_per_task"]
              else f"at most {res['max_per_task']} curves per task (random subsample)."), "",
           "## Mean over held-out tasks", "",
           "| predictor | MAE | median AE | Spearman | regret |", "| --- | ---: | ---: | ---: | ---: |"]
    for n in names:
        m = res["mean"][n]
        out.append(f"| {n} | {m['mae']:.4g} | {m['median_ae']:.4g} | {m['spearman']:.4f} | {m['regret']:.4f} |")
    w, t = res["evolved_vs_last_wins"], res["evolved_vs_last_ties"]
    out += ["", f"Evolved beats last value on Spearman in {w['spearman']} of {len(res['folds'])} tasks "
            f"({t['spearman']} ties), on regret in {w['regret']} ({t['regret']} ties).", "",
            "Evolved, mean over tasks, per seed:", ""]
    for s, m in res["evolved_mean_per_seed"].items():
        out.append(f"- seed {s}: Spearman {m['spearman']:.4f}, regret {m['regret']:.4f}, "
                   f"median AE {m['median_ae']:.4g}")
    out += ["", "## Per held-out task", ""]
    for f in res["folds"]:
        out += [f"### {short(f['task'])} ({f['n_holdout']} curves; trained on {f['n_train']})", "",
                "| predictor | MAE | median AE | Spearman | regret |", "| --- | ---: | ---: | ---: | ---: |"]
        for n in names:
            m = f["evolved"] if n == "evolved" else f["baselines"][n]
            out.append(f"| {n} | {m['mae']:.4g} | {m['median_ae']:.4g} | {m['spearman']:.4f} | {m['regret']:.4f} |")
        out += ["", "Evolved formulas (final value; `last`, `scale` = v_k, |v_1|):", ""]
        for r in f["runs"]:
            out.append(f"- seed {r['seed']}: `{r['formula']}` (Spearman {r['spearman']:.4f}, "
                       f"regret {r['regret']:.4f})")
        out.append("")
    return "\n".join(out) + "\n"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--curves", default=str(DEFAULT_CURVES))
    ap.add_argument("--prefix-frac", type=float, default=0.2)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--population", type=int, default=PredictorConfig.population)
    ap.add_argument("--generations", type=int, default=PredictorConfig.generations)
    ap.add_argument("--max-per-task", type=int, default=0, help="subsample curves per task (0: all)")
    ap.add_argument("--out", default=str(ROOT / "results/predictors"))
    args = ap.parse_args(argv)
    start = time.perf_counter()
    res = run(args)
    res["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "loo_taskset.json").write_text(json.dumps(res, indent=1) + "\n")
    (out / "loo_taskset.md").write_text(markdown(res))
    (out / "command.txt").write_text("python3 experiments/loo_taskset.py "
                                     + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])) + "\n")
    (out / "machine.txt").write_text(
        f"{platform.platform()}\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs "
        f"(shared with other jobs)\nPython {platform.python_version()}, numpy {np.__version__}\n"
        f"study wall time: {res['seconds']:.0f} s\n")
    print(markdown(res).split("## Per held-out task")[0])
    print(f"wrote {out}/loo_taskset.md, .json, command.txt, machine.txt ({res['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
