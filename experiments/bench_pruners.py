"""Benchmark: Optuna's pruners against gpnas's PredictorPruner on real gpnas training.

    python3 experiments/bench_pruners.py [--preset cpu-small] [--trials 40] [--seeds 0 1 2]
                                         [--data-dir DIR] [--out results/pruners] [--work DIR]

Per seed, one Optuna study (SQLite storage, ``RandomSampler(seed)``) per pruner.
The objective samples n_layer, n_head, n_embd, dropout and learning_rate inside
the preset's space, trains that small gpnas model with
``gpnas.train.trainer.train`` (the preset's budget, ``threads=1``) and reports
the validation loss at every evaluation with ``trial.report``; a pruned trial
stops training at that evaluation.

The random sampler draws the same configurations in the same order whatever
the pruner does, and training is deterministic (same config, seed and thread
count: the same curve), so each configuration is trained once, by the first
study that needs it further than any before, and its recorded validation
losses are replayed to the other studies: reports, pruning decisions and the
steps charged are what retraining would give, at a fraction of the CPU. The
script checks this once at the end by retraining one configuration and
comparing its curve to the recording.

Per pruner it prints (and writes to OUT/pruners.json and OUT/pruners.csv):
training steps spent (mean over seeds, and relative to NopPruner), the best
final validation loss found among unpruned trials (mean over seeds, and its
gap to NopPruner's best), and in how many seeds NopPruner's best trial was
pruned.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout, uninstalled

import numpy as np  # noqa: E402
import optuna  # noqa: E402

from gpnas.config import load_preset  # noqa: E402
from gpnas.integrations.optuna import PredictorPruner  # noqa: E402
from gpnas.predict.curves import Curve  # noqa: E402
from gpnas.predict.predictor import CurvePredictor, PredictorConfig  # noqa: E402
from gpnas.search.males import train_config_dict  # noqa: E402
from gpnas.train.data import load_dataset  # noqa: E402
from gpnas.train.trainer import TrainConfig, train  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


PRUNERS = ("NopPruner", "MedianPruner", "MedianPruner(warmup)", "SuccessiveHalvingPruner", "HyperbandPruner",
           "PredictorPruner", "PredictorPruner(last)", "PredictorPruner(other seeds)")


def make_pruner(name: str, seed: int, prefix_frac: float, warmup: int, pretrained=None):
    """A fresh pruner. Optuna's as their defaults have them (MedianPruner also with the
    warm-up PredictorPruner's prefix needs), all with the same 5 startup trials.
    ``pretrained``: a predictor.json fitted on the other seeds' complete curves (None: skip)."""
    if name == "NopPruner":
        return optuna.pruners.NopPruner()
    if name == "MedianPruner":
        return optuna.pruners.MedianPruner(n_startup_trials=5)
    if name == "MedianPruner(warmup)":
        return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=warmup)
    if name == "SuccessiveHalvingPruner":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "HyperbandPruner":
        return optuna.pruners.HyperbandPruner()
    if name == "PredictorPruner":
        return PredictorPruner(n_startup_trials=5, prefix_frac=prefix_frac, refit_every=4, min_fit_trials=10,
                               predictor_config=PredictorConfig(prefix_frac=prefix_frac, population=200,
                                                                generations=20, seed=seed))
    if name == "PredictorPruner(last)":
        return PredictorPruner("last", n_startup_trials=5, prefix_frac=prefix_frac)
    if name == "PredictorPruner(other seeds)":
        return PredictorPruner(pretrained, n_startup_trials=5) if pretrained else None
    raise ValueError(f"unknown pruner {name!r}; choose from {', '.join(PRUNERS)}")


def fit_on_other_seeds(recordings, seed: int, seeds, budget, folder: Path):
    """A predictor fitted on the complete recorded curves of the other seeds' studies (a
    previous study's curves, as the README's workflow has it); None without other seeds."""
    curves = []
    for key, rec in recordings.data.items():
        d = json.loads(key)
        if d["seed"] != seed and d["seed"] in seeds and rec["done"] >= budget.full_iters and not rec["diverged"]:
            curves.append(Curve(values=np.array(rec["val_loss"]), task="cpu-small", config_id=key,
                                config=d["arch"]))
    if len(curves) < 8:
        return None
    model = CurvePredictor(PredictorConfig(prefix_frac=budget.prefix_frac, seed=seed)).fit(curves)
    return model.save(folder / f"predictor-s{seed}")


def suggest(trial, space) -> dict:
    """One architecture inside the preset's space (the same genes gpnas evolves)."""
    def pick(name, spec, integer=False):
        if spec.choices is not None:
            return trial.suggest_categorical(name, list(spec.choices))
        if integer:
            return trial.suggest_int(name, int(spec.min), int(spec.max))
        return trial.suggest_float(name, spec.min, spec.max, log=spec.log)
    arch = {"n_layer": pick("n_layer", space.n_layer, True), "n_head": pick("n_head", space.n_head, True),
            "n_embd": pick("n_embd", space.n_embd, True), "dropout": pick("dropout", space.dropout),
            "learning_rate": pick("learning_rate", space.learning_rate)}
    if arch["n_embd"] % arch["n_head"]:  # not in cpu-small (every n_embd divides by every n_head)
        raise optuna.TrialPruned("n_embd not divisible by n_head")
    return {k: int(v) if k in ("n_layer", "n_head", "n_embd") else float(v) for k, v in arch.items()}


