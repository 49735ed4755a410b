"""Option groups shared by several commands, as decorators (sqlite-utils style)."""

from __future__ import annotations

import contextlib

import click


def data_dir_option(f):
    return click.option(
        "--data-dir", type=click.Path(file_okay=False), default=None,
        help="Folder holding input.txt.  [default: $GPNAS_DATA_DIR, then the user cache, then a download]",
    )(f)


def device_options(f):
    f = click.option("--threads", type=click.IntRange(1), default=None,
                     help="torch threads per evaluation; results depend on it, not on the backend.  [default: 1]")(f)
    f = click.option("--device", default="auto", show_default=True,
                     help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N.")(f)
    return f


def backend_options(f):
    f = click.option("--address", default=None,
                     help="Ray cluster to join: auto or HOST:PORT.  [default: start a local Ray]")(f)
    f = click.option("--workers", type=click.IntRange(1), default=None,
                     help="Parallel evaluations.  [default: chosen for this machine]")(f)
    f = click.option("--backend", type=click.Choice(["auto", "serial", "process", "ray"]), default="auto",
                     show_default=True, help="Where male evaluations run.")(f)
    return f


@contextlib.contextmanager
def make_backend(backend: str, workers, address, threads):
    """The map the engine evaluates males with, closed when the command ends."""
    from gpnas.runs.parallel import make_map

    map_ = make_map(backend, workers=workers, address=address, threads_per_worker=threads)
    try:
        yield map_
    finally:
        map_.close()
