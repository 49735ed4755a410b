"""The engine gives the same run whatever runs its evaluations (issue: parallel
and distributed evaluation). One torch thread everywhere: results of a torch
computation depend on its thread count, not on where it runs."""

import pytest

from gpnas.config import load_preset
from gpnas.jobs.run import execute, new_run
from gpnas.report.run import deterministic_part
from gpnas.runs.parallel import make_map


def run_with(tmp_path, dataset, name, map_fn):
    run = new_run(tmp_path / name, load_preset("micro"), "combined", 0, dataset)
    summary, _ = execute(run, 1, map_fn=map_fn, threads=1)
    return deterministic_part(summary)


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_serial_pool_and_ray_give_identical_summaries(tmp_path, tiny_dataset, backend):
    if backend == "ray":
        pytest.importorskip("ray", reason="the ray extra is not installed")
    serial = run_with(tmp_path, tiny_dataset, "serial", None)
    with make_map(backend, workers=2, threads_per_worker=1) as map_fn:
        other = run_with(tmp_path, tiny_dataset, backend, map_fn)
    assert other == serial
