"""The ablation table (the paper's Table 1, done with seeds and intervals) from
a ``gpnas ablate`` output folder: per mode, mean and 95 % interval over seeds,
and the paired test against combined. Writes table.md, table.csv and runs.csv.

    python3 experiments/ablation_table.py OUT [--to DIR]     (DIR defaults to OUT)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout runs without installing

from gpnas.jobs.ablation import complete_seeds, load_results, modes_in  # noqa: E402
from gpnas.report.ablation import write_tables  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a gpnas ablate --out folder")
    parser.add_argument("--to", type=Path, default=None, help="where the tables go (default: OUT)")
    args = parser.parse_args(argv)
    records = load_results(args.out)
    if not records:
        print(f"{args.out}: no finished runs (results.json); run gpnas ablate --out {args.out} first",
              file=sys.stderr)
        return 1
    records, partial = complete_seeds(records)
    if partial:
        print(f"left out seeds {', '.join(map(str, partial))}: not every mode has finished them (rerun the "
              "ablation to finish them)", file=sys.stderr)
    modes = modes_in(records)
    tables = write_tables(records, modes, args.to or args.out)
    print(tables["markdown"])
    print("written: " + ", ".join(str(p) for p in tables["paths"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
