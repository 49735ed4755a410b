"""The engine's cost against a table: one search of N generations, CPU seconds of the
loop alone (no report), per mode, and where the time goes.

    python3 experiments/bench_table.py TABLE [--task NAME] [--preset cpu-small]
        [--modes combined,random] [--generations 20] [--seeds 0] [--profile]

Prints one line per (mode, seed): CPU seconds of ``engine.run`` (one core; a
table run evaluates nothing, so this is all engine), evaluations charged,
best true final value; with --profile, the ten functions of most cumulative
time of the first run.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpnas.config import load_preset  # noqa: E402
from gpnas.jobs.run import evaluation_task, make_search, new_run  # noqa: E402
from gpnas.runs.archive import Archive  # noqa: E402
from gpnas.runs.table import read_table  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table")
    ap.add_argument("--task", default=None)
    ap.add_argument("--preset", default="cpu-small")
    ap.add_argument("--modes", default="combined")
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args(argv)
    preset, table = load_preset(args.preset), read_table(args.table, args.task)
    print(f"table {args.table} task {table.task!r}: {len(table.configs)} configs, {table.horizon} evaluations; "
          f"preset {args.preset}, {args.generations} generations")
    first = True
    for mode in args.modes.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                run = new_run(Path(tmp) / "run", preset, mode, seed, None, table=table)
                task, space = evaluation_task(run)
                with Archive(Path(tmp) / "run" / "archive.sqlite") as archive:
                    search = make_search(preset, mode, task, archive, seed, run.folder, space=space)
                    profile = cProfile.Profile() if args.profile and first else None
                    started, wall = time.process_time(), time.perf_counter()
                    if profile:
                        profile.enable()
                    state = search.run(args.generations)
                    if profile:
                        profile.disable()
                    cpu, wall = time.process_time() - started, time.perf_counter() - wall
            best = state.hall_of_fame[0]["final_val_loss"] if state.hall_of_fame else float("nan")
            print(f"{mode:24s} seed {seed}: {cpu:6.2f} s CPU ({wall:6.2f} s wall), "
                  f"{state.compute.evaluations} evaluations, best true final {best:.4f}")
            if profile:
                out = io.StringIO()
                pstats.Stats(profile, stream=out).sort_stats("cumulative").print_stats(12)
                print("\n".join(line for line in out.getvalue().splitlines() if line.strip())[-1400:])
            first = False


if __name__ == "__main__":
    main()
