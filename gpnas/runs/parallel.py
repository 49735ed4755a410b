"""A swappable ``map`` for evaluations: in-process, a local process pool, or Ray.

The engine registers ``make_map(...)`` as DEAP's ``toolbox.map`` and never
knows which backend runs behind it. ``m(fn, items)`` returns one slot per item,
in item order: fn's result, or a ``Failure`` when the item raised or its worker
died. A failure never stops the run; the caller decides what a failed
evaluation means.

fn must be a picklable top-level function (or a functools.partial of one) and
items picklable values: workers import fn's module by name. Results depend
only on fn and the items, never on the backend, so the same seed gives the
same results serially, in the pool and on Ray (provided fn fixes its own torch
thread count or its results do not depend on it).

Retries. An exception raised by fn is deterministic (the same item raises
again), so it becomes a Failure at once. Only infrastructure failures are
retried: a worker process that dies (os._exit, SIGKILL, a segfault, the OOM
killer) or a Ray actor that dies. Its item runs again, on a fresh worker, up
to ``retries`` more times; then it is a Failure. The serial backend has no
worker to lose, so it never retries.

Time limit. ``m(fn, items, timeout=T)`` gives every item at most T seconds:
an item still running then becomes a ``Failure`` saying so, and the process
or Ray actor running it is killed and replaced (a hung evaluation, a deadlock,
a wedged device), so one stuck item never stalls the run. It is not retried:
what hung once would hang again. The serial backend interrupts fn with
SIGALRM in the main thread, which stops Python code and sleeps; a call stuck
inside native code is only interrupted when it returns to Python, so use the
process or Ray backend where that matters.

Backends:

- ``auto``: ``default_backend_and_workers()``, measured for the 2-core machine kind.
- ``serial``: a plain loop in the calling process; torch's thread count is
  left as the caller set it.
- ``process``: long-lived worker processes started with ``spawn`` (a fork
  after torch ran threaded code can hang). Each worker gets
  OMP_NUM_THREADS/MKL_NUM_THREADS in its environment before anything is
  imported and calls ``torch.set_num_threads`` at start. The pool is kept
  across calls (starting a worker and importing torch costs seconds).
  Each worker has its own pipe, so a dead worker is tied to exactly the
  item it was running (a ProcessPoolExecutor only says the whole pool broke).
- ``ray``: one long-lived actor per GPU (``num_gpus=gpus_per_task``) where the
  cluster has GPUs, so CUDA initialises once per actor; otherwise ``workers``
  CPU actors. ``address=None`` or ``"local"`` starts a private local Ray
  without a dashboard (a bare ``ray.init()`` may attach to a stale cluster);
  ``"auto"`` or ``"HOST:PORT"`` attaches to a running cluster. When Ray is
  already initialised in this process, the map uses that session.

Big shared inputs: ``Map.share(value)`` returns a handle to put in the items.
fn receives the value itself: serial and process maps return the value
unchanged (the process pool pickles it with every item, so prefer passing a
path on a local or shared filesystem there), Ray puts it once in its object
store (one copy per node, zero-copy for numpy arrays) and each actor resolves
the handle wherever it sits in an item's tuples, lists and dict values.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

from gpnas.errors import ConfigError

BACKENDS = ("auto", "serial", "process", "ray")
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@dataclass(frozen=True)
class Failure:
    """One slot's failure, returned in place of a result."""

    reason: str    # "worker died (exit code -9)", "RuntimeError: CUDA out of memory ...", ...
    attempts: int  # how many times the item was started


def timeout_reason(timeout: float) -> str:
    """The Failure reason of an item stopped at its time limit."""
    return (f"timed out: still running after the {timeout:g} s limit per evaluation "
            "(budget.eval_timeout_s); stopped, and its worker replaced")


def _check_timeout(timeout) -> float | None:
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ConfigError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
    return float(timeout)


def usable_cpus() -> int:
    """CPU cores this process may run on (its affinity mask, not the machine's total)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def cuda_devices() -> int:
    """GPUs torch can use here (0 without torch or CUDA)."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def default_backend_and_workers() -> tuple[str, int]:
    """The backend and worker count ``auto`` picks on this machine.

    Without a GPU: one worker process per core, one torch thread each.
    Measured on the 2-core machine kind (experiments/bench_parallel.py, figures
    in the README): two single-threaded workers trained small transformers and
    MLPs faster in aggregate than one process with two threads, and two workers
    with two threads each were slower than both (oversubscribed cores). With a
    single core a pool has nothing to gain, so evaluations run in-process.
    With a GPU, evaluations run in-process on it: a pool of CPU-sized workers
    would crowd onto one device (use Ray for one worker per GPU).
    """
    cpus = usable_cpus()
    if cpus == 1 or cuda_devices():
        return ("serial", 1)
    return ("process", cpus)


