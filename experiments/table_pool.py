"""Pool the table ablations of several folders (one task each, experiments/run_table_ablations.sh)
into one report with the pooled rows (task "all"): regret.csv, table.csv, table.md, plots.

    python3 experiments/table_pool.py OUT DIR [DIR ...]

Every folder must be of the same table file, methods, seeds and budget; folders made by
several code versions are pooled and the table says MIXED with the versions. The report
is written by the same function as ``gpnas ablate --table``'s.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpnas.jobs.table_ablation import TablePlan, write_table_report  # noqa: E402


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        sys.exit(__doc__)
    out, dirs = Path(argv[0]), [Path(d) for d in argv[1:]]
    metas = [json.loads((d / "ablation.json").read_text()) for d in dirs]
    plans = [TablePlan(**{**m["plan"], "tasks": tuple(m["plan"]["tasks"]), "methods": tuple(m["plan"]["methods"]),
                          "seeds": tuple(m["plan"]["seeds"])}) for m in metas]
    first = plans[0]
    for d, p, m in zip(dirs, plans, metas):
        if (p.table, p.methods, p.seeds, p.budget_curves, p.budget_cost) != \
                (first.table, first.methods, first.seeds, first.budget_curves, first.budget_cost):
            sys.exit(f"{d}: another table, method list, seed list or budget than {dirs[0]}")
    versions = sorted({m["code"] for m in metas})
    plan = replace(first, tasks=tuple(t for p in plans for t in p.tasks))
    records = [json.loads(line) for d in dirs for line in (d / "records.jsonl").read_text().splitlines()]
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.json").write_text(json.dumps({"plan": {**metas[0]["plan"], "tasks": list(plan.tasks)},
                                                   "code": ", ".join(versions),
                                                   # folders of several code versions: the table says MIXED
                                                   "mixed": len(versions) > 1 or any(m.get("mixed") for m in metas),
                                                   "pooled_from": [str(d) for d in dirs]}, indent=1))
    report = write_table_report(out, plan, records)
    print(report["markdown"])


if __name__ == "__main__":
    main()
