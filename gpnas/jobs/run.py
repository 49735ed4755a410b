"""Start, resume and finish runs: the library behind ``gpnas evolve`` and
``gpnas ablate``. It wires a preset, a dataset, an archive and a map into an
``Evolution``, and writes the report when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

from gpnas.config import check_fits, eval_time_limit, largest_architecture, preset_from_dict, preset_to_dict
from gpnas.errors import ConfigError, FileFormatError
from gpnas.report.run import summarize, write_report
from gpnas.runs.archive import Archive, archive_knows_run, evaluation_count
from gpnas.runs.folder import ARCHIVE_NAME, RunFolder, is_inside, write_json
from gpnas.runs.worker import Evaluator
from gpnas.search.engine import MODES, Evolution
from gpnas.search.males import encode, train_config_dict
from gpnas.search.methods import METHODS
from gpnas.train.trainer import TrainConfig

DEFAULT_GENERATIONS = 20  # the target of a run that recorded none (made before targets were recorded)


@dataclass
class Run:
    folder: RunFolder
    preset: object
    mode: str
    seed: int
    dataset: object
    target: int | None = None  # generations the run was asked for (run.json "generations")

    @property
    def done(self) -> int:
        """Generations finished so far (the newest snapshot's number; -1 before generation 0)."""
        paths = self.folder.snapshot_paths()
        return int(paths[-1].stem.split("_")[1]) if paths else -1


def default_out(preset_name: str, mode: str, seed: int, root: Path = Path("runs")) -> Path:
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{preset_name}-{mode}-s{seed}"


def new_run(out, preset, mode: str, seed: int, dataset, archive_path=None, generations: int | None = None) -> Run:
    """Create the run folder and record what the run is (and, given, its target:
    the generations a plain ``--resume`` continues to).

    ``archive_path`` is the archive the user named (``--archive``); without it the
    archive lives in the folder. One named outside the folder is recorded as such
    in run.json with a fresh ``run_id`` that the archive records too, so a resume
    can tell the user's archive from a path a forged run.json names.
    """
    if mode not in MODES and mode not in METHODS:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join([*MODES, *METHODS])}")
    out = Path(out)
    where = {"archive": ARCHIVE_NAME}
    if archive_path is not None:
        archive_path = Path(archive_path).resolve()
        root = out.resolve()
        if is_inside(archive_path, root):
            where = {"archive": archive_path.relative_to(root).as_posix()}
        else:
            run_id = uuid.uuid4().hex
            with Archive(archive_path) as archive:
                archive.register_run(run_id, root)
            where = {"archive": str(archive_path), "archive_external": True, "run_id": run_id}
    folder = RunFolder.create(out, {
        "mode": mode,
        "seed": seed,
        "preset": preset_to_dict(preset),
        "data": {"name": dataset.name, "dir": str(Path(dataset.text_path).parent.resolve()),
                 "sha256": dataset.sha256},
        **where,
        "created": datetime.now().isoformat(timespec="seconds"),
        **({"generations": generations} if generations is not None else {}),
    })
    return Run(folder, preset, mode, seed, dataset, generations)


def open_run(path, dataset_loader, data_dir=None) -> Run:
    """An existing run as it was recorded; its data must still hash the same.

    run.json is data from a file that may have been sent by someone else: every
    field is checked (the preset as strictly as a TOML preset) before it is used.
    """
    folder = RunFolder.open(path)
    meta = folder.meta
    where = folder.path / "run.json"
    data = meta.get("data")
    if meta.get("mode") not in MODES and meta.get("mode") not in METHODS:
        raise FileFormatError(f"{where}: unknown mode {meta.get('mode')!r}; the file is damaged or not from gpnas")
    if not isinstance(meta.get("seed"), int) or isinstance(meta.get("seed"), bool):
        raise FileFormatError(f"{where}: seed must be an integer; the file is damaged or not from gpnas")
    if not isinstance(meta.get("preset"), dict):
        raise FileFormatError(f"{where}: no preset recorded; the file is damaged or not from gpnas")
    if not (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("dir", "sha256"))):
        raise FileFormatError(f"{where}: 'data' must hold the text's dir and sha256; the file is damaged")
    target = meta.get("generations")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 1):
        raise FileFormatError(f"{where}: 'generations' must be a whole number of at least 1; the file is damaged")
    check_archive(folder)
    check_archive_holds_evaluations(folder)
    try:
        preset = preset_from_dict(meta["preset"])
    except ConfigError as error:
        raise FileFormatError(f"{where}: the recorded preset is invalid ({error})") from None
    dataset = dataset_loader(data_dir or data["dir"])
    if dataset.sha256 != data["sha256"]:
        raise ConfigError(f"the data at {dataset.text_path} is not the data run {path} used "
                          f"(sha256 {dataset.sha256[:12]} != {data['sha256'][:12]}); "
                          "point --data-dir at the original text")
    return Run(folder, preset, meta["mode"], meta["seed"], dataset, target)


