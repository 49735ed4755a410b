"""Crash safety: ``gpnas evolve`` killed with SIGKILL at chosen moments, then
resumed, ends exactly where an uninterrupted run ends, with an intact archive;
Ctrl-C stops a run cleanly (workers included) and says how to continue.

The kills are real: a subprocess runs the CLI with one function wrapped so that
the process sends itself SIGKILL at the chosen moment (during early training,
during a promotion's full training, halfway through writing a snapshot, right
after the last snapshot). experiments/crash_trials.py does the same at random
moments, many times.
"""

import contextlib
import errno
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gpnas.config import load_preset
from gpnas.jobs.run import execute, new_run, open_run
from gpnas.report.run import deterministic_part
from gpnas.runs.archive import Archive
from gpnas.runs.folder import RunFolder
from gpnas.runs.parallel import SerialMap
from gpnas.train.data import load_dataset

ROOT = Path(__file__).resolve().parents[1]
GENERATIONS = 1

# Runs `gpnas evolve` with a kill switch: argv[1] names the moment, the rest is the CLI's argv.
DRIVER = r'''
import os, signal, sys

moment, argv = sys.argv[1], sys.argv[2:]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

import gpnas.train.trainer as training
calls = {"early": 0, "full": 0}
original_train = training.train
from gpnas.config import load_preset
SEEDS = load_preset("micro").ga.seed_archive

def train(config, dataset, *, seed, stop_at=None, on_step=None, **kw):
    kind = "full" if stop_at is None or stop_at >= config.max_iters else "early"
    calls[kind] += 1
    def step(n, loss):
        # generation 1: the 2nd early run at step 4; the first promotion (the full
        # run after the seeded archive's) at step 12
        if (moment == "early-training" and kind == "early" and calls["early"] == 2 and n >= 4) or \
           (moment == "promotion" and kind == "full" and calls["full"] == SEEDS + 1 and n >= 12):
            die()
        if on_step is not None:
            on_step(n, loss)
    return original_train(config, dataset, seed=seed, stop_at=stop_at, on_step=step, **kw)

training.train = train

import gpnas.runs.folder as runfolder
original_write = runfolder.write_atomic

def write_atomic(path, text):
    if moment == "mid-snapshot" and path.name == "gen_0001.json":
        with open(path.with_name(f".{path.name}.tmp"), "w") as handle:  # half the file, then the kill
            handle.write(text[: len(text) // 2])
        die()
    original_write(path, text)

runfolder.write_atomic = write_atomic
original_derived = runfolder.RunFolder.save_derived

def save_derived(self, hall_of_fame, logbook):
    if moment == "after-last-snapshot" and logbook[-1]["generation"] == int(os.environ["GENERATIONS"]):
        die()  # the snapshot is on disk; logbook.csv and hall_of_fame.json are not yet
    original_derived(self, hall_of_fame, logbook)

runfolder.RunFolder.save_derived = save_derived

from gpnas.cli import main
main(argv)
'''


def micro_args(corpus, out):
    return ["evolve", "--preset", "micro", "--threads", "1", "--backend", "serial",
            "--generations", str(GENERATIONS), "--data-dir", str(corpus), "--out", str(out)]


