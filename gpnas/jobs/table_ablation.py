"""``gpnas ablate --table``: every mode, standard method and Optuna anchor against a
table of recorded curves, over many seeds, at one budget; anytime regret.

Each (task, method, seed) is one search through a fresh ledger over the
table's task, with the same budget in the table's cost unit (``--budget N``:
N times what training the table's median config to completion costs). A
search runs until its budget cannot pay for the next evaluation. What it
leaves is its trace: for each config it trained fully, in order, the cost
charged when it completed and its true final value; the incumbent at a cost
is the best final value completed by then (``report.regret``).

Records (``records.jsonl``, one line per finished search, appended as they
finish) carry the code version and the table's hash; running the command
again continues where it stopped, and records of other code or another table
are refused unless ``allow_mixed`` (the table then says so).
"""

from __future__ import annotations

import functools
import importlib.util
import json
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gpnas.config import preset_from_dict, preset_to_dict
from gpnas.errors import ConfigError
from gpnas.jobs.run import has_reference, make_search
from gpnas.report.guidance import choice_stats
from gpnas.runs.archive import Archive
from gpnas.runs.table import read_table, table_tasks
from gpnas.runs.tasks import replay_task, table_space
from gpnas.search.females import Features, prior_record
from gpnas.search.mating import son_statistics
from gpnas.search.state import State

OPTUNA_METHODS = ("optuna-tpe-hyperband", "optuna-random-sh", "optuna-tpe")
# the last, combined+prior (combined with its females started from --prior's formulas), runs only with a prior
ALL_METHODS = ("combined", "male", "female", "within-gender", "baseline", "random", "successive-halving",
               "regularized-evolution", *OPTUNA_METHODS, "combined+prior")
PRIOR_METHOD = "combined+prior"
MAX_GENERATIONS = 2000   # a search whose budget never runs out (a small table, all cached) stops here


@dataclass(frozen=True)
class TablePlan:
    table: str
    tasks: tuple[str, ...]
    methods: tuple[str, ...]
    seeds: tuple[int, ...]
    budget_curves: float | None     # budget in full-curve equivalents of the median config
    budget_cost: float | None       # or in the table's cost unit
    preset: dict
    prior: tuple = ()               # combined+prior's formulas (females.prior_formulas of --prior)
    prior_sha256: str = ""          # and the hash of the predictor file they came from


