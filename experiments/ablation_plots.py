"""The ablation figures from a ``gpnas ablate`` output folder: best val loss so
far against compute (mean and 95 % band per mode), the training and validation
curves of each mode's best architecture, and predicted against true final
loss for the female and combined modes.

    python3 experiments/ablation_plots.py OUT [--to DIR]     (DIR defaults to OUT/plots)
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # a checkout runs without installing

from gpnas.jobs.ablation import complete_seeds, load_results, modes_in  # noqa: E402
from gpnas.report.ablation import write_plots  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="a gpnas ablate --out folder")
    parser.add_argument("--to", type=Path, default=None, help="where the PNG files go (default: OUT/plots)")
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
    for path in write_plots(records, modes, args.to or args.out / "plots"):
        print(f"written: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
