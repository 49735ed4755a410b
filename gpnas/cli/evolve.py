"""``gpnas evolve`` and ``gpnas show``: the main job and its summary."""

from __future__ import annotations

import json
import re
import shlex
import signal
import sys
import threading

import click

from gpnas.cli.options import backend_options, data_dir_option, device_options, make_backend
from gpnas.cli.output import Progress, echo
from gpnas.search.engine import MODES

DEFAULT_GENERATIONS = 20


LINE_WIDTH = 100  # a generation line fits a 100-column terminal; --verbose adds a second line


def _generation_line(state, row, unit: str = "FLOPs") -> str:
    """One generation at a glance, at most LINE_WIDTH columns, with units:

        gen  20  trained  8  best loss 2.2801  predicted 2.3501  early 90.3 loss/Mtok  1.2e13 FLOPs

    trained: new evaluations this generation (cache hits: --verbose); best loss: the best
    true final validation loss so far; predicted: the best male's calibrated predicted final
    loss this generation, and early his early score (validation loss fallen per million
    training tokens), left out while there is none (generation 0); FLOPs: training charged
    so far (its tokens, steps and seconds: --verbose). FAILED N: failed evaluations, their reason cut to fit (--verbose and the
    summary give it whole). ``unit="cost"``: a foreign table's cost unit (the early score is
    then the loss fallen per unit of cost).
    """
    def f(x, spec=".4f"):
        return "n/a" if x is None else format(x, spec)

    flops = re.sub(r"e\+0*", "e", format(row.get("flops", 0), ".1e"))  # 1.2e13, 1.1e9, 2.0e12
    score = row.get("best_early_score")
    per = "loss/Mtok" if unit == "FLOPs" else f"loss/{unit}"
    digits = f".{1 if abs(score) < 100 else 0}f" if unit == "FLOPs" and score is not None else ".3g"
    early = "n/a" if score is None else f"{score:{digits}} {per}"  # 90.3, 531; per cost: 0.00412
    line = (f"gen {row['generation']:3d}  trained {row['evaluated']:2d}  best loss {f(row['best_true'])}  "
            + (f"predicted {f(row['best_predicted'])}  " if row.get("best_predicted") is not None else "")
            + (f"early {early}  " if score is not None else "")  # before any prediction (generation 0): left out
            + f"{flops} {unit}")
    if row.get("failed"):
        short = f"  FAILED {row['failed']}"
        failed = f"{short}: {row.get('failure') or 'unknown'}"
        room = LINE_WIDTH - len(line)
        line += (failed if len(failed) <= room else failed[:room - 3] + "..." if room >= len(short) + 12
                 else short)
    return line


def _verbose_line(state, row) -> str:
    """The rest of a generation's logbook row, indented under its line (--verbose)."""
    def f(x, spec=".4f"):
        return "n/a" if x is None else format(x, spec)

    predictor = row.get("predictor") or "n/a"
    predictor = predictor if len(predictor) <= 60 else predictor[:57] + "..."
    rho = (f" (cv Spearman {f(row.get('cv_spearman'), '.3f')} vs last value {f(row.get('cv_spearman_last'), '.3f')})"
           if row.get("cv_spearman") is not None else "")
    failure = f"\n         failed: {row['failure']}" if row.get("failed") else ""
    return (f"         cached {row['cache_hits']}  promoted {row.get('promoted', 0)}  "
            f"raw prediction {f(row.get('best_raw'))}  "
            f"female error: training {f(row.get('female_train_error'))}, held out {f(row['female_holdout_error'])}  "
            f"{row['tokens']:,} tokens {row.get('steps', 0):,} steps {row['train_seconds']:.1f} s\n"
            f"         predictor {predictor}{rho}{failure}")


@click.command("evolve")
@click.option("--generations", type=click.IntRange(1), default=None,
              help="Generations to run in total.  [default: 20; with --resume, the run's own target]")
@click.option("--preset", default=None, help="Preset name (micro, cpu-small, shakespeare-char) or a TOML file.  [default: cpu-small]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset value, e.g. ga.n_males=6 (repeatable).")
@click.option("--mode", type=click.Choice(list(MODES)), default=None, help="What evolves and how it breeds.  [default: combined]")
@click.option("--seed", type=int, default=None, help="Run seed.  [default: the preset's]")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder.  [default: runs/<time>-<preset>-<mode>-s<seed>]")
@click.option("--resume", type=click.Path(file_okay=False), default=None,
              help="Continue the run in this folder from its last finished generation, to its own target "
                   "(or to --generations).")
