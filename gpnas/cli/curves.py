"""``gpnas curves export | import-optuna``: write curve files (docs/curves.md) that
``gpnas predictors`` reads, from a gpnas run or from an Optuna study.

Each subcommand is a thin layer over one library function and prints one
count line; a new source of curves is one more ``@curves.command``.
"""

from __future__ import annotations

import click

out_option = click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
                          help="JSON Lines curve file to write (format: docs/curves.md).")


@click.group()
def curves():
    """Write learning curves as curve files, for `gpnas predictors fit`."""


@curves.command(name="export")
@click.argument("run_dir", type=click.Path(file_okay=False))
@out_option
def export_command(run_dir, out_path):
    """The run's full-budget curves, one per architecture it trained to completion.

    Only the evaluations this run paid for: a shared archive's other runs are left out.
    """
    from gpnas.runs.export import export_curves

    counts = export_curves(run_dir, out_path)
    diverged = (f", {counts.diverged} diverged (cut where they diverged; "
                f"marked \"diverged\": true, with their horizon)") if counts.diverged else ", 0 diverged"
    whose = "that other runs paid for" if counts.shared else "not charged to this run"
    click.echo(f"wrote {counts.written} curves to {out_path}: {counts.complete} complete{diverged}; "
               f"left out {counts.early} early and {counts.failed} failed evaluations"
               + (", the preset's reference architecture (trained beside the run, not charged to it)"
                  if counts.reference else "")
               + (f", and {counts.not_charged} in the archive {whose}" if counts.not_charged else ""))


@curves.command(name="import-optuna")
@click.option("--storage", required=True, metavar="URL",
              help="Where the study lives, as Optuna names it: sqlite:///study.db, postgresql://...")
@click.option("--study", "study_name", required=True, metavar="NAME", help="The study's name.")
@out_option
def import_optuna_command(storage, study_name, out_path):
    """An Optuna study's finished trials: intermediate values in step order as the curve,
    numeric params as its config. Pruned and failed trials are left out and counted."""
    from gpnas.integrations.optuna import export_study  # Optuna is an optional extra

    counts = export_study(storage, study_name, out_path)
    click.echo(f"wrote {counts.written} curves to {out_path} from study {study_name!r}; "
               f"left out {counts.left_out()}")