def code_version() -> str:
    """The code that made a record: the last git commit that changed the package (a commit of
    results alone does not change it), ``+changes`` when the package differs from it, and
    ``unknown`` outside a checkout."""
    try:
        out = subprocess.run(["git", "log", "-1", "--format=%h", "--abbrev=12", "--", ":/gpnas"],
                             cwd=Path(__file__).parent, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ":/gpnas"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return out.stdout.strip() + ("+changes" if dirty else "") if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def make_table_plan(table: str, tasks, methods, seeds: int, budget_curves, budget_cost, preset,
                    prior=None) -> TablePlan:
    """Check every choice before anything runs; ConfigError (one line) otherwise. ``prior``:
    the predictor file combined+prior starts from."""
    if seeds < 1:
        raise ConfigError(f"--seeds {seeds}: give at least 1 seed")
    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ConfigError(f"unknown method {unknown[0]!r}; choose among {', '.join(ALL_METHODS)}")
    if any(m in OPTUNA_METHODS for m in methods) and importlib.util.find_spec("optuna") is None:
        raise ConfigError("the Optuna anchors need Optuna: pip install 'gpnas[optuna]' "
                          "(or leave the optuna-* methods out)")
    if (PRIOR_METHOD in methods) != bool(prior):
        raise ConfigError(f"method {PRIOR_METHOD} and --prior go together: give --prior FILE with it"
                          if prior is None else f"--prior is used by method {PRIOR_METHOD}; add it to --modes")
    present = table_tasks(table)
    chosen = tuple(tasks) or tuple(present)
    recorded = {"formulas": (), "sha256": ""}
    for task in chosen:
        t = read_table(table, task)                  # a bad table or task is refused here
        table_space(preset, t)
        if prior:                                    # its formulas must read only what every task's curves have
            recorded = prior_record(prior, Features.of_task(replay_task(preset, t)[0]))
        if budget_cost is None and (budget_curves is None or budget_curves < 1):
            raise ConfigError(f"--budget {budget_curves}: a budget below one full curve trains nothing; "
                              "give at least 1")
        if budget_cost is not None and budget_cost < full_cost(t):
            raise ConfigError(f"--budget-cost {budget_cost:g} is less than one full curve of the median config "
                              f"of task {task!r} ({full_cost(t):g}); give more")
    return TablePlan(str(table), chosen, tuple(methods), tuple(range(seeds)), budget_curves, budget_cost,
                     preset_to_dict(preset), tuple(recorded["formulas"]), recorded["sha256"])


def full_cost(table) -> float:
    """What training the table's median config (by cost per step) to completion costs."""
    return float(np.median(table.cost_per_step)) * float(table.steps[-1] - table.steps[0])


@functools.lru_cache(maxsize=8)
def _table(path: str, task: str):
    return read_table(path, task)


def run_search(item: tuple) -> dict:
    """One (task, method, seed) search against the table; its record. A pure function of
    its item, so any map can run it."""
    path, task_name, method, seed, preset_dict, max_cost, *prior = item
    preset, table = preset_from_dict(preset_dict), _table(path, task_name)
    task, space = replay_task(preset, table)
    record = {"task": task_name, "method": method, "seed": seed, "budget": max_cost, "table_sha256": table.sha256}
    with tempfile.TemporaryDirectory(prefix="gpnas-ablate-") as tmp, Archive(Path(tmp) / "a.sqlite") as archive:
        mode = "random" if method in OPTUNA_METHODS else "combined" if method == PRIOR_METHOD else method
        search = make_search(preset, mode, task, archive, seed, max_cost=max_cost, space=space,
                             prior=tuple(prior[0]) if prior and method == PRIOR_METHOD else ())
        if method == "baseline" and not has_reference(search):
            return {**record, "skipped": "the table does not record the preset's reference"}
        if method in OPTUNA_METHODS:
            from gpnas.integrations.optuna_search import run_optuna

            state = State(generation=0, males=[], females=[], rng_state=())
            run_optuna(method, search.ledger, state, task.steps, seed)
        else:
            search.rankings = [] if getattr(search, "mode", None) is not None and search.mode.females else None
            state = search.run(MAX_GENERATIONS)
    record = {**record, "trace": [[float(p["flops"]), float(p["true"])] for p in state.promotions],
              "spent": float(state.compute.flops), "evaluations": state.compute.evaluations}
    if getattr(search, "rankings", None):
        # the coupling judged against the table (report.guidance): every son's candidates as
        # each ranker (mother, chosen predictor, surrogate) ranked them, against their recordings
        record["guidance"] = choice_stats(search.rankings,
                                          lambda g: task.truth(search.ledger.run_config(g), search.ledger.seed))
    if state.sons:
        stats = son_statistics(state.sons)
        record["sons"] = {k: stats[k] for k in ("guided_fraction", "paired_difference", "paired_generations")}
    return record


def run_table_ablation(out, plan: TablePlan, map_fn=None, allow_mixed: bool = False, on_record=None) -> list[dict]:
    """Run what ``out/records.jsonl`` lacks of the plan and return every record of it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    version = code_version()
    meta_path, records_path = out / "ablation.json", out / "records.jsonl"
    meta = {"plan": asdict(plan), "code": version,
            "tables": {t: _table(plan.table, t).sha256 for t in plan.tasks}}
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        if old.get("tables") != meta["tables"] and not allow_mixed:
            raise ConfigError(f"{out} holds records of another table; give another --out, or --allow-mixed")
        if (old.get("plan") or {}).get("prior_sha256", "") != plan.prior_sha256 and PRIOR_METHOD in plan.methods:
            raise ConfigError(f"{out} holds records of combined+prior started from another prior; give another --out")
        if old.get("code") != version and not allow_mixed:
            raise ConfigError(f"{out} holds records of code {old.get('code')}, this is {version}; give another "
                              "--out, or --allow-mixed to add to them (the table then says so)")
        meta["mixed"] = bool(old.get("mixed")) or old.get("code") != version
    meta_path.write_text(json.dumps(meta, indent=1))
    records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
    done = {(r["task"], r["method"], r["seed"]) for r in records}
    items = []
    for task in plan.tasks:
        table = _table(plan.table, task)
        max_cost = plan.budget_cost if plan.budget_cost is not None else plan.budget_curves * full_cost(table)
        for method in plan.methods:
            for seed in plan.seeds:
                if (task, method, seed) not in done:
                    items.append((plan.table, task, method, seed, plan.preset, max_cost, tuple(plan.prior)))
    chunk = max(1, 2 * getattr(map_fn, "workers", 1))
    for start in range(0, len(items), chunk):
        batch = items[start:start + chunk]
        results = map_fn(run_search, batch) if map_fn is not None else [run_search(i) for i in batch]
        with open(records_path, "a", encoding="utf-8") as f:
            for item, result in zip(batch, results):
                if not isinstance(result, dict):    # a parallel.Failure: reported, tried again next time
                    if on_record:
                        on_record({"task": item[1], "method": item[2], "seed": item[3],
                                   "failed": getattr(result, "reason", str(result))})
                    continue
                result["code"] = version
                f.write(json.dumps(result) + "\n")
                records.append(result)
                if on_record:
                    on_record(result)
    wanted = {(t, m, s) for t in plan.tasks for m in plan.methods for s in plan.seeds}
    return [r for r in records if (r["task"], r["method"], r["seed"]) in wanted]



def write_table_report(out, plan: TablePlan, records: list[dict]) -> dict:
    """regret.csv, table.csv, table.md, cost_to_target.json and the plots of a table
    ablation; returns {"markdown": table.md's text, "paths": [...]}."""
    from gpnas.report import guidance as gd
    from gpnas.report import regret as rg

    out = Path(out)
    rows, traces = [], {}
    for r in records:
        if r.get("skipped"):
            continue
        table = _table(plan.table, r["task"])
        rows += rg.regret_rows(r["task"], r["method"], r["seed"], r["trace"], r["budget"], table.best(),
                               table.median())
        traces.setdefault(r["task"], {}).setdefault(r["method"], {})[r["seed"]] = r["trace"]
    summary = rg.summary_table(rows)
    to_target = {task: rg.cost_to_target(by_method) for task, by_method in traces.items()}
    meta = json.loads((out / "ablation.json").read_text())
    budget = (f"{plan.budget_cost:g} cost units" if plan.budget_cost is not None
              else f"{plan.budget_curves:g} full curves of the median config")
    notes = [f"table {plan.table}, tasks {', '.join(plan.tasks)}; {len(plan.seeds)} seeds; budget {budget} "
             f"per search; preset {plan.preset['name']} ([ga] and early fraction)",
             f"code {meta['code']}" + (" (MIXED: records of several code versions)" if meta.get("mixed") else ""),
             "normalized regret = (incumbent - best in the table) / (median - best); the incumbent is the best "
             "final value among the configs a method trained fully by then (the median before any)",
             "paired tests against combined on the regret at the end of the budget: Wilcoxon signed-rank, "
             "Holm-corrected over the methods of a task"]
    paths = [out / "regret.csv", out / "table.csv", out / "table.md", out / "cost_to_target.json"]
    rg.write_csv(paths[0], rows)
    rg.write_csv(paths[1], summary)
    rg.write_markdown(paths[2], summary, "Anytime normalized regret against a table", notes)
    paths[3].write_text(json.dumps(to_target, indent=1, default=float))
    guidance = gd.guidance_rows(records)
    if guidance:
        paths.append(out / "guidance.md")
        paths[-1].write_text(gd.guidance_markdown(guidance) + "\n" + "\n".join(f"- {n}" for n in notes[:2]) + "\n")
    plots = out / "plots"
    plots.mkdir(exist_ok=True)
    for task in [*plan.tasks, *(["all"] if len(plan.tasks) > 1 else [])]:
        name = task.replace("/", "_")
        for kind, plot in (("regret", rg.plot_regret), ("rank", rg.plot_rank)):
            path = plots / f"{kind}_{name}.png"
            plot(path, rows, task)
            paths.append(path)
    return {"markdown": paths[2].read_text(), "paths": paths}
