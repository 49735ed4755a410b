"""Ablations: every mode and the standard methods at equal compute, over seeds.

The loop, as ``run_ablation`` executes it::

    for seed in seeds:
        combined first: its spend over --generations, in training FLOPs,
            is the seed's budget (unless --budget-flops fixes one for all)
        every other mode: run until the budget is spent (never beyond it),
            at most GENERATION_CAP x --generations generations
    results.json <- one record per run; table and plots from it

Each run is an ordinary run folder, OUT/runs/<mode>-s<seed>, and all of them
share one archive, OUT/archive.sqlite, so an identical evaluation is never
trained twice (each run is still charged for every evaluation it uses). Running
the same command again skips finished runs and resumes an interrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpnas.config import preset_to_dict
from gpnas.errors import ConfigError
from gpnas.jobs.run import check_unchanged, execute, new_run, open_run
from gpnas.runs.archive import Archive
from gpnas.runs.folder import read_json, write_json
from gpnas.search.engine import MODES
from gpnas.search.methods import METHODS

# the modes of docs/design.md's table, in the order tables list them
ALL_MODES = ("baseline", "male", "female", "combined", "within-gender", "random", "successive-halving",
             "regularized-evolution")
REFERENCE_MODE = "combined"
# a budgeted run ends when its budget is spent; this bounds a run that stops spending
GENERATION_CAP = 10
FORMAT = "gpnas-ablation"


@dataclass(frozen=True)
class Plan:
    """What an ablation computes; saved as OUT/ablation.json and checked on resume."""

    preset: object
    generations: int
    seeds: tuple[int, ...]
    modes: tuple[str, ...]
    budget_flops: int | None = None

    def check(self) -> None:
        unknown = [m for m in self.modes if m not in ALL_MODES]
        if unknown:
            raise ConfigError(f"unknown mode {unknown[0]!r}; choose from {', '.join(ALL_MODES)}")
        if not self.modes:
            raise ConfigError(f"no modes given; choose from {', '.join(ALL_MODES)}")
        if not self.seeds:
            raise ConfigError("--seeds must be at least 1")
        if self.generations < 1:
            raise ConfigError(f"--generations must be at least 1, got {self.generations}")
        if self.budget_flops is not None and self.budget_flops < 1:
            raise ConfigError(f"--budget-flops must be at least 1, got {self.budget_flops}")
        if self.budget_flops is None and REFERENCE_MODE not in self.modes:
            raise ConfigError(f"without --budget-flops the {REFERENCE_MODE} mode sets the budget; "
                              f"add {REFERENCE_MODE} to --modes or give --budget-flops")

    def ordered_modes(self) -> list[str]:
        """The modes in table order; the budget-setting combined mode runs first."""
        modes = [m for m in ALL_MODES if m in self.modes]
        return sorted(modes, key=lambda m: m != REFERENCE_MODE) if self.budget_flops is None else modes


def make_plan(preset, generations: int, n_seeds: int, modes, budget_flops: int | None = None) -> Plan:
    """Seeds are the preset's seed and the next ``n_seeds - 1`` integers."""
    if n_seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {n_seeds}")
    plan = Plan(preset, generations, tuple(preset.seed + i for i in range(n_seeds)),
                tuple(dict.fromkeys(modes)), budget_flops)
    plan.check()
    return plan


def run_name(mode: str, seed: int) -> str:
    return f"{mode}-s{seed}"


def prepare(out, plan: Plan, dataset) -> None:
    """Create OUT/ablation.json, or check that an existing one describes the same ablation.

    Seeds and modes may grow between calls (more runs); the preset, the
    generations, the budget and the data may not.
    """
    out = Path(out)
    meta = {"format": FORMAT, "preset": preset_to_dict(plan.preset), "generations": plan.generations,
            "budget_flops": plan.budget_flops, "data_sha256": dataset.sha256}
    path = out / "ablation.json"
    if path.exists():
        old = read_json(path)
        changed = [k for k in meta if old.get(k) != meta[k]]
        if changed:
            raise ConfigError(f"{out} holds an ablation with another {', '.join(changed)}; rerun it with its "
                              "original options to continue, or choose another --out")
        return
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, {**meta, "created": datetime.now().isoformat(timespec="seconds")})


