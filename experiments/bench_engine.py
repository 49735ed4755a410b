"""Engine overhead, measured without training: replay generations of a finished run.

Every evaluation of a finished run is in its archive, so rerunning its last
generations from an earlier snapshot trains nothing (all cache hits) and the
time spent is the engine's own: choosing the predictor, breeding, mating
passes, snapshots. The run folder (and an external archive, for ablation runs)
is copied to a temporary folder first; the original is never written.

    python3 experiments/bench_engine.py RUN_DIR --after 6 --to 10 [--repeats 2]

prints the engine's CPU seconds (process time, so other jobs on the machine do
not count) for generations after..to, and whether the replayed snapshots equal
the run's own (they must: evaluations are pure functions of their inputs).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpnas.jobs.run import execute, open_run  # noqa: E402
from gpnas.search import engine  # noqa: E402
from gpnas.train.data import load_dataset  # noqa: E402

# what a replay may change: how evaluations were obtained (cache hits instead of training)
CACHE_FIELDS = ("cache_hits", "evaluated")


def copy_run(run_dir: Path, into: Path, after: int) -> Path:
    """A copy of the run with the snapshots after ``after`` removed; an external archive copied beside it."""
    copy = into / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("checkpoints"))
    meta = json.loads((copy / "run.json").read_text(encoding="utf-8"))
    archive = Path(meta["archive"])
    if archive.is_absolute() and not archive.resolve().is_relative_to(run_dir.resolve()):
        target = into / "archive.sqlite"
        with sqlite3.connect(archive) as source, sqlite3.connect(target) as dest:
            source.backup(dest)  # a consistent copy even while another process writes
        meta["archive"] = str(target)
        (copy / "run.json").write_text(json.dumps(meta), encoding="utf-8")
    for path in (copy / "snapshots").glob("gen_*.json"):
        if int(path.stem.split("_")[1]) > after:
            path.unlink()
    return copy


def same_run(a: Path, b: Path) -> bool:
    """Whether two snapshots agree on everything but the cache statistics of the log."""
    x, y = (json.loads(p.read_text(encoding="utf-8")) for p in (a, b))
    for log in (x["logbook"], y["logbook"]):
        for row in log:
            for name in CACHE_FIELDS:
                row.pop(name, None)
    return x == y


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--after", type=int, required=True, help="replay from this generation's snapshot")
    ap.add_argument("--to", type=int, required=True, help="last generation to replay (one the run has)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data-dir", help="folder holding input.txt (default: the run's own)")
    args = ap.parse_args(argv)
    original = args.run_dir / "snapshots" / f"gen_{args.to:04d}.json"
    if not original.exists() or not (args.run_dir / "snapshots" / f"gen_{args.after:04d}.json").exists():
        sys.exit(f"{args.run_dir} has no snapshot of generation {args.after} or {args.to}; pick ones it has")
    seconds = []
    plain_run = engine.Evolution.run

    def timed(self, generations):
        start = time.process_time()
        state = plain_run(self, generations)
        seconds.append(time.process_time() - start)
        return state

    engine.Evolution.run = timed
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as scratch:
            copy = copy_run(args.run_dir, Path(scratch), args.after)
            execute(open_run(copy, load_dataset, args.data_dir), args.to, threads=1)
            identical = same_run(copy / "snapshots" / original.name, original)
        print(f"generations {args.after + 1}-{args.to}: engine {seconds[-1]:.2f} s CPU "
              f"({seconds[-1] / (args.to - args.after):.2f} s per generation); "
              f"snapshot {'equals' if identical else 'DIFFERS from'} the run's own", flush=True)


if __name__ == "__main__":
    main()