def env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "GENERATIONS": str(GENERATIONS)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, corpus):
    """The uninterrupted run's summary (same preset, seed and data as the killed runs)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        run = new_run(tmp_path_factory.mktemp("ref") / "run", load_preset("micro"), "combined", 0,
                      load_dataset(corpus))
        summary, _ = execute(run, GENERATIONS, threads=1)
    return summary


def resume(folder, corpus):
    run = open_run(folder, load_dataset, corpus)
    summary, _ = execute(run, GENERATIONS, threads=1)
    return summary


@pytest.mark.parametrize("moment", ["early-training", "promotion", "mid-snapshot", "after-last-snapshot"])
def test_a_run_killed_at_a_chosen_moment_resumes_to_the_uninterrupted_result(tmp_path, corpus, reference,
                                                                             moment):
    out = tmp_path / "run"
    killed = subprocess.run([sys.executable, "-c", DRIVER, moment, *micro_args(corpus, out)], cwd=ROOT,
                            env=env(), capture_output=True, text=True)  # a missed kill ends the run: rc 0
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    snapshots = [p.name for p in RunFolder(out).snapshot_paths()]
    assert snapshots == (["gen_0000.json", "gen_0001.json"] if moment == "after-last-snapshot"
                         else ["gen_0000.json"])
    if moment == "mid-snapshot":
        assert (out / "snapshots" / ".gen_0001.json.tmp").exists()  # the torn write, never read
    if moment == "after-last-snapshot":
        assert len((out / "logbook.csv").read_text().splitlines()) == 2  # header and generation 0 only

    summary = resume(out, corpus)

    assert deterministic_part(summary) == deterministic_part(reference)
    with Archive(out / "archive.sqlite") as archive:
        assert archive.integrity_check()
    assert not list(out.rglob("*.tmp")), "temporary files of the killed run are cleaned up"
    assert len((out / "logbook.csv").read_text().splitlines()) == 1 + 1 + GENERATIONS
    assert json.loads((out / "hall_of_fame.json").read_text())[:5] == summary["hall_of_fame"]


def _session_processes(sid: int) -> list[str]:
    """Live (not zombie) processes of a session, as 'pid state cmdline'."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(f"{entry.name} {fields[0]} {cmdline[:80]}")
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc to list the workers")
@pytest.mark.parametrize("backend, signum", [("serial", signal.SIGINT), ("process", signal.SIGINT),
                                             ("serial", signal.SIGTERM)])
def test_ctrl_c_stops_cleanly_says_how_to_resume_and_leaves_no_worker(tmp_path, corpus, backend, signum):
    out = tmp_path / "run"
    args = micro_args(corpus, out)
    args[args.index("--generations") + 1] = "3"
    args[args.index("--backend") + 1] = backend
    if backend == "process":
        args += ["--workers", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "gpnas", *args], cwd=ROOT, env=env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)  # a process group of its own, like a terminal job
    try:
        # Events, not clocks: generation 0's line (printed after its snapshot), then the first
        # evaluation of generation 1 in the archive: the interrupt lands mid-generation.
        lines = iter(proc.stdout.readline, "")
        assert any(line.startswith("gen   0") for line in lines), "the run ended before generation 0"
        with Archive(out / "archive.sqlite") as archive:
            after_generation_0 = archive.count()
            while archive.count() == after_generation_0 and proc.poll() is None:
                time.sleep(0.02)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
        else:
            os.kill(proc.pid, signum)  # what a scheduler does to the job's main process
        stdout, stderr = proc.communicate(timeout=300)  # a missed interrupt ends the run: rc 0
    except BaseException:  # a hang (this wait's or the suite's time limit) or a failed check: no process left
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        raise

    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stderr, stderr[-2000:]
    assert f"Continue with: gpnas evolve --resume {out}\n" in stderr  # the run knows its own target
    for _ in range(100):  # the driver stopped its workers before it exited; the kernel may lag in reaping
        if not _session_processes(proc.pid):
            break
        time.sleep(0.1)
    assert _session_processes(proc.pid) == []
    with Archive(out / "archive.sqlite") as archive:
        assert archive.integrity_check()
    assert RunFolder(out).load_latest() is not None