def resume_target(run: Run, generations: int | None) -> int:
    """The generations a resume runs to: ``generations`` when given, else the run's own."""
    return (run.target or DEFAULT_GENERATIONS) if generations is None else generations


def record_target(run: Run, generations: int) -> None:
    """Make ``generations`` the run's target (run.json), so a later plain resume
    keeps it. Called once the resumed run has finished a generation: a resume
    that fails on a damaged file changes no file."""
    if generations != run.target and generations > run.done:
        write_json(run.folder.path / "run.json", {**run.folder.meta, "generations": generations})
        run.target = generations


def check_archive(folder: RunFolder) -> None:
    """The archive run.json names may be used: inside the folder, or the user's --archive
    (an existing archive that recorded this run's id), with no link leading elsewhere
    from the folder, the archive's files or its checkpoints. FileFormatError otherwise,
    before anything is created, written or deleted."""
    folder.check_links()
    path, external = folder.archive_location()
    folder.check_archive_links()
    if not external:
        return
    run_id, where = folder.run_id, folder.path / "run.json"
    if run_id is None:
        raise FileFormatError(f"{where}: an archive given with --archive needs the run's 'run_id'; "
                              "the file is damaged or not from gpnas")
    if not archive_knows_run(path, run_id):
        raise FileFormatError(f"{where}: the archive {path} was never given to this run with --archive "
                              "(it does not know the run's id); a run folder from elsewhere keeps its archive "
                              "inside it: copy the archive into the folder and set 'archive' to "
                              f"{ARCHIVE_NAME}")


def check_archive_holds_evaluations(folder: RunFolder) -> None:
    """A run whose snapshots record finished generations needs the archive that holds their
    evaluations: without it a resume would train them again and end elsewhere than the
    uninterrupted run (and with no curves for its predictors). FileFormatError when the
    archive is missing or empty while a snapshot exists."""
    snapshots = folder.snapshot_paths()
    if not snapshots:
        return
    path, _ = folder.archive_location()
    if evaluation_count(path) == 0:
        what = "is missing" if not path.exists() else "holds no evaluation"
        raise FileFormatError(f"{path} {what}, but {folder.path}/snapshots/ records "
                              f"{len(snapshots)} finished generation(s) whose evaluations it held; a resume "
                              "cannot reproduce the run without it: restore the archive, or start again "
                              "with gpnas evolve --out NEW_FOLDER")


def check_unchanged(run: Run, preset, mode: str | None, seed: int | None) -> None:
    """A resume must not change what the run computes."""
    if preset is not None and preset_to_dict(preset) != preset_to_dict(run.preset):
        changed = sorted(_diff(preset_to_dict(run.preset), preset_to_dict(preset)))
        raise ConfigError(f"--resume with a changed config ({', '.join(changed)}); drop those options "
                          "to continue the run as it was, or start a new run with --out")
    if mode is not None and mode != run.mode:
        raise ConfigError(f"--resume with --mode {mode}, but the run is {run.mode}; drop --mode")
    if seed is not None and seed != run.seed:
        raise ConfigError(f"--resume with --seed {seed}, but the run has seed {run.seed}; drop --seed")


def _diff(a, b, prefix=""):
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, dict) and isinstance(y, dict):
            yield from _diff(x, y, f"{prefix}{key}.")
        elif x != y:
            yield f"{prefix}{key}"