def make_map(backend: str = "auto", workers: int | None = None, address: str | None = None,
             threads_per_worker: int | None = None, retries: int = 1,
             gpus_per_task: float | None = None) -> "Map":
    """Build the map for ``backend`` (auto, serial, process or ray); see the module docstring.

    workers: pool size or Ray actor count (default: one per core; on Ray one per
    GPU, else one per cluster CPU). threads_per_worker: torch threads in each
    worker (default: cores // workers for the pool, 1 on Ray). retries: how
    often an item whose worker died runs again. gpus_per_task: GPUs per Ray
    actor (default 1 where the cluster has GPUs, else 0).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers must be at least 1, got {workers}: use --workers 1 or more")
    if threads_per_worker is not None and threads_per_worker < 1:
        raise ConfigError(f"threads per worker must be at least 1, got {threads_per_worker}")
    if retries < 0:
        raise ConfigError(f"retries must be 0 or more, got {retries}")
    if address is not None and backend != "ray":
        raise ConfigError(f"--address {address} needs --backend ray")
    if backend == "auto":
        backend, default_workers = default_backend_and_workers()
        if workers is not None:
            backend = "process" if workers > 1 else "serial"
        else:
            workers = default_workers
    if backend == "serial":
        return SerialMap()
    if backend == "process":
        workers = workers or usable_cpus()
        threads = threads_per_worker or max(1, usable_cpus() // workers)
        return ProcessMap(workers, threads, retries)
    return RayMap(workers, address, threads_per_worker or 1, retries, gpus_per_task)


def failure_reason(exc: BaseException) -> str:
    """``"Type: message"`` for an exception, the way a traceback's last line reads."""
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


class Map:
    """``results = m(fn, items, timeout=None)``: a list in item order, each slot a result or a
    Failure; ``timeout`` is each item's limit in seconds (None: no limit)."""

    backend: str = ""
    workers: int = 1

    def __call__(self, fn, items, timeout: float | None = None) -> list:
        raise NotImplementedError

    def share(self, value):
        """A handle for a big input that many items use; fn receives the value itself."""
        return value

    def close(self) -> None:
        """Stop the workers. The map cannot be used afterwards; closing twice is harmless."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __repr__(self):
        return f"<{type(self).__name__} backend={self.backend} workers={self.workers}>"


class SerialMap(Map):
    """In-process, in order. Never retries: an exception from fn is deterministic."""

    backend = "serial"
    workers = 1

    def __call__(self, fn, items, timeout: float | None = None) -> list:
        timeout = _check_timeout(timeout)
        results = []
        for item in items:
            try:
                with _time_limit(timeout):
                    results.append(fn(item))
            except _TimeLimit:
                results.append(Failure(timeout_reason(timeout), 1))
            except Exception as exc:  # KeyboardInterrupt still stops the run
                results.append(Failure(failure_reason(exc), 1))
        return results


class _TimeLimit(BaseException):
    """Raised into fn by SIGALRM. A BaseException, so fn's own ``except Exception`` cannot swallow it."""


class _time_limit:
    """Interrupt the block with _TimeLimit after ``timeout`` seconds (main thread, POSIX; else no limit).

    An alarm the caller had set (a test runner's timeout, a user's own) is re-armed on the way
    out with what was left of it (at once if it fell due inside the block), under its own handler.
    """

    def __init__(self, timeout: float | None):
        self.timeout = timeout
        self.active = (timeout is not None and hasattr(signal, "setitimer")
                       and threading.current_thread() is threading.main_thread())
        self.armed = False

    def _expire(self, signum, frame):
        if self.armed:  # a late signal after the block ended is ignored
            raise _TimeLimit()

    def __enter__(self):
        if self.active:
            self.previous = signal.signal(signal.SIGALRM, self._expire)
            self.armed = True
            self.entered = time.monotonic()
            self.outer = signal.setitimer(signal.ITIMER_REAL, self.timeout)  # (seconds left, interval)
        return self

    def __exit__(self, *exc_info):
        if self.active:
            self.armed = False
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, self.previous)
            left, interval = self.outer
            if left > 0:
                signal.setitimer(signal.ITIMER_REAL, max(left - (time.monotonic() - self.entered), 1e-6), interval)
        return False


