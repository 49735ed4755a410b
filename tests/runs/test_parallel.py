"""The swappable map: same results on every backend, failures in their slots, dead workers survived."""

import os
import sys
import time
from pathlib import Path

import pytest

from gpnas.errors import ConfigError
from gpnas.runs import parallel
from gpnas.runs.parallel import Failure, default_backend_and_workers, make_map
from tests.runs import parallel_workloads as work

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def process_map():
    """One two-worker pool for the module: spawning workers and importing torch costs seconds."""
    with make_map("process", workers=2, retries=1) as m:
        yield m


@pytest.fixture(scope="module")
def ray_map():
    """A private local Ray (no dashboard) started by make_map, shut down after the module's tests."""
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'gpnas[ray]'")
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    with make_map("ray", workers=2, retries=1) as m:
        yield m
    assert not ray.is_initialized()


@pytest.fixture(params=["serial", "process", "ray"])
def any_map(request):
    if request.param == "serial":
        return make_map("serial")
    return request.getfixturevalue(f"{request.param}_map")


def test_results_come_back_in_item_order(any_map):
    assert any_map(work.square, range(7)) == [0, 1, 4, 9, 16, 25, 36]
    assert any_map(work.square, []) == []


def test_backends_give_identical_results_on_a_seeded_workload(any_map):
    seeds = [0, 1, 2, 3]
    expected = make_map("serial")(work.seeded_training, seeds)
    assert any_map(work.seeded_training, seeds) == expected
    assert expected[0] != expected[1]  # the workload really depends on the seed
    losses = expected[0][:20]  # then 3 numpy draws
    assert losses[-1] < losses[0]  # the workload really trains


def test_a_raising_item_becomes_a_failure_and_the_others_succeed(any_map):
    results = any_map(work.fail_on_three, range(5))
    assert results[:3] == [0, 10, 20] and results[4] == 40
    assert results[3] == Failure("ValueError: bad item 3", 1)  # deterministic: not retried


def test_a_shared_value_reaches_fn_as_the_value(any_map):
    handle = any_map.share(list(range(10)))
    assert any_map(work.data_sum, [(handle, 1), (handle, 2)]) == [46.0, 47.0]


def _assert_dead_workers_survived(m, tmp_path):
    results = m(work.die_once, [(x, str(tmp_path)) for x in range(4)])
    assert (tmp_path / "died-1").exists()  # item 1 really killed its worker once ...
    assert results[0] == 0 and results[1] == 100 and results[3] == 300  # ... and succeeded on the retry
    assert isinstance(results[2], Failure) and results[2].attempts == 2  # dies every time: 1 + 1 retry
    assert results[2].reason.startswith("worker died")
    assert m(work.square, [1, 2, 3]) == [1, 4, 9]  # the map still works afterwards
    return results[2]


def test_the_process_pool_survives_a_killed_worker(process_map, tmp_path):
    failure = _assert_dead_workers_survived(process_map, tmp_path)
    assert failure.reason == "worker died (exit code -9)"


def test_ray_survives_a_killed_actor(ray_map, tmp_path):
    _assert_dead_workers_survived(ray_map, tmp_path)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_an_item_past_the_time_limit_fails_and_its_worker_is_replaced(any_map, tmp_path):
    """A planted hang: the slot becomes a Failure saying so, the other items succeed, the
    hung process is killed (pool and Ray), and the map keeps working with a fresh worker."""
    assert any_map(work.square, range(4)) == [0, 1, 4, 9]  # warm workers: only the hang nears the limit
    pid_file = tmp_path / "hung.pid"
    limit = 1 if any_map.backend == "serial" else 5  # in-process items never wait for a busy worker
    results = any_map(work.hang_on_minus_one, [(x, str(pid_file)) for x in (0, 1, 2, 3, -1)], timeout=limit)
    assert results[:4] == [0, 10, 20, 30]
    assert isinstance(results[4], Failure)
    assert results[4].attempts == 1  # a hang is not retried: it would hang again
    assert results[4].reason.startswith("timed out") and f"{limit} s limit" in results[4].reason
    assert "budget.eval_timeout_s" in results[4].reason
    hung = int(pid_file.read_text())
    if any_map.backend != "serial":
        assert hung != os.getpid()
        for _ in range(300):  # the kill is sent before the call returns; Ray's reaper may lag
            if _gone(hung):
                break
            time.sleep(0.1)
        assert _gone(hung)
    assert any_map(work.square, [1, 2, 3]) == [1, 4, 9]


