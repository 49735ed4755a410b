"""Top-level functions for tests/test_parallel.py: spawned pool workers and Ray actors import them by name."""

import os
import signal
from pathlib import Path

import numpy as np


def square(x):
    return x * x


def pid(_):
    return os.getpid()


def fail_on_three(x):
    if x == 3:
        raise ValueError(f"bad item {x}")
    return x * 10


def seeded_training(seed: int) -> list[float]:
    """A few steps of SGD on a small seeded torch MLP; the losses depend only on the seed."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(64, 8, generator=gen)                          # (batch, features)
    y = x @ torch.randn(8, 1, generator=gen) + 0.1 * torch.randn(64, 1, generator=gen)
    w1 = (torch.randn(8, 16, generator=gen) * 0.3).requires_grad_()
    w2 = (torch.randn(16, 1, generator=gen) * 0.3).requires_grad_()
    opt = torch.optim.SGD([w1, w2], lr=0.05)
    losses = []
    for _ in range(20):
        loss = ((torch.tanh(x @ w1) @ w2 - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    noise = np.random.default_rng(seed).normal(size=3).tolist()   # numpy too, seeded explicitly
    return losses + noise


def die_once(args):
    """Kill this worker on the first attempt at item ``x`` (a marker file remembers), then succeed."""
    x, marker_dir = args
    marker = Path(marker_dir) / f"died-{x}"
    if x == 1 and not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # dies every time
    return x * 100


def data_sum(args):
    """Sum of a shared array plus an offset; the array arrives as a Map.share handle."""
    data, offset = args
    return float(np.asarray(data).sum()) + offset


def thread_settings(_):
    """(torch threads, OMP_NUM_THREADS) as a worker sees them."""
    import torch

    return torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")


def hang_on_minus_one(args):
    """x * 10, except item -1: it writes its process id to ``pid_file`` and then never returns
    (a wait on an event nobody sets, as a deadlocked or wedged evaluation would)."""
    import threading

    x, pid_file = args
    if x == -1:
        Path(pid_file).write_text(str(os.getpid()))
        threading.Event().wait()
    return x * 10