# --- the local process pool ---------------------------------------------------------------

def _limit_threads(threads: int) -> None:
    """Pin this process to ``threads`` compute threads; runs first thing in every worker."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)  # for libraries loaded later and for fn's own subprocesses
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # already set, or parallel work already ran (fn's module ran some)
        pass


def run_task(fn, item):
    """Call fn on one item: ``("ok", result)`` or ``("error", reason)``; used by pool and Ray workers."""
    try:
        return ("ok", fn(item))
    except Exception as exc:
        return ("error", failure_reason(exc))


def _worker_main(conn, threads: int) -> None:
    """A pool worker: receive pickled (fn, item), send back a pickled ("ok"|"error", value)."""
    # Ctrl-C in a terminal reaches the whole process group; the driver decides what
    # happens (it stops the workers), so a worker neither dies with a traceback nor
    # leaves its item half done on its own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_threads(threads)
    while True:
        try:
            payload = conn.recv_bytes()
        except (EOFError, OSError):  # the driver closed the pipe or died
            return
        if not payload:  # the driver's polite stop
            return
        try:
            fn, item = pickle.loads(payload)
        except Exception as exc:  # fn's module not importable here, a class missing, ...
            reply = ("error", f"cannot load the task in a worker: {failure_reason(exc)}")
        else:
            reply = run_task(fn, item)
        try:
            data = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            data = pickle.dumps(("error", f"cannot pickle the result: {failure_reason(exc)}"))
        try:
            conn.send_bytes(data)
        except (BrokenPipeError, OSError):
            return


class _Worker:
    """One spawned process and the driver's end of its pipe."""

    def __init__(self, ctx, threads: int):
        self.conn, child_conn = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child_conn, threads),
                                   name="gpnas-worker", daemon=False)  # non-daemon: fn may start processes
        # Thread variables must be in the child's environment before it imports anything
        # (the spawned interpreter may import torch while unpickling the main module).
        saved = {var: os.environ.get(var) for var in _THREAD_VARS}
        os.environ.update({var: str(threads) for var in _THREAD_VARS})
        try:
            self.process.start()
        finally:
            for var, value in saved.items():
                if value is None:
                    os.environ.pop(var, None)
                else:
                    os.environ[var] = value
        child_conn.close()

    def exit_code(self):
        self.process.join(timeout=5.0)
        return self.process.exitcode

    def stop(self, timeout: float) -> None:
        try:
            self.conn.send_bytes(b"")
        except OSError:
            pass
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5.0)
        self.conn.close()

    def kill(self) -> None:
        """SIGKILL, for a worker that is busy and must not finish (a hung item)."""
        self.process.kill()
        self.process.join(5.0)
        self.conn.close()


def _stop_workers(workers: list, timeout: float = 5.0) -> None:
    while workers:
        workers.pop().stop(timeout)


