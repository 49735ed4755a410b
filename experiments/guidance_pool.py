"""The coupling judged against tables, pooled over the folders of several table ablations:
the guidance rows (``report.guidance``) of every record that carries them, per task and
pooled per named group of tasks (for example the tuning and the test tasks).

    python3 experiments/guidance_pool.py OUT.md GROUP=DIR[,DIR...] [GROUP=DIR,...]

Each DIR is a table-ablation folder (records.jsonl); records of one (task, method, seed)
found in several folders are counted once (the first).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpnas.report import guidance as gd  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        sys.exit(__doc__)
    out, text = Path(argv[0]), []
    for group in argv[1:]:
        name, dirs = group.split("=", 1)
        seen, records = set(), []
        for d in dirs.split(","):
            for line in (Path(d) / "records.jsonl").read_text().splitlines():
                r = json.loads(line)
                key = (r["task"], r["method"], r["seed"])
                if r.get("guidance") and key not in seen:
                    seen.add(key)
                    records.append(r)
        rows = gd.guidance_rows(records)
        for row in rows:
            if row["task"] == "all":
                row["task"] = f"all {name}"
        text.append(f"## {name}: {len({r['task'] for r in records})} task(s)\n\n"
                    + gd.guidance_markdown(rows).split("\n", 2)[2])
    body = "# The coupling judged against tables\n\n" + "\n".join(text)
    out.write_text(body)
    print(body)


if __name__ == "__main__":
    main()