def execute(run: Run, generations: int, map_fn=None, device: str = "auto", threads=None,
            callbacks=(), max_flops: int | None = None, keep_checkpoints: bool = False,
            reference: bool = True) -> tuple[dict, object]:
    """Run (or continue) to ``generations`` and write the report; returns (summary, state).

    At the end, the preset's reference architecture is trained the same way
    (full budget, the run's seed; cached in the archive like any evaluation,
    reported beside the best and not charged to the run's compute), and every
    checkpoint the run made is deleted unless ``keep_checkpoints``.
    ``max_flops``: the training FLOPs the run may charge (None: no limit).
    """
    if generations < 1:
        raise ConfigError(f"--generations must be at least 1, got {generations}")
    concurrent = 1 if getattr(map_fn, "backend", "") == "ray" else getattr(map_fn, "workers", 1)
    check_fits(largest_architecture(run.preset.space), run.preset.budget, device, concurrent)
    started = time.perf_counter()
    check_archive(run.folder)  # again: the folder may have changed since it was opened
    with run.folder.hold():
        return _execute(run, generations, map_fn, device, threads, callbacks, max_flops, started,
                        keep_checkpoints, reference)


def _execute(run, generations, map_fn, device, threads, callbacks, max_flops, started, keep_checkpoints,
             reference):
    run.folder.remove_temporary_files()
    remove_stale_checkpoint_files(run.folder.checkpoints_dir)
    archive = Archive(run.folder.archive_path)
    try:
        dataset_dir = str(Path(run.dataset.text_path).parent)
        engine = METHODS.get(run.mode, Evolution)(
            run.preset, run.mode, dataset_dir=dataset_dir,
            data_sha256=run.dataset.sha256, archive=archive, checkpoints_dir=run.folder.checkpoints_dir,
            evaluate=Evaluator(map_fn, dataset_dir, time_limit=eval_time_limit(run.preset, device)),
            seed=run.seed, task_name=run.dataset.name, device=device, threads=threads,
            snapshots=run.folder, callbacks=callbacks, max_flops=max_flops, keep_checkpoints=keep_checkpoints,
            vocab_size=run.dataset.vocab_size,
        )
        state = engine.run(generations)
        engine.prune_checkpoints(state, final=True)
        ref = train_reference(engine) if reference and run.mode != "baseline" else None
        summary = summarize(engine, state, run.folder, time.perf_counter() - started, reference=ref)
        if summary["best_architecture"]:  # every field of its training, for `gpnas train` and nanoGPT
            summary["best_train_config"] = asdict(TrainConfig(**train_config_dict(
                summary["best_architecture"]["arch"], engine.budget)))
        write_report(run.folder, summary, engine, state)
    finally:
        archive.close()
    return summary, state


def train_reference(engine) -> dict:
    """The preset's reference architecture trained as the run trains its males
    (full budget, the run's seed and data), from the archive when it is there.

    Not charged to the run: its compute is reported beside it, so modes and
    methods stay comparable at equal compute (the ``baseline`` method is this
    evaluation, charged).
    """
    genome = encode(engine.preset.reference.as_dict(), engine.space)
    task = engine.task(genome, engine.budget.full_iters)
    cached = engine.archive.get(task.key) is not None
    if not cached:
        (result,) = engine.train([task])   # its wall time is evaluation, not engine overhead
        engine.archive_result(task, result)
    record = engine.archive.get(task.key)
    out = {"key": task.key, "arch": engine.arch(genome), "cached": cached, "charged": False}
    if record is None or record.status != "complete":
        reason = getattr(record, "failure", None) or (record.status if record else "not evaluated")
        return {**out, "final_val_loss": None, "failure": reason}
    result = record.result
    steps = len(result["curve"]["train_loss"])
    return {**out, "final_val_loss": float(result["curve"]["val_loss"][-1]),
            **{m: result.get(m) for m in ("best_val_loss", "final_train_loss", "total_train_time_s",
                                          "avg_inference_tokens_per_s", "n_params")},
            "steps": steps, "tokens": steps * engine.tokens_per_step}


def remove_stale_checkpoint_files(folder: Path) -> None:
    """Delete the half-written checkpoints (``KEY.pt.PID.tmp``) of trainers killed mid-save.

    A file whose process still runs on this machine is left alone (another run
    may share the archive and be saving it now).
    """
    for path in Path(folder).glob("*.pt.*.tmp"):
        pid = path.name.split(".")[-2]
        if pid.isdigit() and _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
