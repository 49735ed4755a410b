"""Crash trials: kill ``gpnas evolve`` with SIGKILL at random moments, resume, compare.

One uninterrupted reference run first. Then, per trial, the same run (same
preset, seed and data) is started in a fresh folder and killed with SIGKILL
(the whole process group, as the OOM killer or a lost node would) after a
random delay drawn from the trial generator; then it is resumed with
``gpnas evolve --resume`` (or started again when the kill came before the run
folder existed) until it finishes. A trial is correct when the resumed run's
summary equals the reference's (``gpnas.report.run.deterministic_part``: timing
and cache figures aside) and the archive passes SQLite's integrity check.

    python3 experiments/crash_trials.py [--trials 20] [--seed 0] [--out DIR]
        [--generations 3] [--kills 1] [--backend serial|process] [--data-dir DIR]

Without --data-dir a small generated corpus is written under OUT (the figures
do not depend on the text). The delay of each kill is measured from the moment
run.json appears (interpreter start-up and imports come before), drawn
uniformly over 1.1 times the reference run's duration, so a few kills land
after the run finished (counted as not killed mid-run). Prints one line per
trial and the tally; the exit status is 1 when any trial mismatched.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from gpnas.report.run import deterministic_part  # noqa: E402
from gpnas.runs.archive import Archive  # noqa: E402
from tests.conftest import make_corpus  # noqa: E402  (the tests' tiny corpus)

POLL_S = 0.01


def evolve_args(args, folder: Path, resume: bool) -> list[str]:
    common = ["--generations", str(args.generations), "--threads", "1", "--backend", args.backend]
    if args.backend == "process":
        common += ["--workers", "2"]
    if resume:
        return [sys.executable, "-m", "gpnas", "evolve", "--resume", str(folder), *common,
                "--data-dir", str(args.data_dir)]
    return [sys.executable, "-m", "gpnas", "evolve", "--preset", args.preset, "--seed", str(args.run_seed),
            "--data-dir", str(args.data_dir), "--out", str(folder), *common]


def start(cmd: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as handle:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: the kill takes it all


def wait_for_run_folder(proc: subprocess.Popen, folder: Path) -> float:
    """Block until run.json exists or the process ended; returns the time it appeared (or now)."""
    while not (folder / "run.json").exists() and proc.poll() is None:
        time.sleep(POLL_S)
    return time.perf_counter()


def run_to_end(args, folder: Path, env: dict, log: Path) -> tuple[int, float]:
    """Run (or resume) without interruption; returns (exit status, seconds after run.json appeared)."""
    resume = (folder / "run.json").exists()
    proc = start(evolve_args(args, folder, resume), env, log)
    t0 = wait_for_run_folder(proc, folder)
    rc = proc.wait()
    return rc, time.perf_counter() - t0


def leftovers(folder: Path) -> list[str]:
    """What a kill left behind: snapshots, temporary files, the WAL, a summary."""
    snaps = sorted(p.name for p in (folder / "snapshots").glob("gen_*.json")) if folder.exists() else []
    tmp = sorted(str(p.relative_to(folder)) for p in folder.rglob("*.tmp")) if folder.exists() else []
    seen = [f"snapshots {snaps[-1][4:8]}" if snaps else "no snapshot"]
    if (folder / "archive.sqlite-wal").exists():
        seen.append("wal")
    if tmp:
        seen.append(f"{len(tmp)} tmp")
    if (folder / "summary.json").exists():
        seen.append("summary")
    if not (folder / "run.json").exists():
        seen.append("no run.json")
    return seen


def compare(reference: dict, summary: dict, where: str = "") -> list[str]:
    """Paths where two (deterministic parts of) summaries differ, with both values."""
    if isinstance(reference, dict) and isinstance(summary, dict):
        out = []
        for key in sorted(set(reference) | set(summary)):
            out += compare(reference.get(key), summary.get(key), f"{where}.{key}" if where else key)
        return out
    if isinstance(reference, list) and isinstance(summary, list) and len(reference) == len(summary):
        return [d for i, (a, b) in enumerate(zip(reference, summary)) for d in compare(a, b, f"{where}[{i}]")]
    return [] if reference == summary else [f"{where}: {str(reference)[:60]} != {str(summary)[:60]}"]


def trial(args, index: int, rng: random.Random, reference: dict, duration: float, env: dict) -> dict:
    folder = args.out / f"trial_{index:03d}"
    log = args.out / f"trial_{index:03d}.log"
    kills, killed, seen = [], 0, []
    for _ in range(args.kills):
        delay = rng.uniform(0.0, 1.1 * duration)
        proc = start(evolve_args(args, folder, (folder / "run.json").exists()), env, log)
        t0 = wait_for_run_folder(proc, folder)
        while proc.poll() is None and time.perf_counter() - t0 < delay:
            time.sleep(POLL_S)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            killed += 1
        proc.wait()
        kills.append(round(delay, 2))
        seen.append(", ".join(leftovers(folder)))
    rc, _ = run_to_end(args, folder, env, log)
    result = {"trial": index, "kill_after_s": kills, "killed": killed, "left": seen, "rc": rc,
              "resumed_ok": False, "integrity_ok": False, "differences": []}
    if rc != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
        result["differences"] = [f"resume exited {rc}: {tail[0] if tail else ''}"]
        return result
    summary = json.loads((folder / "summary.json").read_text())
    result["differences"] = compare(deterministic_part(reference), deterministic_part(summary))
    result["resumed_ok"] = not result["differences"]
    with Archive(folder / "archive.sqlite") as archive:
        result["integrity_ok"] = archive.integrity_check()
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill moments")
    parser.add_argument("--out", type=Path, default=Path("crash-trials"))
    parser.add_argument("--generations", type=int, default=3)
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs per trial before the final resume")
    parser.add_argument("--preset", default="micro")
    parser.add_argument("--backend", choices=("serial", "process"), default="serial",
                        help="process: a pool of 2 workers, killed with the driver")
    parser.add_argument("--run-seed", type=int, default=0, help="seed of the gpnas run itself")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--json", action="store_true", help="print the tally as JSON too")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    if args.out.exists() and any(args.out.iterdir()):
        parser.error(f"--out {args.out} is not empty; give a new folder")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.data_dir is None:
        args.data_dir = args.out / "corpus"
        args.data_dir.mkdir()
        (args.data_dir / "input.txt").write_text(make_corpus(), encoding="utf-8")
    env = {**os.environ, "GPNAS_CACHE_DIR": str(args.out / "cache"), "PYTHONPATH": str(ROOT)}

    rc, duration = run_to_end(args, args.out / "reference", env, args.out / "reference.log")
    if rc != 0:
        print(f"the reference run failed (exit {rc}); see {args.out / 'reference.log'}", file=sys.stderr)
        return 2
    reference = json.loads((args.out / "reference" / "summary.json").read_text())
    print(f"reference: {args.preset}, {args.generations} generations, {args.backend} backend, "
          f"{duration:.1f} s after run.json appeared")

    rng = random.Random(args.seed)
    results = []
    for index in range(args.trials):
        r = trial(args, index, rng, reference, duration, env)
        results.append(r)
        verdict = "ok" if r["resumed_ok"] and r["integrity_ok"] else "MISMATCH"
        print(f"trial {index:3d}  kill after {r['kill_after_s']} s  killed {r['killed']}  "
              f"left [{'; '.join(r['left'])}]  resumed {verdict}  integrity {'ok' if r['integrity_ok'] else 'BAD'}",
              flush=True)
        for difference in r["differences"][:5]:
            print(f"    {difference}")

    tally = {
        "trials": len(results),
        "killed_mid_run": sum(r["killed"] > 0 for r in results),
        "kills": sum(r["killed"] for r in results),
        "resumed_correctly": sum(r["resumed_ok"] for r in results),
        "integrity_ok": sum(r["integrity_ok"] for r in results),
        "mismatches": [{"trial": r["trial"], "differences": r["differences"]} for r in results
                       if not (r["resumed_ok"] and r["integrity_ok"])],
    }
    print(f"\ntrials {tally['trials']}, killed mid-run {tally['killed_mid_run']} ({tally['kills']} kills), "
          f"resumed correctly {tally['resumed_correctly']}, integrity ok {tally['integrity_ok']}, "
          f"mismatches {len(tally['mismatches'])}")
    for m in tally["mismatches"]:
        print(f"  trial {m['trial']}: {'; '.join(m['differences'][:3])}")
    if args.json:
        print(json.dumps(tally, indent=2))
    (args.out / "tally.json").write_text(json.dumps({"tally": tally, "results": results}, indent=2) + "\n")
    return 1 if tally["mismatches"] else 0


if __name__ == "__main__":
    sys.exit(main())
