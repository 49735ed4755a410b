#!/usr/bin/env bash
# Regenerates results/cpu-small/: every mode and standard method at equal
# compute on the default CPU preset, 5 seeds, real text. Resumable: after an
# interruption run it again and it continues where it stopped.
#
# The committed results used exactly (see results/cpu-small/command.txt):
#   DATA_DIR=/work/shared/data/shakespeare_char experiments/run_cpu_small_ablation.sh
# and, for results/cpu-small/generations-3/, the same with GENERATIONS=3
# OUT=runs/ablation-cpu-small-g3 RESULTS=results/cpu-small/generations-3.
#
# Environment overrides (the tests use them for a tiny run):
#   PRESET GENERATIONS SEEDS MODES OUT RESULTS DATA_DIR EXTRA (more gpnas ablate options)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${PRESET:-cpu-small}
GENERATIONS=${GENERATIONS:-6}
SEEDS=${SEEDS:-5}
MODES=${MODES:-baseline,male,female,combined,within-gender,random,successive-halving,regularized-evolution}
OUT=${OUT:-runs/ablation-cpu-small}
RESULTS=${RESULTS:-results/cpu-small}
# shellcheck disable=SC2086  # EXTRA is a list of options
python3 -m gpnas ablate --preset "$PRESET" --generations "$GENERATIONS" --seeds "$SEEDS" --modes "$MODES" \
    --out "$OUT" --threads 1 ${DATA_DIR:+--data-dir "$DATA_DIR"} ${EXTRA:-}
python3 experiments/ablation_table.py "$OUT" --to "$RESULTS"
python3 experiments/ablation_plots.py "$OUT" --to "$RESULTS/plots"
