#!/usr/bin/env bash
# gpnas's own learning curves for developing predictors: 200 random cpu-small
# architectures trained to completion (a random-search run), exported as a curve file.
#   bash experiments/make_own_curves.sh OUT_DIR [N]
# About 25 minutes on 2 idle CPU cores. Resumable: run it again to continue.
set -euo pipefail
out="${1:?usage: make_own_curves.sh OUT_DIR [N]}"
n="${2:-200}"
# full run = 300 steps x 16 x 32 tokens; random search trains n_males (8) per generation
tokens=$(( n * 300 * 16 * 32 ))
gpnas ablate --preset cpu-small --modes random --seeds 1 --generations $(( (n + 79) / 80 )) \
    --budget-tokens "$tokens" --out "$out"
gpnas curves export "$out/runs/random-s0" --out "$out/cpu_small_random.jsonl"