def run_ablation(out, plan: Plan, dataset, dataset_loader, map_fn=None, device: str = "auto", threads=None,
                 on_run=None, on_generation=None) -> list[dict]:
    """Run (or continue) every run of the plan; returns the records in results.json.

    ``on_run(event, mode, seed, info)`` hears "start", "resume", "skip" and
    "done"; ``on_generation(mode, seed, state, row)`` every generation.
    """
    out = Path(out)
    prepare(out, plan, dataset)
    records = {(r["mode"], r["seed"]): r for r in load_results(out)}
    for seed in plan.seeds:
        budget = plan.budget_flops
        for mode in plan.ordered_modes():
            sets_budget = mode == REFERENCE_MODE and plan.budget_flops is None
            limit = None if sets_budget else budget
            generations = plan.generations if limit is None else plan.generations * GENERATION_CAP

            def callback(state, row, mode=mode, seed=seed):
                if on_generation:
                    on_generation(mode, seed, state, row)

            record = run_one(out, plan.preset, mode, seed, dataset, dataset_loader, generations, limit,
                             map_fn, device, threads, on_run, [callback])
            records[(mode, seed)] = record
            write_results(out, records.values())
            if sets_budget:
                budget = record["compute"]["flops"]
    return sorted(records.values(), key=lambda r: (ALL_MODES.index(r["mode"]), r["seed"]))


def run_one(out: Path, preset, mode: str, seed: int, dataset, dataset_loader, generations: int,
            limit: int | None, map_fn, device, threads, on_run, callbacks) -> dict:
    """One run folder: skipped when finished, resumed when interrupted, else started."""
    folder = out / "runs" / run_name(mode, seed)
    info = {"folder": str(folder), "budget_flops": limit}
    if (folder / "record.json").exists():  # written last: the run is finished
        if on_run:
            on_run("skip", mode, seed, info)
        return read_json(folder / "record.json")
    if (folder / "run.json").exists():
        run = open_run(folder, dataset_loader, str(Path(dataset.text_path).parent))
        check_unchanged(run, preset, mode, seed)
        event = "resume"
    else:
        run = new_run(folder, preset, mode, seed, dataset, archive_path=out / "archive.sqlite")
        event = "start"
    if on_run:
        on_run(event, mode, seed, info)
    summary, _ = execute(run, generations, map_fn=map_fn, device=device, threads=threads,
                         callbacks=callbacks, max_flops=limit)
    record = make_record(summary, limit, out / "archive.sqlite")
    write_json(folder / "record.json", record)
    if on_run:
        on_run("done", mode, seed, {**info, "record": record})
    return record


def make_record(summary: dict, budget_flops: int | None, archive_path: Path) -> dict:
    """What the table and plots need from one run: its best architecture with
    metrics and learning curve, and every completed evaluation with the
    compute spent when it finished."""
    best = summary["best_architecture"]
    curve = None
    if best is not None:
        with Archive(archive_path) as archive:
            record = archive.get(best["key"])
        if record is not None and record.result is not None:
            c = record.result["curve"]
            curve = {"train_loss": c["train_loss"], "eval_steps": c["eval_steps"], "val_loss": c["val_loss"],
                     "eval_train_loss": c.get("eval_train_loss")}
    return {
        "mode": summary["mode"],
        "seed": summary["seed"],
        "budget_flops": budget_flops,
        "generations": summary["generations"],
        "budget_exhausted": summary["budget_exhausted"],
        "compute": summary["compute"],
        "best": best,
        "best_curve": curve,
        "completions": [{k: p.get(k) for k in ("generation", "tokens", "flops", "true", "predicted", "raw", "key")}
                        for p in summary["promotions"]],
        "mating": summary.get("mating"),
        "failures": len(summary["failures"]),
        "wall_seconds": summary["timing"]["wall_seconds"],
        "cache": summary["cache"],
    }


def modes_in(records) -> list[str]:
    """The modes that have results, in the table's order."""
    return [m for m in ALL_MODES if any(r["mode"] == m for r in records)]


def complete_seeds(records) -> tuple[list[dict], list[int]]:
    """The records of the seeds every mode has finished, and the seeds left out: an
    interrupted ablation's table compares modes on the same seeds only."""
    modes = set(modes_in(records))
    seeds = sorted({r["seed"] for r in records})
    done = {s for s in seeds if {r["mode"] for r in records if r["seed"] == s} == modes}
    return [r for r in records if r["seed"] in done], [s for s in seeds if s not in done]


def load_results(out) -> list[dict]:
    path = Path(out) / "results.json"
    return read_json(path)["runs"] if path.exists() else []


def write_results(out: Path, records) -> None:
    runs = sorted(records, key=lambda r: (ALL_MODES.index(r["mode"]), r["seed"]))
    write_json(Path(out) / "results.json", {"format": FORMAT, "runs": runs})


assert set(ALL_MODES) == set(MODES) | set(METHODS), "every engine mode and method is an ablation mode"