class ProcessMap(Map):
    """A pool of ``workers`` spawned processes with ``threads`` torch threads each, kept across calls."""

    backend = "process"

    def __init__(self, workers: int, threads: int, retries: int = 1):
        import multiprocessing
        import multiprocessing.connection
        import multiprocessing.util

        self.workers, self.threads, self.retries = workers, threads, retries
        self._ctx = multiprocessing.get_context("spawn")
        self._wait = multiprocessing.connection.wait
        self._pool: list[_Worker] = []
        self._closed = False
        # Stops the workers when the map is garbage-collected or at interpreter exit, before
        # multiprocessing joins its non-daemon children (which would otherwise wait forever).
        self._finalizer = multiprocessing.util.Finalize(self, _stop_workers, args=(self._pool, 1.0),
                                                        exitpriority=10)

    def __call__(self, fn, items, timeout: float | None = None) -> list:
        if self._closed:
            raise RuntimeError("this map is closed")
        timeout = _check_timeout(timeout)
        # Pickle everything first: an unpicklable fn or item is the caller's bug and raises here,
        # before any work is handed out.
        payloads = [pickle.dumps((fn, item), protocol=pickle.HIGHEST_PROTOCOL) for item in items]
        results: list = [None] * len(payloads)
        attempts = [0] * len(payloads)
        todo = deque(range(len(payloads)))
        running: dict[_Worker, int] = {}
        deadline: dict[_Worker, float] = {}  # time.monotonic() by which each running item must be done
        while len(self._pool) < min(self.workers, len(payloads)):
            self._pool.append(_Worker(self._ctx, self.threads))
        try:
            while todo or running:
                for worker in list(self._pool):
                    if todo and worker not in running:
                        index = todo.popleft()
                        try:
                            worker.conn.send_bytes(payloads[index])
                        except OSError:  # died while idle: replace it, the item never started
                            todo.appendleft(index)
                            self._replace(worker)
                            continue
                        attempts[index] += 1
                        running[worker] = index
                        if timeout is not None:
                            deadline[worker] = time.monotonic() + timeout
                if not running:
                    continue
                wait_s = None if timeout is None else max(0.0, min(deadline[w] for w in running) - time.monotonic())
                self._wait([w.conn for w in running] + [w.process.sentinel for w in running], timeout=wait_s)
                for worker, index in list(running.items()):
                    reply = self._poll(worker)
                    if reply is None:
                        if timeout is not None and time.monotonic() >= deadline[worker]:
                            del running[worker]
                            self._replace(worker, kill=True)  # hung: kill it, a fresh worker takes its place
                            results[index] = Failure(timeout_reason(timeout), attempts[index])
                        continue
                    del running[worker]
                    if reply[0] == "ok":
                        results[index] = reply[1]
                    elif reply[0] == "error":
                        results[index] = Failure(reply[1], attempts[index])
                    else:  # ("died", reason)
                        self._replace(worker)
                        if attempts[index] <= self.retries:
                            todo.appendleft(index)
                        else:
                            results[index] = Failure(reply[1], attempts[index])
        except BaseException:  # KeyboardInterrupt mid-call: never leave busy workers behind
            self.close()
            raise
        return results

    def _poll(self, worker: _Worker):
        """The worker's reply, ``("died", reason)`` if it is gone, None while it still works."""
        if worker.conn.poll():
            try:
                return pickle.loads(worker.conn.recv_bytes())
            except (EOFError, OSError):
                pass
        elif worker.process.is_alive():
            return None
        return ("died", f"worker died (exit code {worker.exit_code()})")

    def _replace(self, worker: _Worker, kill: bool = False) -> None:
        if kill:
            worker.kill()
        else:
            worker.stop(timeout=0.0)
        self._pool[self._pool.index(worker)] = _Worker(self._ctx, self.threads)

    def close(self) -> None:
        self._closed = True
        self._finalizer()


# --- Ray --------------------------------------------------------------------------------

_RAY_MISSING = "--backend ray needs Ray: pip install 'gpnas[ray]'"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ConfigError(_RAY_MISSING) from None
    return ray


def _resolve_refs(value, ray):
    """``value`` with every Ray ObjectRef in it (through tuples, lists, dict values) fetched."""
    if isinstance(value, ray.ObjectRef):
        return ray.get(value)
    # Exact types only: rebuilding a subclass (a DEAP individual is a list) would lose its class.
    if type(value) in (tuple, list):
        resolved = [_resolve_refs(v, ray) for v in value]
        if any(a is not b for a, b in zip(resolved, value)):
            return type(value)(resolved)
    elif type(value) is dict:
        resolved = {k: _resolve_refs(v, ray) for k, v in value.items()}
        if any(resolved[k] is not value[k] for k in value):
            return resolved
    return value


class _Evaluator:
    """A long-lived Ray actor: pins its threads once (and CUDA initialises once), runs one item at a time."""

    def __init__(self, threads: int):
        _limit_threads(threads)

    def run(self, fn, item):
        import ray

        return run_task(fn, _resolve_refs(item, ray))

    def pid(self) -> int:
        return os.getpid()


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "no details"