class Recordings:
    """Validation curves already trained: config -> (steps, losses, steps trained to), on disk."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {}
        self.train_cpu_s = 0.0
        self.trained = 0

    @staticmethod
    def key(arch, seed):
        return json.dumps({"arch": arch, "seed": seed}, sort_keys=True)

    def get(self, arch, seed):
        return self.data.get(self.key(arch, seed))

    def put(self, arch, seed, steps, losses, done, diverged=False):
        self.data[self.key(arch, seed)] = {"steps": steps, "val_loss": losses, "done": done, "diverged": diverged}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data))
        os.replace(tmp, self.path)


class Stop(Exception):
    """Raised inside the trainer's on_eval callback when Optuna prunes the trial."""


def objective_for(preset, dataset, seed: int, recordings: Recordings, spent: dict):
    budget = preset.budget

    def objective(trial):
        arch = suggest(trial, preset.space)
        rec = recordings.get(arch, seed)
        if rec is not None:  # replay what training gave (deterministic), until pruned or its end
            for step, loss in zip(rec["steps"], rec["val_loss"]):
                spent[trial.number] = step
                trial.report(loss, step)
                if trial.should_prune():
                    raise optuna.TrialPruned()
            if rec["diverged"]:
                return math.nan  # Optuna records a failed trial
            if rec["done"] >= budget.full_iters:
                return rec["val_loss"][-1]
        steps, losses = [], []

        def on_eval(step, loss):
            steps.append(step)
            losses.append(loss)
            spent[trial.number] = step
            if rec is not None and step <= rec["steps"][-1]:
                return  # reported and judged above already
            trial.report(loss, step)
            if trial.should_prune():
                raise Stop()

        started = time.process_time()
        try:
            result = train(TrainConfig(**train_config_dict(arch, budget)), dataset, seed=seed, threads=1,
                           measure_inference=False, on_eval=on_eval)
        except Stop:
            recordings.train_cpu_s += time.process_time() - started
            recordings.trained += 1
            if rec is None or steps[-1] > rec["done"]:
                recordings.put(arch, seed, steps, losses, steps[-1])
            raise optuna.TrialPruned() from None
        recordings.train_cpu_s += time.process_time() - started
        recordings.trained += 1
        curve = result.curve
        recordings.put(arch, seed, list(curve.eval_steps), list(curve.val_loss), budget.full_iters, curve.diverged)
        if curve.diverged:
            return math.nan  # Optuna records a failed trial
        return curve.val_loss[-1]

    return objective


def run_study(name, pruner, seed, trials, storage, objective_factory):
    spent: dict[int, int] = {}
    study = optuna.create_study(study_name=name, storage=storage, direction="minimize",
                                sampler=optuna.samplers.RandomSampler(seed=seed), pruner=pruner)
    study.optimize(objective_factory(spent), n_trials=trials)
    done = study.get_trials(deepcopy=False)
    complete = [t for t in done if t.state == optuna.trial.TrialState.COMPLETE]
    best = min(complete, key=lambda t: t.value) if complete else None
    return {"steps": int(sum(spent.values())), "trials": len(done), "completed": len(complete),
            "pruned": sum(t.state == optuna.trial.TrialState.PRUNED for t in done),
            "best_final": best.value if best else math.nan, "best_trial": best.number if best else None,
            "pruned_trials": [t.number for t in done if t.state == optuna.trial.TrialState.PRUNED],
            "params": {t.number: t.params for t in done},
            "fits": getattr(pruner, "fits", None)}


def summarize(results: dict, names) -> list[dict]:
    """One row per pruner over the seeds (NopPruner is the reference)."""
    rows = []
    seeds = sorted(results)
    for name in names:
        per = [results[s][name] for s in seeds if name in results[s]]
        nop = [results[s]["NopPruner"] for s in seeds if name in results[s]]
        if not per:
            continue
        gaps = [p["best_final"] - n["best_final"] for p, n in zip(per, nop)]
        rows.append({
            "pruner": name, "seeds": len(per),
            "steps_mean": statistics.mean(p["steps"] for p in per),
            "steps_vs_nop": statistics.mean(p["steps"] / n["steps"] for p, n in zip(per, nop)),
            "best_final_mean": statistics.mean(p["best_final"] for p in per),
            "gap_to_nop_mean": statistics.mean(gaps), "gap_to_nop_max": max(gaps),
            "found_nop_best": sum(p["best_trial"] == n["best_trial"] for p, n in zip(per, nop)),
            "nop_best_pruned": sum(n["best_trial"] in p["pruned_trials"] for p, n in zip(per, nop)),
            "pruned_mean": statistics.mean(p["pruned"] for p in per),
        })
    return rows


