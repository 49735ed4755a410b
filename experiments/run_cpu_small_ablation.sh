#!/usr/bin/env bash
# Regenerates the cpu-small ablation: every mode and standard method at equal
# compute (training FLOPs: 6 N + 12 L H Q T per token, nanoGPT's estimate_mfu;
# tokens kept as a column) on the default CPU preset, at the main command's
# length (20 generations of combined set the budget), 5 seeds, real text.
#
# Resumable: every finished run is recorded in OUT/results.json (and its
# OUT/runs/MODE-sSEED/record.json) the moment it ends, and an interrupted run
# continues from its last generation. After an interruption, run the same
# command again; to continue on another machine, carry OUT along (or commit
# OUT/results.json and OUT/runs/*/record.json, which is what the table needs).
#
#   DATA_DIR=/work/shared/data/shakespeare_char experiments/run_cpu_small_ablation.sh
#
# writes results/cpu-small/generations-20/ (table.md, table.csv, runs.csv,
# coupling.md, plots/). The earlier 10-generation table (in tokens) stays in
# results/cpu-small/ for comparison, with its commands in command.txt there.
# About 2 hours of both cores of the 2-core machine.
#
# Environment overrides (the tests use them for a tiny run):
#   PRESET GENERATIONS SEEDS MODES OUT RESULTS DATA_DIR EXTRA (more gpnas ablate options)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-cpu-small}
GENERATIONS=${GENERATIONS:-20}
SEEDS=${SEEDS:-5}
MODES=${MODES:-baseline,male,female,combined,within-gender,random,successive-halving,regularized-evolution}
OUT=${OUT:-runs/ablation-cpu-small-g$GENERATIONS}
RESULTS=${RESULTS:-results/cpu-small/generations-$GENERATIONS}
# shellcheck disable=SC2086  # EXTRA is a list of options
python3 -m gpnas ablate --preset "$PRESET" --generations "$GENERATIONS" --seeds "$SEEDS" --modes "$MODES" \
    --out "$OUT" --threads 1 ${DATA_DIR:+--data-dir "$DATA_DIR"} ${EXTRA:-}
python3 experiments/ablation_table.py "$OUT" --to "$RESULTS"
python3 experiments/ablation_plots.py "$OUT" --to "$RESULTS/plots"