@click.option("--archive", type=click.Path(dir_okay=False), default=None, help="Share this SQLite archive (evaluation cache) across runs.")
@click.option("--keep-checkpoints", is_flag=True,
              help="Keep every training checkpoint (by default one lives only while its male may still be "
                   "promoted, and none is left at the end).")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the text summary.")
@click.option("--table", type=click.Path(dir_okay=False), default=None,
              help="Replay this table of recorded curves instead of training (docs/tables.md): a whole "
                   "search in seconds.")
@click.option("--task", "table_task", default=None, help="The task of a table file that holds several.")
@click.option("--prior", type=click.Path(dir_okay=True), default=None,
              help="A predictor file (gpnas predictors fit), or cpu-small (the prior gpnas ships): the "
                   "females start from its formulas, judged on the run's curves like every female.")
@click.option("--verbose", "-v", is_flag=True,
              help="Under each generation line, the rest of its logbook row: promotions, raw prediction, "
                   "the females' errors, tokens and steps, the predictor in use.")
@data_dir_option
@device_options
@backend_options
def evolve_command(generations, preset, overrides, mode, seed, out, resume, archive, keep_checkpoints, as_json,
                   table, table_task, prior, verbose, data_dir, device, threads, backend, workers, address):
    """Co-evolve architectures and learning-curve predictors.

    Prints one line per generation and, at the end, the best architecture
    beside the preset's reference architecture, the top evolved predictor
    formulas beside the baselines, the compute spent, where everything was
    written and the commands to go on. Interrupt with Ctrl-C (or SIGTERM) at
    any time and continue with --resume RUN_DIR; a run killed outright
    continues the same way.
    """
    # A scheduler's SIGTERM (SLURM, Kubernetes, systemd) stops the run like Ctrl-C.
    main_thread = threading.current_thread() is threading.main_thread()  # signals only go there
    previous = signal.signal(signal.SIGTERM, _interrupt) if main_thread else None
    try:
        _evolve(generations, preset, overrides, mode, seed, out, resume, archive, keep_checkpoints, as_json,
                data_dir, device, threads, backend, workers, address, table, table_task, verbose, prior)
    except KeyboardInterrupt:  # before the run folder existed: nothing to continue
        echo("\ninterrupted before the run started; nothing was saved", err=True)
        sys.exit(130)
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def run_prior(path, preset, mode: str, table) -> dict | None:
    """What run.json records of ``--prior``: its path, hash and formulas, checked against
    the features the run's curves will have (one line naming the missing ones)."""
    if path is None:
        return None
    from gpnas.errors import ConfigError
    from gpnas.runs.tasks import replay_task
    from gpnas.search import females as fem
    from gpnas.search.engine import MODES

    if mode not in MODES or not MODES[mode].females:
        raise ConfigError(f"--prior seeds the females, and mode {mode} has none; use combined, female or "
                          "within-gender")
    features = fem.Features.of_task(replay_task(preset, table)[0]) if table is not None else fem.NANOGPT
    return fem.prior_record(path, features)