class RayMap(Map):
    """Items run on ``workers`` long-lived Ray actors, one item per actor at a time."""

    backend = "ray"

    def __init__(self, workers: int | None, address: str | None, threads: int, retries: int = 1,
                 gpus_per_task: float | None = None):
        ray = self._ray = _import_ray()
        self.threads, self.retries = threads, retries
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            self._init(address, workers, threads)
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0.0)
        if gpus_per_task is None:
            gpus_per_task = 1.0 if gpus else 0.0
        if gpus_per_task > gpus:
            raise ConfigError(f"{gpus_per_task:g} GPUs per evaluation but the Ray cluster has {gpus:g}: "
                              "lower --gpus-per-task or add GPU nodes")
        if workers is None:
            workers = int(gpus // gpus_per_task) if gpus_per_task else int(resources.get("CPU", 1) // threads)
        self.workers = max(1, workers)
        # GPU actors need one CPU for their Python loop; CPU actors reserve the cores their threads use.
        self._options = dict(num_cpus=1 if gpus_per_task else threads, num_gpus=gpus_per_task,
                             max_restarts=0, max_task_retries=0)
        self._actor_class = ray.remote(_Evaluator)
        self._actors: list = []
        self._closed = False

    def _init(self, address, workers, threads) -> None:
        ray = self._ray
        common = dict(include_dashboard=False, logging_level=logging.WARNING)
        if address in (None, "local"):
            # A private local Ray; enough logical CPUs that every requested actor can start.
            ray.init(address="local", num_cpus=max(usable_cpus(), (workers or 0) * threads), **common)
            return
        fix = "start one with `ray start --head`, or leave out --address for a local Ray"
        host, _, port = address.rpartition(":")
        if host and port.isdigit() and "://" not in address:
            # Ray retries an unreachable HOST:PORT for minutes before it gives up: check first.
            try:
                socket.create_connection((host, int(port)), timeout=5.0).close()
            except OSError as exc:
                raise ConfigError(f"cannot reach a Ray cluster at {address} ({exc.strerror or exc}): {fix}"
                                  ) from None
        try:
            ray.init(address=address, **common)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"cannot reach a Ray cluster at {address} ({_first_line(str(exc))}): {fix}"
                              ) from None

    def share(self, value):
        """An ObjectRef: Ray stores the value once per node and each actor resolves it for fn."""
        return self._ray.put(value)

    def __call__(self, fn, items, timeout: float | None = None) -> list:
        if self._closed:
            raise RuntimeError("this map is closed")
        timeout = _check_timeout(timeout)
        ray = self._ray
        items = list(items)
        results: list = [None] * len(items)
        attempts = [0] * len(items)
        todo = deque(range(len(items)))
        running: dict = {}  # ObjectRef of a run -> (actor slot, item index)
        deadline: dict = {}  # ObjectRef -> time.monotonic() by which it must be done
        while len(self._actors) < min(self.workers, len(items)):
            self._actors.append(self._actor_class.options(**self._options).remote(self.threads))
        fn_ref = ray.put(fn)  # serialised once per call, not once per item
        try:
            while todo or running:
                busy = {slot for slot, _ in running.values()}
                for slot in range(len(self._actors)):
                    if todo and slot not in busy:
                        index = todo.popleft()
                        attempts[index] += 1
                        ref = self._actors[slot].run.remote(fn_ref, items[index])
                        running[ref] = (slot, index)
                        if timeout is not None:
                            deadline[ref] = time.monotonic() + timeout
                wait_s = None if timeout is None else max(0.0, min(deadline.values()) - time.monotonic())
                ready, _ = ray.wait(list(running), num_returns=1, timeout=wait_s)
                if not ready:  # the earliest deadline passed: kill the actors of the overdue items
                    now = time.monotonic()
                    for ref in [r for r in running if deadline[r] <= now]:
                        slot, index = running.pop(ref)
                        del deadline[ref]
                        self._replace(slot)
                        results[index] = Failure(timeout_reason(timeout), attempts[index])
                    continue
                [done] = ready
                slot, index = running.pop(done)
                deadline.pop(done, None)
                try:
                    status, value = ray.get(done)
                except ray.exceptions.RayTaskError as exc:  # fn could not even be called (unpickling)
                    cause = getattr(exc, "cause", None)
                    reason = failure_reason(cause) if cause is not None else _first_line(str(exc))
                    results[index] = Failure(f"cannot load the task in a worker: {reason}", attempts[index])
                except ray.exceptions.RayError as exc:  # the actor or its node died
                    self._replace(slot)
                    if attempts[index] <= self.retries:
                        todo.appendleft(index)
                    else:
                        reason = f"worker died ({type(exc).__name__}: {_first_line(str(exc))})"
                        results[index] = Failure(reason, attempts[index])
                else:
                    results[index] = value if status == "ok" else Failure(value, attempts[index])
        except BaseException:  # KeyboardInterrupt mid-call: stop the busy actors
            self._kill_actors()
            raise
        return results

    def _replace(self, slot: int) -> None:
        try:
            self._ray.kill(self._actors[slot], no_restart=True)
        except Exception:  # already gone
            pass
        self._actors[slot] = self._actor_class.options(**self._options).remote(self.threads)

    def _kill_actors(self) -> None:
        while self._actors:
            try:
                self._ray.kill(self._actors.pop(), no_restart=True)
            except Exception:
                pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._ray.is_initialized():
            self._kill_actors()
            if self._owns_ray:
                self._ray.shutdown()