def test_crash_trials_script_runs_in_a_tiny_mode(tmp_path, corpus, capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import crash_trials
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    code = crash_trials.main(["--trials", "1", "--generations", "1", "--out", str(tmp_path / "trials"),
                              "--data-dir", str(corpus)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "trials 1," in printed and "resumed correctly 1, integrity ok 1, mismatches 0" in printed
    tally = json.loads((tmp_path / "trials" / "tally.json").read_text())["tally"]
    assert tally["trials"] == 1 and tally["resumed_correctly"] == 1


# ------------------------------------------------------------------ training faults: the run goes on

def run_one_generation(tmp_path, corpus, overrides=(), **kwargs):
    run = new_run(tmp_path / "run", load_preset("micro", overrides), "combined", 0, load_dataset(corpus))
    summary, state = execute(run, GENERATIONS, threads=1, **kwargs)
    with Archive(run.folder.archive_path) as archive:
        statuses = {r.key: (r.status, r.arch, r.failure) for r in archive.all()}
    return summary, state, statuses


@pytest.mark.parametrize("when", ["in training", "from the first evaluation"])
def test_a_diverging_male_gets_the_worst_fitness_and_the_run_goes_on(tmp_path, corpus, monkeypatch, when):
    """NaN loss for every model 32 wide: those evaluations are 'diverged', the others carry the run."""
    import torch

    from gpnas.train.model import GPT

    forward = GPT.forward

    def nan_when_wide(self, idx, targets=None):
        logits, loss = forward(self, idx, targets)
        if loss is not None and self.config.n_embd == 32 and (self.training or when != "in training"):
            loss = loss * torch.tensor(float("nan"))
        return logits, loss

    monkeypatch.setattr(GPT, "forward", nan_when_wide)
    summary, state, statuses = run_one_generation(tmp_path, corpus)

    diverged = [arch for status, arch, _ in statuses.values() if status == "diverged"]
    assert diverged and all(arch["n_embd"] == 32 for arch in diverged)
    assert any(status in ("early", "complete") for status, _, _ in statuses.values())
    reasons = {f["reason"] for f in summary["failures"]}
    assert reasons == {"diverged (NaN or inf loss)"}
    assert all(f["arch"]["n_embd"] == 32 for f in summary["failures"])
    assert summary["generations"] == GENERATIONS and summary["best_architecture"]["arch"]["n_embd"] != 32


def test_a_model_diverged_before_its_first_step_is_a_result_not_a_crash(tiny_dataset, monkeypatch):
    import torch

    from gpnas.train.model import GPT
    from gpnas.train.trainer import TrainConfig, train

    forward = GPT.forward
    monkeypatch.setattr(GPT, "forward", lambda self, idx, targets=None: (
        forward(self, idx, targets)[0], None if targets is None else torch.tensor(float("inf"))))
    config = TrainConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, batch_size=2, max_iters=6,
                         eval_interval=2, eval_batches=1, warmup_iters=0)
    result = train(config, tiny_dataset, seed=0, threads=1, device="cpu")
    assert result.curve.diverged and result.curve.steps_done == 0 and not result.completed
    assert math.isnan(result.best_val_loss) and math.isnan(result.final_train_loss)


@pytest.mark.parametrize("error", ["cuda-oom", "runtime-oom", "host-oom"])
def test_out_of_memory_is_a_failed_evaluation_with_its_reason_and_the_run_goes_on(tmp_path, corpus,
                                                                                  monkeypatch, error):
    import torch

    import gpnas.train.trainer as training

    train = training.train
    raised = {"cuda-oom": torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
              "runtime-oom": RuntimeError("CUDA out of memory. Tried to allocate 2.00 MiB (GPU 0; 79.15 GiB total)"),
              "host-oom": RuntimeError("[enforce fail at alloc_cpu.cpp:83] DefaultCPUAllocator: can't allocate "
                                       "memory: you tried to allocate 68719476736 bytes")}[error]

    def train_or_run_out(config, dataset, **kwargs):
        if config.n_embd == 32:
            raise raised
        return train(config, dataset, **kwargs)

    monkeypatch.setattr(training, "train", train_or_run_out)
    summary, _, statuses = run_one_generation(tmp_path, corpus)

    failed = [(arch, failure) for status, arch, failure in statuses.values() if status == "failed"]
    assert failed and all(arch["n_embd"] > 8 for arch, _ in failed)
    assert all("OutOfMemory: out of memory training n_layer=" in failure for _, failure in failed)
    assert summary["failures"] and all("out of memory" in f["reason"] for f in summary["failures"])
    assert summary["generations"] == GENERATIONS and summary["best_architecture"] is not None


def test_a_simplification_that_never_ends_is_abandoned_and_the_run_finishes(tmp_path, corpus, monkeypatch):
    import threading

    import sympy

    from gpnas.predict import closedform

    never, calls = threading.Event(), []
    monkeypatch.setattr(sympy, "simplify", lambda expr, **kw: calls.append(expr) or never.wait())  # blocks, in C
    bounded = closedform.simplify_bounded
    monkeypatch.setattr(closedform, "simplify_bounded",
                        lambda expr, timeout_s=2.0, simplify=None: bounded(expr, min(timeout_s, 0.1), simplify))
    summary, _, _ = run_one_generation(tmp_path, corpus)  # returns at all: every endless simplify was abandoned
    assert calls, "the report asked sympy to simplify"
    assert summary["females"] and all(row["formula"] for row in summary["females"])
    never.set()  # let the abandoned threads go


def evaluation_whose_worker_dies_on_wide_models(item):
    """For a process pool: the worker running an early evaluation wider than 8 is killed outright."""
    from gpnas.runs.worker import run_shipped

    task = item[0]  # (task, training text)
    if task.train_config["n_embd"] > 8 and task.stop_at < task.train_config["max_iters"]:
        os.kill(os.getpid(), signal.SIGKILL)
    return run_shipped(item)


def test_a_worker_that_dies_is_a_failed_evaluation_and_the_run_goes_on(tmp_path, corpus):
    from gpnas.runs.parallel import ProcessMap

    pool = ProcessMap(workers=1, threads=1, retries=0)
    try:
        summary, _, statuses = run_one_generation(
            tmp_path, corpus, map_fn=lambda fn, items: pool(evaluation_whose_worker_dies_on_wide_models, items))
    finally:
        pool.close()
    failed = [(arch, failure) for status, arch, failure in statuses.values() if status == "failed"]
    assert failed and all(arch["n_embd"] > 8 for arch, _ in failed)
    assert {f["reason"] for f in summary["failures"]} == {"worker died (exit code -9)"}
    assert summary["generations"] == GENERATIONS and summary["best_architecture"] is not None


class HangingOnce(SerialMap):
    """The serial map, except that the second evaluation it is given never returns (a planted hang)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, fn, items, timeout=None):
        return super().__call__(self.evaluate, items, timeout)

    def evaluate(self, item):
        from gpnas.runs.worker import run_shipped

        self.calls += 1
        if self.calls == 2:
            self.hung = item[0].key
            threading.Event().wait()
        return run_shipped(item)


def test_an_evaluation_past_its_time_limit_is_a_failed_evaluation_and_the_run_goes_on(tmp_path, corpus):
    hanging = HangingOnce()
    summary, _, statuses = run_one_generation(tmp_path, corpus, ["budget.eval_timeout_s=10"], map_fn=hanging)
    status, _, failure = statuses[hanging.hung]
    assert status == "failed" and failure.startswith("timed out") and "10 s limit" in failure
    assert [f["key"] for f in summary["failures"]] == [hanging.hung]
    assert [s for s, _, _ in statuses.values()].count("failed") == 1  # every other evaluation went through
    assert summary["generations"] == GENERATIONS and summary["best_architecture"] is not None


# ------------------------------------------------------------------ predictor files

class HalfWriter:
    """A file whose first write puts half the text on disk, then fails as a full disk does."""

    def __init__(self, handle):
        self.handle = handle

    def write(self, text):
        self.handle.write(text[: len(text) // 2])
        self.handle.flush()
        raise OSError(errno.ENOSPC, "No space left on device")

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.handle.close()

    def __getattr__(self, name):
        return getattr(self.handle, name)


def test_a_predictor_save_that_fails_midway_leaves_the_saved_files_as_they_were(tmp_path, monkeypatch):
    import builtins
    import io

    from gpnas.predict.features import FEATURE_NAMES
    from gpnas.predict.predictor import FORMAT, VERSION, CurvePredictor

    def predictor(tree):
        path = tmp_path / f"{len(tree)}.json"
        row = {"kind": "tree", "tree": tree, "complexity": 3, "scaling": {"coef": [0.0, 1.0], "lo": -1, "hi": 1}}
        path.write_text(json.dumps({"format": FORMAT, "version": VERSION, "features": list(FEATURE_NAMES),
                                    "prefix": {"frac": 0.2}, "equations": [row], "best_index": 0}))
        return CurvePredictor.load(path)

    folder = tmp_path / "saved"
    predictor("add(rel_last, 0.5)").save(folder)
    saved = {p.name: p.read_bytes() for p in folder.iterdir()}
    real_open = builtins.open

    def full_disk_open(file, mode="r", *args, **kwargs):
        handle = real_open(file, mode, *args, **kwargs)
        if isinstance(file, (str, os.PathLike)) and Path(file).parent == folder and mode[0] in "wx":
            return HalfWriter(handle)
        return handle

    monkeypatch.setattr(builtins, "open", full_disk_open)
    monkeypatch.setattr(io, "open", full_disk_open)  # what pathlib's write_text opens with
    with pytest.raises(OSError, match="No space left"):
        predictor("mul(rel_last, sub(rel_best, 0.25))").save(folder)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == saved  # no torn file, no temporary left
    assert CurvePredictor.load(folder).equations_[0].tree == "add(rel_last, 0.5)"
