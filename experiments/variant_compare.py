"""A variant of combined (a table ablation run with --modes combined and --set ...) against
every method of the base ablation of the same tasks, paired by seed: the summary table of
``gpnas ablate --table`` with the variant as the reference (Holm over the methods), and
the coupling's guidance rows of both.

    python3 experiments/variant_compare.py NAME OUT.md VARIANT_DIR:BASE_DIR [...]
    python3 experiments/variant_compare.py --full NAME OUT.md VARIANT_DIR:BASE_DIR [...]

VARIANT_DIR and BASE_DIR are folders of one task each (ablation.json, records.jsonl);
BASE_DIR may be several joined by "+" (a record of one task, method and seed counts once, from
the first folder that has it; the first folder's ablation.json describes the base);
the variant's combined records are named NAME; the base's are kept as they are. With
--full the variant folder holds several methods run with the variant's preset, which
keep their names (combined is the reference); the base contributes only the methods
the variant did not run (those the preset's [ga] does not touch, such as Optuna's).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gpnas.jobs.table_ablation import _table  # noqa: E402
from gpnas.report import guidance as gd  # noqa: E402
from gpnas.report import regret as rg  # noqa: E402


def records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line.strip()]


def base_records(base_dirs: list[Path]) -> list[dict]:
    """The records of the base folders, a (task, method, seed) counted once (the first folder's)."""
    seen, out = set(), []
    for folder in base_dirs:
        for r in records(folder):
            key = (r["task"], r["method"], r["seed"])
            if key not in seen:
                seen.add(key)
                out.append(r)
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    full = bool(argv) and argv[0] == "--full"
    argv = argv[1:] if full else argv
    if len(argv) < 3:
        sys.exit(__doc__)
    name, out, pairs = argv[0], Path(argv[1]), [a.split(":") for a in argv[2:]]
    rows, guidance, codes = [], [], set()
    for variant_dir, base_dir in pairs:
        variant_dir, base_dirs = Path(variant_dir), [Path(d) for d in base_dir.split("+")]
        meta = json.loads((variant_dir / "ablation.json").read_text())
        codes |= {meta["code"]} | {json.loads((d / "ablation.json").read_text())["code"] for d in base_dirs}
        if full:
            mine = records(variant_dir)
            ran = {r["method"] for r in mine}
            base = [r for r in base_records(base_dirs) if r["method"] not in ran]
        else:
            mine = [{**r, "method": name} for r in records(variant_dir) if r["method"] == "combined"]
            base = base_records(base_dirs)
        for r in mine + base:
            if r.get("skipped"):
                continue
            table = _table(meta["plan"]["table"], r["task"])
            rows += rg.regret_rows(r["task"], r["method"], r["seed"], r["trace"], r["budget"], table.best(),
                                   table.median())
        guidance += [r for r in mine + base if r.get("guidance")]
    summary = rg.summary_table(rows, reference="combined" if full else name)
    changed = set()
    for v, b in pairs:
        mine, theirs = (json.loads((Path(d) / "ablation.json").read_text())["plan"]["preset"]
                        for d in (v, b.split("+")[0]))
        changed |= {f"{section}.{k} = {mine[section][k]!r}" for section in ("ga", "budget")
                    for k in mine.get(section, {}) if mine[section][k] != theirs.get(section, {}).get(k)}
    notes = [f"{name}: {'every method the variant folder holds' if full else 'combined'} with "
             f"{', '.join(sorted(changed)) or 'the same preset'}"
             + ("; the base's records for the others (methods the preset's [ga] does not touch)" if full else ""),
             f"code: {', '.join(sorted(codes))}",
             "paired by seed against each method of the base ablation; Wilcoxon signed-rank, Holm over the methods"]
    text = rg.markdown_text(summary, f"{name} against the base ablation", notes)
    rows_g = gd.guidance_rows(guidance)
    if rows_g:
        text += "\n" + gd.guidance_markdown(rows_g)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
