"""Aggregate training throughput of the map's backends on this machine, and Ray's start-up cost.

Each item trains a small self-contained torch model for a fixed number of steps
(an MLP, and two sizes of a nanoGPT-like character transformer), so the figures
do not depend on gpnas's trainer. Compared, on the same items:

- serial 1x2: the items one after another in this process, torch using 2 threads;
- serial 1x1: the same with 1 thread (how fast one process is on its own);
- process 2x1: a pool of 2 spawned workers with 1 torch thread each;
- process 2x2: 2 workers with 2 threads each (oversubscribed on 2 cores; not in --tiny).

The pool is warmed up first (it is kept across calls, so its start-up is paid
once per run, printed separately). Every figure is the median of --repeats runs.

    python3 experiments/bench_parallel.py [--repeats 3] [--tiny] [--no-ray]
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from gpnas.runs.parallel import make_map  # noqa: E402

# name -> (kind, width, layers, batch, block, steps per item)
WORKLOADS = {
    "mlp": ("mlp", 256, 3, 64, 0, 300),
    "transformer-64x2": ("transformer", 64, 2, 12, 64, 30),
    "transformer-128x4": ("transformer", 128, 4, 12, 64, 10),
}
TINY = {"mlp": ("mlp", 16, 1, 8, 0, 3)}


def train_item(args):
    """Train one seeded model for a few steps; returns the last loss. Top-level so workers can import it."""
    import torch
    from torch import nn

    (kind, width, layers, batch, block, steps), seed = args
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # parameter initialisation; this runs in its own process or is the only job
    if kind == "mlp":
        model = nn.Sequential(*[m for _ in range(layers) for m in (nn.Linear(width, width), nn.GELU())],
                              nn.Linear(width, 1))
        x = torch.randn(batch, width, generator=gen)      # (batch, width)
        y = torch.randn(batch, 1, generator=gen)
        loss_fn = lambda: ((model(x) - y) ** 2).mean()    # noqa: E731
    else:
        vocab = 65
        layer = nn.TransformerEncoderLayer(width, nhead=4, dim_feedforward=4 * width, dropout=0.0,
                                           batch_first=True, norm_first=True, activation="gelu")
        body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        embed, head = nn.Embedding(vocab, width), nn.Linear(width, vocab)
        model = nn.ModuleList([embed, body, head])
        mask = nn.Transformer.generate_square_subsequent_mask(block)
        ids = torch.randint(vocab, (batch, block + 1), generator=gen)   # (batch, block + 1)

        def loss_fn():
            logits = head(body(embed(ids[:, :-1]), mask=mask, is_causal=True))  # (batch, block, vocab)
            return nn.functional.cross_entropy(logits.reshape(-1, vocab), ids[:, 1:].reshape(-1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(steps):
        loss = loss_fn()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return loss.item()


def noop(x):
    return x


def run_once(m, workload, n_items, seed0) -> float:
    """Items per second for one call of the map on n_items fresh items."""
    items = [(workload, seed0 + i) for i in range(n_items)]
    start = time.perf_counter()
    results = m(train_item, items)
    rate = n_items / (time.perf_counter() - start)
    failed = [x for x in results if not isinstance(x, float)]
    if failed:
        raise SystemExit(f"benchmark items failed: {failed[:2]}")
    return rate


def fmt(rates, steps) -> str:
    med = statistics.median(rates)
    spread = " ".join(f"{r * steps:.1f}" for r in rates)
    return f"{med:7.3f} items/s {med * steps:8.1f} steps/s   (runs: {spread} steps/s)"


def ray_startup() -> str:
    try:
        import ray
    except ImportError:
        return "Ray start-up: Ray not installed"
    start = time.perf_counter()
    with make_map("ray", workers=2) as m:
        first = m(noop, [0])
        ready = time.perf_counter() - start
        m(noop, [1, 2])
        again = time.perf_counter() - start - ready
    assert first == [0] and not ray.is_initialized()
    return (f"Ray start-up (init + 2 actors to first result): {ready:.2f} s; "
            f"next call: {again * 1000:.0f} ms (Ray {ray.__version__})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--items", type=int, default=4, help="items per measurement (a multiple of 2)")
    parser.add_argument("--tiny", action="store_true", help="a seconds-long smoke run (for the tests)")
    parser.add_argument("--no-ray", action="store_true")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    args = parser.parse_args(argv)
    workloads, repeats, n_items = (TINY, 1, 2) if args.tiny else (
        {name: WORKLOADS[name] for name in args.workloads.split(",")}, args.repeats, args.items)

    import torch

    print(f"torch {torch.__version__}, {n_items} items per run, median of {repeats}")
    sizes = [("process 2x1", 1)] if args.tiny else [("process 2x1", 1), ("process 2x2", 2)]
    start = time.perf_counter()
    pools = {label: make_map("process", workers=2, threads_per_worker=threads) for label, threads in sizes}
    for m in pools.values():
        m(noop, [0, 1])
    print(f"pool start-up ({len(pools)} pool(s) of 2 spawned workers, torch imported): "
          f"{time.perf_counter() - start:.2f} s")
    serial = make_map("serial")
    warm_up = [(TINY["mlp"], 0), (TINY["mlp"], 1)]  # first-use costs (lazy imports in torch.optim)
    for m in [serial, *pools.values()]:
        m(train_item, warm_up)
    for name, workload in workloads.items():
        steps = workload[-1]
        # (map, torch threads in this process) per configuration
        configs = {"serial 1x2": (serial, 2), "serial 1x1": (serial, 1),
                   **{label: (m, 2) for label, m in pools.items()}}
        rates = {label: [] for label in configs}
        for r in range(repeats):  # interleaved, so load from other users hits every configuration alike
            for label, (m, threads) in configs.items():
                torch.set_num_threads(threads)
                rates[label].append(run_once(m, workload, n_items, 1000 * r))
                print(f"  run {r + 1}: {name} {label} {rates[label][-1] * steps:.1f} steps/s", flush=True)
        for label, r in rates.items():
            print(f"{name:18s} {label:12s} {fmt(r, steps)}")
        base = statistics.median(rates["serial 1x2"])
        ratios = ", ".join(f"{label} {statistics.median(rates[label]) / base:.2f}"
                           for label in rates if label != "serial 1x2")
        print(f"{name:18s} ratio to serial: {ratios}")
    for m in pools.values():
        m.close()
    if not args.no_ray:
        print(ray_startup())


if __name__ == "__main__":
    main()
