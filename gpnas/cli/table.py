"""``gpnas table``: tables of recorded curves (build one by training a grid; docs/tables.md)."""

from __future__ import annotations

import time

import click

from gpnas.cli.options import backend_options, data_dir_option, device_options, make_backend
from gpnas.cli.output import Progress, echo


@click.group("table")
def table():
    """Tables of recorded curves: replay whole searches in seconds (evolve --table, ablate --table)."""


def _seeds(text: str) -> list[int]:
    try:
        seeds = sorted({int(s) for s in text.split(",") if s.strip()})
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a comma-separated list of integers, e.g. 0,1") from None
    if not seeds:
        raise click.BadParameter("give at least one seed, e.g. 0,1")
    return seeds


@table.command("build")
@click.option("--preset", default="cpu-small", show_default=True,
              help="Preset name or TOML file: its space and budget.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a preset value (repeatable).")
@click.option("--levels", type=int, default=8, show_default=True,
              help="Values of each continuous gene (log-spaced for log genes); discrete genes take all theirs.")
@click.option("--seeds", default="0", show_default=True, help="Training seeds, comma-separated: one recording each.")
@click.option("--out", type=click.Path(dir_okay=False), required=True,
              help="The table file (JSON Lines); an existing one is extended, its finished runs skipped.")
@click.option("--task", "task_name", default=None, help="Task name in the file.  [default: the preset's name]")
@click.option("--yes", is_flag=True, help="Train a grid larger than the limit (5000 runs).")
@data_dir_option
@device_options
@backend_options
def build_command(preset, overrides, levels, seeds, out, task_name, yes, data_dir, device, threads, backend,
                  workers, address):
    """Train every config of a preset's grid to completion and write them as a table.

    Resumable: run the same command again after a kill and it trains only what
    the file lacks. Each finished run is appended at once.
    """
    import tempfile

    from gpnas.config import load_preset
    from gpnas.jobs.table import build_table, plan
    from gpnas.runs.table import config_key, recorded_pairs
    from gpnas.train.data import load_dataset
    from gpnas.train.trainer import resolve_device

    resolve_device(device)
    resolved = load_preset(preset, overrides)
    seed_list = _seeds(seeds)
    runs = plan(resolved, levels, seed_list, yes)   # a bad grid is refused before anything is read or made
    dataset = load_dataset(data_dir)
    done = recorded_pairs(out, task_name or resolved.name)
    left = sum((config_key(c), s) not in done for c, s in runs)
    echo(f"table {out} (task {task_name or resolved.name}): {len(runs)} runs in the grid "
         f"({len(runs) // len(seed_list)} configs x {len(seed_list)} seeds), {len(runs) - left} recorded, "
         f"{left} to train")
    started = time.perf_counter()
    with make_backend(backend, workers, address, threads) as map_fn, \
            tempfile.TemporaryDirectory(prefix="gpnas-table-") as scratch, \
            Progress(total=left, label="runs", unit="run") as bar:
        def on_progress(counts):
            n = counts.trained + counts.failed
            bar.update_to(n)
            rate = (time.perf_counter() - started) / max(n, 1)
            bar.line(f"{n}/{left} trained ({counts.diverged} diverged, {counts.failed} failed); "
                     f"about {rate * (left - n) / 60:.0f} min left")

        counts = build_table(resolved, levels, seed_list, out, dataset, scratch, map_fn, device, threads,
                             task_name, yes, chunk=max(2, 2 * getattr(map_fn, "workers", 1)),
                             on_progress=on_progress)
    echo(f"done: {counts.trained} trained now ({counts.diverged} diverged), {counts.already} already recorded, "
         f"{counts.failed} failed (run the command again to retry them) in {time.perf_counter() - started:.0f} s; "
         f"replay it with: gpnas evolve --table {out}")