def table(rows) -> str:
    head = ("| pruner | training steps (mean) | vs NopPruner | best final val loss (mean) | gap to Nop (mean / max) "
            "| found Nop's best trial | Nop's best trial pruned | trials pruned (mean) |")
    lines = [head, "| " + " | ".join(["---"] * 8) + " |"]
    for r in rows:
        n = r["seeds"]
        lines.append(f"| {r['pruner']} | {r['steps_mean']:,.0f} | {r['steps_vs_nop']:.2f} | "
                     f"{r['best_final_mean']:.4f} | {r['gap_to_nop_mean']:+.4f} / {r['gap_to_nop_max']:+.4f} | "
                     f"{r['found_nop_best']}/{n} | {r['nop_best_pruned']}/{n} | {r['pruned_mean']:.1f} |")
    return "\n".join(lines)


def check_replay(recordings, preset, dataset) -> bool:
    """Retrain the first fully trained recording and compare its curve with what was replayed."""
    for key, rec in recordings.data.items():
        if rec["done"] >= preset.budget.full_iters:
            d = json.loads(key)
            result = train(TrainConfig(**train_config_dict(d["arch"], preset.budget)), dataset, seed=d["seed"],
                           threads=1, measure_inference=False)
            return list(result.curve.val_loss) == rec["val_loss"]
    return False


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--data-dir", default=os.environ.get("GPNAS_DATA_DIR"))
    parser.add_argument("--out", default=str(ROOT / "results" / "pruners"))
    parser.add_argument("--work", default=None, help="SQLite storage and recordings (default: OUT/work)")
    parser.add_argument("--pruners", nargs="+", default=None, help="a subset of the pruners, NopPruner first")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    preset = load_preset(args.preset)
    dataset = load_dataset(args.data_dir, download=args.data_dir is None)
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{(work / 'studies.db').resolve()}"
    recordings = Recordings(work / "recordings.json")
    budget = preset.budget
    # the step of the prefix's last evaluation: MedianPruner(warmup) judges from where PredictorPruner starts
    warmup = budget.eval_interval * (budget.early_iters // budget.eval_interval)
    names = list(PRUNERS)
    if args.pruners:
        names = [n for n in names if n in args.pruners]
    if names[0] != "NopPruner":
        parser.error("the pruners must include NopPruner (the reference)")
    started, cpu_started = time.time(), time.process_time()
    results = {seed: {} for seed in args.seeds}
    # NopPruner first over every seed: it trains every configuration, the others replay
    plan = [(seed, "NopPruner") for seed in args.seeds] + [(s, n) for s in args.seeds for n in names[1:]]
    pretrained = {}
    for seed, name in plan:
        if name == "PredictorPruner(other seeds)" and seed not in pretrained:
            pretrained[seed] = fit_on_other_seeds(recordings, seed, args.seeds, budget, work)
        pruner = make_pruner(name, seed, budget.prefix_frac, warmup, pretrained.get(seed))
        if pruner is None:
            continue
        t0 = time.process_time()
        r = run_study(f"{name}-s{seed}-{time.time_ns()}", pruner, seed, args.trials, storage,
                      lambda spent, seed=seed: objective_for(preset, dataset, seed, recordings, spent))
        r["cpu_s"] = time.process_time() - t0
        results[seed][name] = r
        print(f"seed {seed} {name:<28} steps {r['steps']:>6}  completed {r['completed']:>3}  "
              f"pruned {r['pruned']:>3}  best {r['best_final']:.4f} (trial {r['best_trial']})  "
              f"cpu {r['cpu_s']:.0f} s", flush=True)
    rows = summarize(results, names)
    replay_ok = check_replay(recordings, preset, dataset)
    machine = (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), {platform.system()} "
               f"{platform.release()}, Python {platform.python_version()}, torch threads=1")
    command = "python3 " + " ".join([str(Path(sys.argv[0]).as_posix()), *(argv if argv is not None else sys.argv[1:])])
    report = {"command": command, "machine": machine, "preset": args.preset, "trials": args.trials,
              "seeds": args.seeds, "budget": {"full_iters": budget.full_iters, "eval_interval": budget.eval_interval},
              "predictor_prefix_frac": budget.prefix_frac, "median_warmup_steps": warmup,
              "trainings": recordings.trained, "train_cpu_s": recordings.train_cpu_s,
              "cpu_s": time.process_time() - cpu_started, "wall_s": time.time() - started,
              "replay_equals_retraining": replay_ok, "rows": rows,
              "per_seed": {str(s): {n: {k: v for k, v in r.items() if k != "params"} for n, r in res.items()}
                           for s, res in results.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "pruners.json").write_text(json.dumps(report, indent=1) + "\n")
    with open(out / "pruners.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print()
    print(table(rows))
    print(f"\n{recordings.trained} trainings, {recordings.train_cpu_s:.0f} s CPU training, "
          f"{report['cpu_s']:.0f} s CPU in all, {report['wall_s']:.0f} s wall; replay equals retraining: {replay_ok}")
    return report


if __name__ == "__main__":
    main()
