#!/usr/bin/env bash
# The table ablations of results/tables/: every mode, standard method and Optuna anchor, 50 seeds,
# a budget of 20 full curves, on each task of a table; the records are committed after each task
# so a session that ends mid-way loses at most one task's unfinished searches (rerun to continue).
#   bash experiments/run_table_ablations.sh TABLE OUT_DIR [TASK ...]
set -euo pipefail
table="${1:?usage: run_table_ablations.sh TABLE OUT_DIR [TASK ...]}"
out="${2:?usage: run_table_ablations.sh TABLE OUT_DIR [TASK ...]}"
shift 2
tasks=("$@")
if [ ${#tasks[@]} -eq 0 ]; then
    mapfile -t tasks < <(python3 -c "import sys; from gpnas.runs.table import table_tasks; print('\n'.join(table_tasks(sys.argv[1])))" "$table")
fi
mkdir -p "$out"
for task in "${tasks[@]}"; do
    dir="$out/$(echo "$task" | tr '/' '_')"
    gpnas ablate --table "$table" --task "$task" --seeds "${SEEDS:-50}" --budget "${BUDGET:-20}" \
        --out "$dir" --backend process ${MODES:+--modes "$MODES"} > "$dir.log" 2>&1 || { tail -3 "$dir.log"; exit 1; }
    git add "$dir" "$dir.log" && git commit -q -m "results/tables: $task, ${SEEDS:-50} seeds" -- "$dir" "$dir.log" || true
done
