#!/usr/bin/env bash
# nanoGPT's CPU recipe for shakespeare_char (its README: n_layer 4, n_head 4, n_embd 128, block 64,
# batch 12, dropout 0, lr 1e-3, 2000 iterations decayed over 2000, eval_iters 20), run through gpnas train.
# result.json: seed 1337 (nanoGPT's seed). result_seed0.json: seed 0, run first (see NOTES.md).
# One torch thread: the 2 cores were shared with other jobs, where 2 threads oversubscribe and crawl.
# Run from the repository root.
set -euo pipefail
for seed in 0 1337; do
    out=results/train_quality/result_seed$seed.json
    [ "$seed" = 1337 ] && out=results/train_quality/result.json
    python3 -m gpnas train --data-dir /work/shared/data/shakespeare_char \
        --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --dropout 0.0 \
        --learning-rate 1e-3 --max-iters 2000 --eval-interval 250 --eval-batches 20 --warmup-iters 100 \
        --seed $seed --device cpu --threads 1 --json > "$out"
done
