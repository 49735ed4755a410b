"""The table of experiments/compare_prefix.sh: combined with the default early budget against a longer one,
seed by seed at equal training FLOPs, and the paired difference with its 95 % t-interval and sign-flip p.

    python3 experiments/prefix_table.py OUT [--out results/cpu-small/prefix/table.md]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpnas.report.ablation import mean_ci, sign_flip_p  # noqa: E402


def records(folder: Path) -> dict:
    """seed -> the finished combined run's record (runs still going have none)."""
    out = {}
    for path in sorted(folder.glob("runs/combined-s*/record.json")):
        record = json.loads(path.read_text(encoding="utf-8"))
        out[int(record["seed"])] = record
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("folder", type=Path, help="the OUT of compare_prefix.sh (early30/ and early60/ inside)")
    ap.add_argument("--out", type=Path, help="also write the table here")
    args = ap.parse_args(argv)
    short, long = records(args.folder / "early30"), records(args.folder / "early60")
    seeds = sorted(set(short) & set(long))
    if not seeds:
        sys.exit(f"{args.folder}: no seed has finished in both early30/ and early60/; run compare_prefix.sh first")
    lines = ["| seed | early 30: best final val loss | evaluations | FLOPs | early 60: best final val loss | "
             "evaluations | FLOPs | 60 − 30 |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    diffs = []
    for s in seeds:
        a, b = short[s], long[s]
        d = b["best"]["final_val_loss"] - a["best"]["final_val_loss"]
        diffs.append(d)
        lines.append(f"| {s} | {a['best']['final_val_loss']:.4f} | {a['compute']['evaluations']} | "
                     f"{a['compute']['flops']:.3g} | {b['best']['final_val_loss']:.4f} | {b['compute']['evaluations']} | "
                     f"{b['compute']['flops']:.3g} | {d:+.4f} |")
    mean, lo, hi = mean_ci(diffs)
    p = sign_flip_p(diffs)
    interval = f" [{lo:+.4f}, {hi:+.4f}]" if lo is not None else ""
    lines.append("")
    lines.append(f"60 − 30, mean over {len(seeds)} seeds: {mean:+.4f}{interval} (95 % t-interval); "
                 f"early 60 lower on {sum(d < 0 for d in diffs)} of {len(seeds)}; sign-flip p {p:.3f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