def test_a_time_limit_that_is_not_a_positive_number_is_refused():
    for bad in (0, -1, "10", True):
        with pytest.raises(ConfigError, match="timeout must be a positive number"):
            make_map("serial")(work.square, [1], timeout=bad)


def test_the_serial_time_limit_leaves_no_alarm_behind_and_gives_the_callers_back():
    import signal

    outer = signal.setitimer(signal.ITIMER_REAL, 0)  # the test runner's own timeout, if any, comes back below
    before = signal.getsignal(signal.SIGALRM)
    try:
        assert make_map("serial")(work.square, [2, 3], timeout=30) == [4, 9]
        assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)
        assert signal.getsignal(signal.SIGALRM) is before

        rang = []
        signal.signal(signal.SIGALRM, lambda signum, frame: rang.append(signum))
        signal.setitimer(signal.ITIMER_REAL, 50)  # the caller's alarm, due long after the items
        assert make_map("serial")(work.square, [2, 3], timeout=30) == [4, 9]
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 40 < left < 50 and rang == []  # re-armed with what was left of it
        signal.setitimer(signal.ITIMER_REAL, 0.01)  # due inside the block: it rings on the way out
        assert make_map("serial")(lambda x: time.sleep(0.05) or x, [1], timeout=30) == [1]
        time.sleep(0.05)
        assert rang == [signal.SIGALRM]
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, before)
        if outer[0] > 0:
            signal.setitimer(signal.ITIMER_REAL, *outer)


def test_no_retry_when_retries_is_zero(tmp_path):
    with make_map("process", workers=1, threads_per_worker=1, retries=0) as m:
        assert m(work.die_once, [(1, str(tmp_path))]) == [Failure("worker died (exit code -9)", 1)]


def test_the_pool_is_kept_across_calls(process_map):
    first = set(process_map(work.pid, range(6)))
    second = set(process_map(work.pid, range(6)))
    assert first == second and len(first) <= 2


def test_pool_workers_pin_their_thread_count(process_map):
    torch = pytest.importorskip("torch")
    threads = process_map(work.thread_settings, range(2))
    assert threads == [(process_map.threads, str(process_map.threads))] * 2
    assert torch.get_num_threads() >= 1  # the driver's own setting is untouched by the pool


def test_an_unpicklable_function_raises_before_any_work(process_map):
    with pytest.raises(Exception, match="pickle|lambda|local"):
        process_map(lambda x: x, [1])
    assert process_map(work.square, [4]) == [16]


def test_ray_missing_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    with pytest.raises(ConfigError) as info:
        make_map("ray")
    assert str(info.value) == "--backend ray needs Ray: pip install 'gpnas[ray]'"


def test_an_unreachable_ray_address_is_one_line():
    ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'gpnas[ray]'")
    if ray.is_initialized():  # the module's shared session would be reused instead of dialling the address
        ray.shutdown()
    with pytest.raises(ConfigError, match=r"cannot reach a Ray cluster at 127\.0\.0\.1:1 .*ray start --head"):
        make_map("ray", address="127.0.0.1:1")  # nothing listens on port 1


def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown backend 'threads'"):
        make_map("threads")
    with pytest.raises(ConfigError, match="workers must be at least 1"):
        make_map("process", workers=0)
    with pytest.raises(ConfigError, match="needs --backend ray"):
        make_map("process", address="auto")


def test_auto_uses_the_measured_default(monkeypatch):
    monkeypatch.setattr(parallel, "cuda_devices", lambda: 0)
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 1)
    assert default_backend_and_workers() == ("serial", 1)
    assert make_map("auto").backend == "serial"
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)
    assert default_backend_and_workers() == ("process", 4)
    with make_map("auto") as m:  # workers start lazily: nothing is spawned here
        assert (m.backend, m.workers, m.threads) == ("process", 4, 1)
    assert make_map("auto", workers=1).backend == "serial"
    monkeypatch.setattr(parallel, "cuda_devices", lambda: 1)  # a GPU: evaluations run on it, in-process
    assert default_backend_and_workers() == ("serial", 1)


def test_the_benchmark_script_runs_in_tiny_mode(monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    # In-process (this session has imported torch already); its pool workers import the script by name.
    monkeypatch.syspath_prepend(str(ROOT / "experiments"))
    import bench_parallel

    threads = torch.get_num_threads()
    try:
        bench_parallel.main(["--tiny", "--no-ray"])
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    assert "mlp                process 2x1" in out and "ratio to serial: serial 1x1" in out
