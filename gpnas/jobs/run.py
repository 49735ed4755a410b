"""Start, resume and finish runs: the library behind ``gpnas evolve`` and
``gpnas ablate``. It wires a preset, a dataset, an archive and a map into an
``Evolution``, and writes the report when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from dataclasses import asdict, dataclass, replace
from datetime import datetime
from pathlib import Path

from gpnas.config import check_fits, eval_time_limit, largest_architecture, preset_from_dict, preset_to_dict
from gpnas.errors import ConfigError, FileFormatError
from gpnas.report.run import summarize, write_report
from gpnas.runs.archive import Archive, archive_knows_run, evaluation_count
from gpnas.runs.folder import ARCHIVE_NAME, RunFolder, is_inside, write_json
from gpnas.runs.table import read_table
from gpnas.runs.tasks import ARCH_KEYS, TrainingTask, replay_task, table_space
from gpnas.runs.worker import Evaluator
from gpnas.search.engine import MODES, Evolution
from gpnas.search.ledger import Ledger
from gpnas.search.males import encode, train_config_dict
from gpnas.search.methods import METHODS
from gpnas.search.space import Space
from gpnas.train.trainer import TrainConfig

DEFAULT_GENERATIONS = 20  # the target of a run that recorded none (made before targets were recorded)


@dataclass
class Run:
    folder: RunFolder
    preset: object
    mode: str
    seed: int
    dataset: object            # the text it trains on (None for a table run)
    target: int | None = None  # generations the run was asked for (run.json "generations")
    table: object = None       # the table it replays (runs.table.Table), instead of training
    prior: tuple = ()          # formulas its females start from (run.json "prior", females.prior_formulas)

    @property
    def done(self) -> int:
        """Generations finished so far (the newest snapshot's number; -1 before generation 0)."""
        paths = self.folder.snapshot_paths()
        return int(paths[-1].stem.split("_")[1]) if paths else -1


def default_out(preset_name: str, mode: str, seed: int, root: Path = Path("runs")) -> Path:
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{preset_name}-{mode}-s{seed}"


def new_run(out, preset, mode: str, seed: int, dataset, archive_path=None, generations: int | None = None,
            table=None, prior: dict | None = None) -> Run:
    """Create the run folder and record what the run is (and, given, its target:
    the generations a plain ``--resume`` continues to).

    ``archive_path`` is the archive the user named (``--archive``); without it the
    archive lives in the folder. One named outside the folder is recorded as such
    in run.json with a fresh ``run_id`` that the archive records too, so a resume
    can tell the user's archive from a path a forged run.json names. A table run
    (``table``, dataset None) records the table's path, task and hash instead of the text's.
    ``prior`` ({path, sha256, formulas}): the predictor file the females start from.
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
        **({"table": {"path": str(Path(table.path).resolve()), "task": table.task, "sha256": table.sha256}}
           if table is not None else
           {"data": {"name": dataset.name, "dir": str(Path(dataset.text_path).parent.resolve()),
                     "sha256": dataset.sha256}}),
        **where,
        "created": datetime.now().isoformat(timespec="seconds"),
        **({"generations": generations} if generations is not None else {}),
        **({"prior": prior} if prior else {}),
    })
    if table is not None:
        table_space(preset, table)  # a preset the table does not cover is refused before anything runs
    return Run(folder, preset, mode, seed, dataset, generations, table, tuple((prior or {}).get("formulas", ())))


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
    recorded_table = meta.get("table")
    if recorded_table is not None:
        if not (isinstance(recorded_table, dict) and all(isinstance(recorded_table.get(k), str)
                                                         for k in ("path", "task", "sha256"))):
            raise FileFormatError(f"{where}: 'table' must hold the table's path, task and sha256; the file is damaged")
    elif not (isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("dir", "sha256"))):
        raise FileFormatError(f"{where}: 'data' must hold the text's dir and sha256; the file is damaged")
    target = meta.get("generations")
    if target is not None and (not isinstance(target, int) or isinstance(target, bool) or target < 1):
        raise FileFormatError(f"{where}: 'generations' must be a whole number of at least 1; the file is damaged")
    prior = meta.get("prior")
    if prior is not None and not (isinstance(prior, dict) and isinstance(prior.get("formulas"), list)
                                  and all(isinstance(t, str) for t in prior["formulas"])):
        raise FileFormatError(f"{where}: 'prior' must hold the prior's formulas as a list of tree texts; "
                              "the file is damaged")
    formulas = tuple(prior["formulas"]) if prior else ()   # parsed token by token when the females start
    check_archive(folder)
    check_archive_holds_evaluations(folder)
    try:
        preset = preset_from_dict(meta["preset"])
    except ConfigError as error:
        raise FileFormatError(f"{where}: the recorded preset is invalid ({error})") from None
    if recorded_table is not None:
        table = read_table(recorded_table["path"], recorded_table["task"])
        if table.sha256 != recorded_table["sha256"]:
            raise ConfigError(f"the table {table.path} (task {table.task!r}) is not the one run {path} replayed "
                              f"(sha256 {table.sha256[:12]} != {recorded_table['sha256'][:12]}); "
                              "restore the original table file")
        return Run(folder, preset, meta["mode"], meta["seed"], None, target, table, formulas)
    dataset = dataset_loader(data_dir or data["dir"])
    if dataset.sha256 != data["sha256"]:
        raise ConfigError(f"the data at {dataset.text_path} is not the data run {path} used "
                          f"(sha256 {dataset.sha256[:12]} != {data['sha256'][:12]}); "
                          "point --data-dir at the original text")
    return Run(folder, preset, meta["mode"], meta["seed"], dataset, target, None, formulas)


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
    if run.table is None:
        check_fits(largest_architecture(run.preset.space, run.preset.reference), run.preset.budget, device,
                   concurrent)
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
        task, space = evaluation_task(run, map_fn, device, threads)
        engine = make_search(run.preset, run.mode, task, archive, run.seed, run.folder, callbacks,
                             max_flops, keep_checkpoints, space, run.prior)
        state = engine.run(generations)
        engine.ledger.prune(state, final=True)
        ref = train_reference(engine) if reference and run.mode != "baseline" and has_reference(engine) else None
        summary = summarize(engine, state, run.folder, time.perf_counter() - started, reference=ref)
        best = summary["best_architecture"]
        if best and all(k in best["arch"] for k in ARCH_KEYS):  # every field of its training, for `gpnas train`
            summary["best_train_config"] = asdict(TrainConfig(**train_config_dict(
                summary["best_architecture"]["arch"], run.preset.budget)))
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
    ledger = engine.ledger
    genome = encode(engine.preset.reference.as_dict(), engine.space)
    request = ledger.request(genome, ledger.full)
    cached = ledger.archive.get(request.key) is not None
    if not cached:
        (result,) = ledger.run([request])   # its wall time is evaluation, not engine overhead
        ledger.archive_result(request, result)
    record = ledger.archive.get(request.key)
    out = {"key": request.key, "arch": ledger.arch(genome), "cached": cached, "charged": False}
    if record is None or record.status != "complete":
        reason = getattr(record, "failure", None) or (record.status if record else "not evaluated")
        return {**out, "final_val_loss": None, "failure": reason}
    result = record.result
    steps = ledger.task.steps_run(result)
    return {**out, "final_val_loss": float(result["curve"]["val_loss"][-1]),
            **{m: result.get(m) for m in ("best_val_loss", "final_train_loss", "total_train_time_s",
                                          "avg_inference_tokens_per_s", "n_params")},
            "steps": steps, "tokens": steps * ledger.task.tokens_per_step}


def evaluation_task(run: Run, map_fn=None, device: str = "auto", threads=None):
    """The run's evaluation task and the space it searches: training on the run's text, or
    replaying its table (``TableTask``; a gpnas table of the run's own preset reports
    tokens as training does)."""
    if run.table is not None:
        return replay_task(run.preset, run.table)
    dataset_dir = str(Path(run.dataset.text_path).parent)
    task = TrainingTask(run.preset, dataset_dir, run.dataset.sha256, run.dataset.name, run.folder.checkpoints_dir,
                        evaluate=Evaluator(map_fn, dataset_dir, time_limit=eval_time_limit(run.preset, device)),
                        device=device, threads=threads, vocab_size=run.dataset.vocab_size)
    return task, run.preset.space


def make_search(preset, mode: str, task, archive, seed: int, snapshots=None, callbacks=(),
                max_cost: float | None = None, keep_checkpoints: bool = False, space=None, prior: tuple = ()):
    """The engine (a mode) or a standard method over a fresh ledger of ``task``, searching
    ``space`` (default: the preset's) under the task's constraints; ``prior``: formulas the
    engine's females start from (``females.prior_formulas``)."""
    space = Space(replace(space or preset.space, constraints=task.constraints))
    if hasattr(task, "bind"):
        task.bind(space)
    ledger = Ledger(task, space, archive, seed, max_cost=max_cost, keep_checkpoints=keep_checkpoints)
    if mode in METHODS:
        return METHODS[mode](preset, ledger, snapshots, callbacks)
    return Evolution(preset, mode, ledger, snapshots, callbacks, prior)


def has_reference(engine) -> bool:
    """Whether the preset's reference can be evaluated: always by training; on a table,
    when the table records it exactly (a config of the preset's own grid)."""
    if getattr(engine.ledger.task, "table", None) is None:
        return True
    reference = engine.preset.reference.as_dict()
    if set(engine.space.names) - set(reference):
        return False
    config = engine.ledger.run_config(encode(reference, engine.space))
    return all(config.get(k) == reference[k] for k in engine.space.names)


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
