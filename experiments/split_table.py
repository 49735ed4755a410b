"""Split a table (or curve file) by config into the parts a benchmark tunes on, tests on and
keeps untouched: a config's part is fixed by the hash of its canonical JSON, so every seed
of a config lands in the same part and the split never changes as a table grows.

    python3 experiments/split_table.py TABLE OUT_PREFIX [--seed-only S]

writes OUT_PREFIX.tune.jsonl (half the configs), OUT_PREFIX.test.jsonl (a quarter) and
OUT_PREFIX.untouched.jsonl (a quarter, for the closing note only); --seed-only keeps one
recording seed (for example fresh seeds as the query curves). Prints the counts.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

PARTS = {0: "tune", 1: "tune", 2: "test", 3: "untouched"}


def part_of(config: dict) -> str:
    text = json.dumps({k: float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v
                       for k, v in config.items()}, sort_keys=True)
    return PARTS[int(hashlib.sha256(text.encode()).hexdigest(), 16) % 4]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table")
    ap.add_argument("out_prefix")
    ap.add_argument("--seed-only", type=int, default=None)
    args = ap.parse_args(argv)
    out = {name: [] for name in ("tune", "test", "untouched")}
    for line in Path(args.table).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        if args.seed_only is not None and int(row.get("seed", 0)) != args.seed_only:
            continue
        out[part_of(row["config"])].append(line)
    for name, lines in out.items():
        Path(f"{args.out_prefix}.{name}.jsonl").write_text("\n".join(lines) + "\n")
        print(f"{args.out_prefix}.{name}.jsonl: {len(lines)} curves")


if __name__ == "__main__":
    main()
