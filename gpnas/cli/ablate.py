"""``gpnas ablate``: every mode against the standard methods, at equal compute, over seeds."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import click

from gpnas.cli.options import backend_options, data_dir_option, device_options, make_backend
from gpnas.cli.output import echo


def _f(x, spec=".4f"):
    return "n/a" if x is None else format(x, spec)


@click.command("ablate")
@click.option("--preset", default="cpu-small", show_default=True,
              help="Preset name (micro, cpu-small, shakespeare-char) or a TOML file.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a preset value, e.g. ga.n_males=6 (repeatable).")
@click.option("--generations", type=int, default=20, show_default=True,
              help="Generations of the combined mode; its spend is every mode's FLOPs budget.")
@click.option("--seeds", type=int, default=None,
              help="Seeds per mode: the preset's seed and the next ones.  [default: 5; with --table, 50]")
@click.option("--modes", default=None, metavar="M1,M2,...",
              help="Comma-separated modes.  [default: all: baseline, male, female, combined, within-gender, "
                   "random, successive-halving, regularized-evolution]")
@click.option("--budget-flops", type=float, default=None,
              help="Training FLOPs per run, the same for every mode, e.g. 2e12.  [default: what combined spends]")
@click.option("--out", type=click.Path(file_okay=False), required=True,
              help="Ablation folder; run the same command again to continue an interrupted ablation.")
@click.option("--table", type=click.Path(dir_okay=False), default=None,
              help="Search a table of recorded curves instead of training (docs/tables.md): every mode, "
                   "standard method and Optuna anchor, anytime regret.")
@click.option("--task", "tasks", multiple=True, help="A task of the table (repeatable).  [default: every task]")
@click.option("--budget", type=float, default=20.0, show_default=True,
              help="With --table: each search's budget in full curves of the table's median config.")
@click.option("--budget-cost", type=float, default=None,
              help="With --table: each search's budget in the table's cost unit, instead of --budget.")
@click.option("--allow-mixed", is_flag=True,
              help="With --table: add to records made by other code (the table then says so).")
@click.option("--prior", type=click.Path(dir_okay=True), default=None,
              help="With --table: also run combined+prior, combined with its females started from this "
                   "predictor file's formulas (gpnas evolve --prior).")
@data_dir_option
@device_options
@backend_options
def ablate_command(preset, overrides, generations, seeds, modes, budget_flops, out, table, tasks, budget,
                   budget_cost, allow_mixed, prior, data_dir, device, threads, backend, workers, address):
    """Compare every mode with baseline, random search, successive halving and
    regularized evolution at the same budget of training FLOPs (6 N + 12 L H Q T per
    token, nanoGPT's estimate_mfu), over several seeds.

    Each run is a run folder OUT/runs/MODE-sSEED sharing OUT/archive.sqlite.
    Prints a line per run and generation, then the table (also written to
    OUT/table.md and OUT/table.csv) and the plots' paths (OUT/plots/).
    """
    from gpnas.config import load_preset
    from gpnas.errors import ConfigError

    if table:
        return _table_ablate(load_preset(preset, overrides), table, tasks, modes, 50 if seeds is None else seeds,
                             budget, budget_cost, allow_mixed, out, backend, workers, address, threads, prior)
    if prior:
        raise ConfigError("--prior is for table ablations (--table FILE); a training ablation has no prior")
    seeds = 5 if seeds is None else seeds
    from gpnas.jobs.ablation import ALL_MODES, make_plan, run_ablation
    from gpnas.report.ablation import write_plots, write_tables
    from gpnas.train.data import load_dataset

    chosen = list(ALL_MODES) if modes is None else [m.strip() for m in modes.split(",") if m.strip()]
    if budget_flops is not None and not math.isfinite(budget_flops):
        raise ConfigError(f"--budget-flops must be a finite number, got {budget_flops}")
    budget_flops = None if budget_flops is None else int(budget_flops)
    plan = make_plan(load_preset(preset, overrides), generations, seeds, chosen, budget_flops)
    dataset = load_dataset(data_dir)
    budget = (f"{budget_flops:.3g} FLOPs per run" if budget_flops else
              f"the combined mode's spend over {generations} generations")
    echo(f"ablation {out}: preset {plan.preset.name}, seeds {', '.join(map(str, plan.seeds))}, "
         f"modes {', '.join(plan.ordered_modes())}; budget: {budget}")

    def on_run(event, mode, seed, info):
        name = f"{mode} s{seed}"
        if event == "done":
            r = info["record"]
            best = r["best"] or {}
            echo(f"{name}: done in {_f(r['wall_seconds'], '.1f')} s: best final val loss "
                 f"{_f(best.get('final_val_loss'))}, {r['compute']['flops']:.3g} FLOPs "
                 f"({r['compute']['tokens']:,} tokens) in "
                 f"{r['compute']['evaluations']} evaluations, {r['generations']} generations")
        else:
            limit = info["budget_flops"]
            echo(f"{name}: {event} ({'no budget: sets it' if limit is None else f'budget {limit:.3g} FLOPs'})"
                 f"  {info['folder']}")

    def on_generation(mode, seed, state, row):
        echo(f"  {mode} s{seed} gen {row['generation']:3d}  evaluated {row['evaluated']:2d}  "
                   f"cache hits {row['cache_hits']:2d}  best true {_f(row['best_true'])}  "
             f"FLOPs {row['flops']:.3g}  tokens {row['tokens']:,}"
             + (f"  FAILED {row['failed']}: {row['failure'][:120]}" if row.get("failed") else ""))

    try:
        with make_backend(backend, workers, address, threads) as map_fn:
            records = run_ablation(out, plan, dataset, load_dataset, map_fn=map_fn, device=device, threads=threads,
                                   on_run=on_run, on_generation=on_generation)
    except KeyboardInterrupt:
        echo("\ninterrupted; finished runs and generations are saved. Run the same command again "
             "to continue.", err=True)
        sys.exit(130)
    modes_done = [m for m in ALL_MODES if m in plan.modes]  # table order
    tables = write_tables(records, modes_done, Path(out))
    plots = write_plots(records, modes_done, Path(out) / "plots")
    echo("")
    echo(tables["markdown"])
    echo("written: " + ", ".join(str(p) for p in [*tables["paths"], *plots]))


def _table_ablate(preset, table, tasks, methods, seeds, budget, budget_cost, allow_mixed, out, backend, workers,
                  address, threads, prior=None):
    """``gpnas ablate --table``: every method per task and seed against the table (jobs.table_ablation)."""
    from gpnas.jobs.table_ablation import ALL_METHODS, make_table_plan, run_table_ablation, write_table_report

    chosen = ([*ALL_METHODS[:-1], *(["combined+prior"] if prior else [])] if methods is None
              else [m.strip() for m in methods.split(",") if m.strip()])
    if budget_cost is not None and not (math.isfinite(budget_cost) and budget_cost > 0):
        raise click.BadParameter(f"--budget-cost must be a positive number, got {budget_cost}")
    plan = make_table_plan(table, tasks, chosen, seeds, budget, budget_cost, preset, prior)
    echo(f"table ablation {out}: {table}, tasks {', '.join(plan.tasks)}; methods {', '.join(plan.methods)}; "
         f"{seeds} seeds; budget {budget_cost if budget_cost is not None else f'{budget:g} full curves'} each")

    def on_record(r):
        if r.get("failed"):
            echo(f"{r['task']} {r['method']} s{r['seed']}: FAILED {r['failed']} (run again to retry)")
        elif r.get("skipped"):
            echo(f"{r['task']} {r['method']} s{r['seed']}: skipped: {r['skipped']}")
        else:
            best = min((t[1] for t in r["trace"]), default=None)
            echo(f"{r['task']} {r['method']} s{r['seed']}: best final {_f(best)} after {len(r['trace'])} full "
                 f"curves, {r['spent']:.4g} of {r['budget']:.4g} spent")

    try:
        with make_backend(backend, workers, address, threads) as map_fn:
            records = run_table_ablation(out, plan, map_fn, allow_mixed, on_record)
    except KeyboardInterrupt:
        echo("\ninterrupted; finished searches are saved. Run the same command again to continue.", err=True)
        sys.exit(130)
    report = write_table_report(out, plan, records)
    echo("")
    echo(report["markdown"])
    echo("written: " + ", ".join(str(p) for p in report["paths"]))
