#!/usr/bin/env bash
# The GPU check: on a machine with a CUDA GPU, in about 5 to 10 minutes,
#   1. install what gpnas needs (a CUDA build of torch must already be installed),
#   2. run the tests that need a real GPU (pytest -m gpu),
#   3. train the shakespeare-char preset's reference architecture, nanoGPT's baby GPT
#      (6 layers, 6 heads, 384 wide, block 256, batch 64, dropout 0.2, lr 1e-3, 5000 steps,
#      evaluated as nanoGPT does: every 250 steps on 200 batches), with `gpnas train --device cuda`,
#   4. run `gpnas evolve --preset shakespeare-char --generations 1` at a reduced budget,
#   5. write a report: tokens/s, MFU against the GPU's bf16 peak, best val loss beside nanoGPT's
#      1.47, wall times and peak memory (report.md, report.json; the raw outputs beside them).
#
# Usage:  experiments/gpu_check.sh [REPORT_DIR]
#   REPORT_DIR  default: $OUT when set, else results/gpu/<UTC date>-<GPU name>
# Environment:
#   GPNAS_DATA_DIR   folder holding shakespeare_char's input.txt (else the user cache, else a download)
#   PEAK_TFLOPS      the GPU's dense bf16 peak, for GPUs the built-in table does not know
#   CHECK_TIMEOUT_S  guard on each step, in seconds (default 420); a step past it is reported as timed out
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

REPORT_DIR="${1:-${OUT:-}}"
if [ -z "$REPORT_DIR" ]; then
    gpu_name="$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr -c 'A-Za-z0-9\n' '-')"
    REPORT_DIR="results/gpu/$(date -u +%Y%m%d)-${gpu_name:-gpu}"
fi
mkdir -p "$REPORT_DIR"
REPORT_DIR="$(cd "$REPORT_DIR" && pwd)"
GUARD="${CHECK_TIMEOUT_S:-420}"
# This checkout's gpnas, whatever is installed.
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
DATA_ARGS=()
if [ -n "${GPNAS_DATA_DIR:-}" ]; then DATA_ARGS=(--data-dir "$GPNAS_DATA_DIR"); fi

say() { echo "== $*" | tee -a "$REPORT_DIR/log.txt" >&2; }
: > "$REPORT_DIR/log.txt"
: > "$REPORT_DIR/steps.tsv"

# step NAME COMMAND...: run under the guard (its stdout is the caller's, its stderr goes to
# log.txt), then record its exit status and wall time in steps.tsv
step() {
    local name="$1"; shift
    say "$name: $*"
    local t0 rc
    t0="$(date +%s%N)"
    timeout "$GUARD" "$@" 2>>"$REPORT_DIR/log.txt"
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( ($(date +%s%N) - t0) / 1000000 ))" >> "$REPORT_DIR/steps.tsv"
    say "$name: exit $rc"
    return 0
}

# 0. The machine. No CUDA: stop here with one line.
if ! python3 -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu_check: torch sees no CUDA GPU here; install a CUDA build of torch (pip install torch) on a GPU machine" >&2
    exit 2
fi
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, platform; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'bf16', torch.cuda.is_bf16_supported(), 'python', platform.python_version())"
    nproc
} > "$REPORT_DIR/machine.txt" 2>&1

# 1. Install: only what is missing (an offline machine with everything present installs nothing).
step install bash -c 'if python3 -c "import deap, sympy, click, matplotlib, numpy, pytest, hypothesis" 2>/dev/null
    then echo "dependencies present"; else python3 -m pip install --quiet -e ".[test]"; fi' >&2

# 2. The gpu tests.
step gpu_tests python3 -m pytest -q -m gpu tests/train/test_gpu.py -p no:cacheprovider \
    > "$REPORT_DIR/gpu_tests.txt"

# 3. nanoGPT's baby GPT: the preset's reference architecture and budget, nanoGPT's evaluation.
read -r N_LAYER N_HEAD N_EMBD DROPOUT LR BLOCK BATCH ITERS WARMUP < <(python3 -c "
from gpnas.config import load_preset
p = load_preset('shakespeare-char'); r, b = p.reference, p.budget
print(r.n_layer, r.n_head, r.n_embd, r.dropout, r.learning_rate, b.block_size, b.batch_size, b.full_iters,
      b.warmup_iters)")
step baby_gpt python3 -m gpnas train --device cuda --json ${DATA_ARGS[@]+"${DATA_ARGS[@]}"} \
    --n-layer "$N_LAYER" --n-head "$N_HEAD" --n-embd "$N_EMBD" --dropout "$DROPOUT" --learning-rate "$LR" \
    --block-size "$BLOCK" --batch-size "$BATCH" --max-iters "$ITERS" --warmup-iters "$WARMUP" \
    --eval-interval 250 --eval-batches 200 --seed 1337 \
    > "$REPORT_DIR/baby_gpt.json"

# 4. One generation of the co-evolution on the paper-scale preset, at a reduced budget:
#    600-step full runs (150 early), 8 males, evaluations on 10 batches every 50 steps.
rm -rf "$REPORT_DIR/evolve_run"
step evolve python3 -m gpnas evolve --preset shakespeare-char --generations 1 --device cuda --backend serial \
    ${DATA_ARGS[@]+"${DATA_ARGS[@]}"} --out "$REPORT_DIR/evolve_run" --json \
    --set budget.full_iters=600 --set budget.early_iters=150 --set budget.eval_interval=50 \
    --set budget.eval_batches=10 --set ga.n_males=8 \
    > "$REPORT_DIR/evolve.json"

# 5. The report.
python3 experiments/gpu_report.py "$REPORT_DIR"
echo "report: $REPORT_DIR/report.md"