def _evolve(generations, preset, overrides, mode, seed, out, resume, archive, keep_checkpoints, as_json,
            data_dir, device, threads, backend, workers, address, table=None, table_task=None, verbose=False,
            prior=None):
    from gpnas.config import check_fits, largest_architecture, load_preset
    from gpnas.jobs.run import check_unchanged, default_out, execute, new_run, open_run, record_target, resume_target
    from gpnas.report.run import render_closing, render_summary
    from gpnas.runs.tasks import table_space
    from gpnas.train.data import load_dataset
    from gpnas.train.trainer import resolve_device

    # every option is checked before anything is created: the device, the preset, the data, the backend
    if resume and out:
        raise click.UsageError(f"--out cannot be given with --resume: a resume continues {resume} in place; "
                               "drop --out, or drop --resume to start a new run in --out")
    resolve_device(device)
    if table_task and not table:
        raise click.UsageError("--task picks a task of a --table file; give --table FILE too")
    if resume and table:
        raise click.UsageError("--table cannot change on --resume; the run replays the table it recorded")
    if resume and prior:
        raise click.UsageError("--prior cannot change on --resume; the run's females started from the prior it "
                               "recorded")
    if resume:
        run = open_run(resume, load_dataset, data_dir)
        changed = load_preset(preset or run.preset.name, overrides) if (preset or overrides) else None
        if archive:
            raise click.UsageError("--archive cannot change on --resume; the run keeps its archive")
        check_unchanged(run, changed, mode, seed)
        if run.table is None:
            check_fits(largest_architecture(run.preset.space, run.preset.reference), run.preset.budget, device,
                       workers or 1)
    else:
        resolved = load_preset(preset or "cpu-small", overrides)
        mode = mode or "combined"
        seed = resolved.seed if seed is None else seed
        if table:
            from gpnas.runs.table import read_table

            recorded, dataset = read_table(table, table_task), None
            table_space(resolved, recorded)  # a space the table does not cover: refused before anything is made
        else:
            # a model that cannot fit is refused before the run folder exists (execute checks again,
            # knowing the backend's concurrency)
            check_fits(largest_architecture(resolved.space, resolved.reference), resolved.budget, device,
                       workers or 1)
            recorded, dataset = None, load_dataset(data_dir)
        prior = run_prior(prior, resolved, mode, recorded)
    with make_backend(backend, workers, address, threads) as map_fn:
        if resume:
            target = resume_target(run, generations)
            done = run.done
            if done >= target:
                echo(f"{run.folder.path}: {done} generations are already done (asked for {target}); nothing to "
                     f"run. Give --generations {done + 10} to go further.", err=as_json)
            else:
                echo(f"resuming {run.folder.path} at generation {done + 1} of {target}", err=as_json)
        else:
            target = generations or DEFAULT_GENERATIONS
            run = new_run(out or default_out(resolved.name, mode, seed), resolved, mode, seed, dataset, archive,
                          generations=target, table=recorded, prior=prior)
            done = -1
        echo(f"run folder: {run.folder.path}  (mode {run.mode}, preset {run.preset.name}, seed {run.seed})",
             err=as_json)
        # generations 0..target: target + 1 of them, so the bar counts generation 0 too
        # a foreign table charges its own cost unit (a gpnas table of the run's preset: training FLOPs)
        unit = "FLOPs" if run.table is None or table_space(run.preset, run.table) is run.preset.space else "cost"
        with Progress(total=target + 1, initial=done + 1, label="generations", unit="gen",
                      enabled=None if not as_json else False) as bar:
            def on_generation(state, row):
                if resume and state.generation > done:  # a resumed generation is done: keep the new target
                    record_target(run, target)
                bar.line(_generation_line(state, row, unit), err=as_json)
                if verbose:
                    bar.line(_verbose_line(state, row), err=as_json)
                bar.update_to(state.generation + 1)

            try:
                summary, _ = execute(run, target, map_fn=map_fn, device=device, threads=threads,
                                     callbacks=[on_generation], keep_checkpoints=keep_checkpoints)
            except KeyboardInterrupt:
                shown = bar.bar is not None
                bar.interrupted()  # the bar and the terminal's ^C are gone; a pipe gets a fresh line
                echo(f"{'' if shown else chr(10)}interrupted; finished generations are saved. Continue with: "
                     f"gpnas evolve --resume {shlex.quote(str(run.folder.path))}", err=True)
                sys.exit(130)
    if as_json:
        echo(json.dumps(summary, indent=2))
        return
    echo(render_summary(summary))
    echo(render_closing(summary, run.folder.path, data_dir))


@click.command("show")
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print summary.json as it is.")
@click.option("--html", "as_html", is_flag=True,
              help="Write RUN_DIR/report.html (one page, offline: summary, formulas, plots) and print its path.")
def show_command(run_dir, as_json, as_html):
    """Print the summary of a finished run again (or write its report.html)."""
    from gpnas.errors import FileFormatError
    from gpnas.report.html import write_html
    from gpnas.report.run import render_closing, render_summary
    from gpnas.runs.folder import RunFolder, read_json

    folder = RunFolder.open(run_dir)
    path = folder.path / "summary.json"
    if not path.exists():
        raise click.ClickException(f"{folder.path} has no summary yet (the run was interrupted); "
                                   f"finish it with: gpnas evolve --resume {shlex.quote(str(folder.path))}")
    summary = read_json(path)
    try:
        if as_html:
            text = f"wrote {write_html(folder.path, summary)}"
        elif as_json:
            text = json.dumps(summary, indent=2)
        else:
            text = render_summary(summary) + "\n" + render_closing(summary, folder.path)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise FileFormatError(f"{path}: not a gpnas summary ({type(error).__name__}: {error}); rewrite it with "
                              f"`gpnas evolve --resume {shlex.quote(str(run_dir))}`") from None
    echo(text)
