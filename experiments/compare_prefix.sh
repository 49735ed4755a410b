#!/usr/bin/env bash
# Does a longer early prefix buy more than it costs? The combined mode at equal training FLOPs with the
# default early budget (30 steps: 4 evaluations, prefix 10 %) and with 60 steps (7 evaluations, prefix 20 %).
# Resumable: run it again to continue; SEEDS=5 extends it. Then experiments/prefix_table.py OUT.
#   DATA_DIR=../shared/data/shakespeare_char experiments/compare_prefix.sh [OUT]
set -euo pipefail
OUT=${1:-runs/prefix-cpu-small}
SEEDS=${SEEDS:-3}
BUDGET=${BUDGET:-1.15e13}   # about what combined spends in 20 generations of the default preset
export GPNAS_DATA_DIR=${DATA_DIR:-${GPNAS_DATA_DIR:-}}
for EARLY in 30 60; do
  python3 -m gpnas ablate --modes combined --seeds "$SEEDS" --generations 20 --budget-flops "$BUDGET" \
    --set budget.early_iters=$EARLY --out "$OUT/early$EARLY"
done
