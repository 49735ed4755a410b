"""Open a run's report.html in headless Chromium and save a screenshot.

    python3 experiments/screenshot_report.py RUN_DIR [--out shot.png]

Writes RUN_DIR/report.html first (as ``gpnas show RUN_DIR --html`` does), then
loads it from disk with the network switched off, so the screenshot shows
what a reader sees offline. Prints the screenshot's path and its size. Needs
a Chromium binary (``apt-get install chromium``); exits 2 with one line
without one.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


def screenshot(page: Path, out: Path, width: int = 1200, height: int = 2400, timeout: float = 120) -> Path:
    """Render ``page`` (a local HTML file) to the PNG ``out`` in headless Chromium, offline."""
    browser = find_browser()
    if browser is None:
        raise FileNotFoundError("no Chromium found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={profile}", "--proxy-server=127.0.0.1:9",  # no network reachable
             "--proxy-bypass-list=<-loopback>", f"--window-size={width},{height}",
             f"--screenshot={out}", page.resolve().as_uri()],
            check=True, capture_output=True, timeout=timeout)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="PNG to write [default: RUN_DIR/report.png]")
    args = parser.parse_args(argv)
    from gpnas.report.html import write_html
    from gpnas.runs.folder import read_json

    page = write_html(args.run_dir, read_json(args.run_dir / "summary.json"))
    out = args.out or args.run_dir / "report.png"
    try:
        screenshot(page, out)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{out}  ({out.stat().st_size:,} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
