"""Training speed of gpnas.train.trainer.train beside a faithful nanoGPT train.py loop, same config, same machine.

    python3 experiments/bench_train.py --data-dir ../shared/data/shakespeare_char \
        --n-layer 4 --n-head 4 --n-embd 128 --block-size 64 --batch-size 12 --iters 200 --repeats 2

Prints, per implementation: train tokens/s, ms/step (median and mean over the
timed steps, warm-up steps dropped), CPU ms/step (process CPU time over the
timed steps: with one thread on a machine shared with other jobs it measures the
work done, where wall time mostly measures the neighbours) and peak memory (max
RSS of the process on CPU, torch.cuda.max_memory_allocated on a GPU). Each measurement runs in its own
subprocess so peak memory is not shared, and the two implementations alternate
so that load from other processes hits both alike.

The nanoGPT loop re-implements train.py's inner loop as it is: np.memmap
re-opened for every batch, a Python list of torch.from_numpy windows stacked,
the next batch fetched between forward and backward, GradScaler, gradient
clipping, fused AdamW only on CUDA, loss.item() every log_interval steps
(1 in nanoGPT's CPU recipe), per-step time from time.time(). Same model class
(gpnas.train.model.GPT, parameter-for-parameter nanoGPT's), no torch.compile.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gpnas.train.data import load_dataset  # noqa: E402
from gpnas.train.model import GPT  # noqa: E402
from gpnas.train.trainer import CHECK_EVERY, TrainConfig, default_threads, learning_rate_at, resolve_device, train  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=12)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--iters", type=int, default=200, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=25,
                        help="untimed steps first (a multiple of gpnas.train.trainer.CHECK_EVERY)")
    parser.add_argument("--repeats", type=int, default=1, help="measurements per implementation, alternating")
    parser.add_argument("--threads", type=int, default=None, help="torch threads [default: all usable cores]")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--log-interval", type=int, default=1, help="nanoGPT loop: loss.item() every N steps")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--only", choices=["gpnas", "nanogpt"], help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args(argv)
    # gpnas's losses reach the host every CHECK_EVERY steps: the timed span must start at such a step
    args.warmup = -(-args.warmup // CHECK_EVERY) * CHECK_EVERY
    return args


def config_of(args) -> TrainConfig:
    return TrainConfig(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd, dropout=args.dropout,
                       block_size=args.block_size, batch_size=args.batch_size,
                       max_iters=args.warmup + args.iters, eval_interval=args.warmup + args.iters,
                       eval_batches=1)


def bench_gpnas(args, dataset, dev, threads) -> tuple[list[float], float]:
    """Step wall times and CPU seconds of the timed steps (read when their losses reach the host)."""
    cpu_at = {}

    def on_step(step, loss):
        if step in (args.warmup, args.warmup + args.iters):
            cpu_at[step] = time.process_time()

    result = train(config_of(args), dataset, seed=1337, device=str(dev), threads=threads,
                   measure_inference=False, on_step=on_step)
    return result.curve.step_time_s[args.warmup:], cpu_at[args.warmup + args.iters] - cpu_at[args.warmup]


def bench_nanogpt(args, dataset, dev, threads) -> tuple[list[float], float]:
    """nanoGPT train.py's inner loop, line for line where it matters for speed."""
    torch.set_num_threads(threads)
    torch.manual_seed(1337)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    config = config_of(args)
    device_type = dev.type
    dtype = "bfloat16" if device_type == "cuda" and torch.cuda.is_bf16_supported() else "float16"
    ptdtype = {"bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
    ctx = nullcontext() if device_type == "cpu" else torch.amp.autocast(device_type=device_type, dtype=ptdtype)
    train_path = dataset.train_ids.filename
    block_size, batch_size = config.block_size, config.batch_size

    def get_batch():
        data = np.memmap(train_path, dtype=np.uint16, mode="r")  # recreated every batch, as nanoGPT does
        ix = torch.randint(len(data) - block_size, (batch_size,))
        x = torch.stack([torch.from_numpy((data[i:i + block_size]).astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy((data[i + 1:i + 1 + block_size]).astype(np.int64)) for i in ix])
        if device_type == "cuda":
            x, y = x.pin_memory().to(dev, non_blocking=True), y.pin_memory().to(dev, non_blocking=True)
        else:
            x, y = x.to(dev), y.to(dev)
        return x, y

    model = GPT(config.model_config(dataset.vocab_size)).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    extra = dict(fused=True) if device_type == "cuda" else dict()  # nanoGPT: fused only on CUDA
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, betas=(config.beta1, config.beta2), **extra)
    scaler = torch.amp.GradScaler("cuda", enabled=(dtype == "float16" and device_type == "cuda"))

    times = []
    X, Y = get_batch()
    t0 = time.time()
    for iter_num in range(config.max_iters):
        if iter_num == args.warmup:
            cpu_start = time.process_time()
        lr = learning_rate_at(config, iter_num)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr
        with ctx:
            logits, loss = model(X, Y)
        X, Y = get_batch()  # prefetch while the device works, as train.py does
        scaler.scale(loss).backward()
        if config.grad_clip != 0.0:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if iter_num % args.log_interval == 0:
            lossf = loss.item()  # noqa: F841  (train.py prints it)
        t1 = time.time()
        times.append(t1 - t0)
        t0 = t1
    if device_type == "cuda":
        torch.cuda.synchronize()
    return times[args.warmup:], time.process_time() - cpu_start


def child(args) -> None:
    dev = resolve_device(args.device)
    threads = args.threads or default_threads()
    dataset = load_dataset(args.data_dir)
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_s = (bench_gpnas if args.only == "gpnas" else bench_nanogpt)(args, dataset, dev, threads)
    tokens_per_step = args.batch_size * args.block_size
    record = {
        "impl": args.only, "device": str(dev), "threads": threads,
        "tokens_per_s": tokens_per_step * len(times) / sum(times),
        "ms_per_step_median": 1000 * statistics.median(times),
        "ms_per_step_mean": 1000 * statistics.fmean(times),
        "cpu_ms_per_step": 1000 * cpu_s / len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # KiB on Linux
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else None,
    }
    print(json.dumps(record))


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.only:
        return child(args)
    forwarded = [a for a in (argv if argv is not None else sys.argv[1:])]
    records = {"gpnas": [], "nanogpt": []}
    for _ in range(args.repeats):
        for impl in ("gpnas", "nanogpt"):
            out = subprocess.run([sys.executable, __file__, *forwarded, "--only", impl],
                                 check=True, capture_output=True, text=True, env=os.environ.copy())
            records[impl].append(json.loads(out.stdout.strip().splitlines()[-1]))
    first = records["gpnas"][0]
    print(f"config: n_layer {args.n_layer}, n_head {args.n_head}, n_embd {args.n_embd}, block {args.block_size}, "
          f"batch {args.batch_size}, dropout {args.dropout}; device {first['device']}, {first['threads']} threads; "
          f"{args.iters} timed steps after {args.warmup}, {args.repeats} repeat(s)")
    print(f"{'impl':<9}{'tokens/s':>12}{'ms/step med':>13}{'ms/step mean':>14}{'CPU ms/step':>13}"
          f"{'peak RSS MB':>13}{'peak CUDA MB':>14}")
    best = {}
    for impl, runs in records.items():
        for r in runs:
            cuda = f"{r['peak_cuda_mb']:.1f}" if r["peak_cuda_mb"] is not None else "-"
            print(f"{impl:<9}{r['tokens_per_s']:>12,.0f}{r['ms_per_step_median']:>13.2f}"
                  f"{r['ms_per_step_mean']:>14.2f}{r['cpu_ms_per_step']:>13.2f}{r['peak_rss_mb']:>13.1f}{cuda:>14}")
        best[impl] = max(r["tokens_per_s"] for r in runs)
    medians = {impl: statistics.median(r["ms_per_step_median"] for r in runs) for impl, runs in records.items()}
    cpu = {impl: min(r["cpu_ms_per_step"] for r in runs) for impl, runs in records.items()}
    print(f"gpnas / nanoGPT: best tokens/s ratio {best['gpnas'] / best['nanogpt']:.3f}, "
          f"median ms/step ratio {medians['gpnas'] / medians['nanogpt']:.3f}, "
          f"best CPU ms/step ratio {cpu['gpnas'] / cpu['nanogpt']:.3f} (below 1 is faster)")
    if not all(math.isfinite(v) for v in best.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
