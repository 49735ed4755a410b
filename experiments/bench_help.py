"""How long `gpnas --help` takes, start to exit, in a fresh interpreter each time.

    python3 experiments/bench_help.py [--repeat 10]

Prints the median and the slowest wall time of `python -m gpnas --help` (the
`gpnas` script adds only its own interpreter start). A benchmark, not a test:
the test (tests/cli/test_cli_user.py) checks that the list imports no command.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "gpnas", "--help"], check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - start)
    print(f"gpnas --help: median {statistics.median(times):.3f} s, slowest {max(times):.3f} s "
          f"over {args.repeat} runs")


if __name__ == "__main__":
    main()
