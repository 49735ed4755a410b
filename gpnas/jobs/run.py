"""Start, resume and finish runs: the library behind ``gpnas evolve`` and
``gpnas ablate``. It wires a preset, a dataset, an archive and a map into an
``Evolution``, and writes the report when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from gpnas.config import check_fits, largest_architecture, preset_from_dict, preset_to_dict
from gpnas.errors import ConfigError, FileFormatError
from gpnas.report.run import summarize, write_report
from gpnas.runs.archive import Archive
from gpnas.runs.folder import RunFolder
from gpnas.runs.worker import Evaluator
from gpnas.search.engine import MODES, Evolution
from gpnas.search.methods import METHODS


@dataclass
class Run:
    folder: RunFolder
    preset: object
    mode: str
    seed: int
    dataset: object


def default_out(preset_name: str, mode: str, seed: int, root: Path = Path("runs")) -> Path:
    return root / f"{datetime.now():%Y%m%d-%H%M%S}-{preset_name}-{mode}-s{seed}"


def new_run(out, preset, mode: str, seed: int, dataset, archive_path=None) -> Run:
    """Create the run folder and record what the run is."""
    if mode not in MODES and mode not in METHODS:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join([*MODES, *METHODS])}")
    out = Path(out)
    archive_path = Path(archive_path).resolve() if archive_path else (out / "archive.sqlite").resolve()
    folder = RunFolder.create(out, {
        "mode": mode,
        "seed": seed,
        "preset": preset_to_dict(preset),
        "data": {"name": dataset.name, "dir": str(Path(dataset.text_path).parent.resolve()),
                 "sha256": dataset.sha256},
        "archive": str(archive_path),
        "created": datetime.now().isoformat(timespec="seconds"),
    })
    return Run(folder, preset, mode, seed, dataset)


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
    if not isinstance(meta.get("archive", ""), str):
        raise FileFormatError(f"{where}: 'archive' must be a path; the file is damaged or not from gpnas")
    try:
        preset = preset_from_dict(meta["preset"])
    except ConfigError as error:
        raise FileFormatError(f"{where}: the recorded preset is invalid ({error})") from None
    dataset = dataset_loader(data_dir or data["dir"])
    if dataset.sha256 != data["sha256"]:
        raise ConfigError(f"the data at {dataset.text_path} is not the data run {path} used "
                          f"(sha256 {dataset.sha256[:12]} != {data['sha256'][:12]}); "
                          "point --data-dir at the original text")
    return Run(folder, preset, meta["mode"], meta["seed"], dataset)


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
            callbacks=(), max_flops: int | None = None) -> tuple[dict, object]:
    """Run (or continue) to ``generations`` and write the report; returns (summary, state).
    ``max_flops``: the training FLOPs the run may charge (None: no limit)."""
    if generations < 1:
        raise ConfigError(f"--generations must be at least 1, got {generations}")
    concurrent = 1 if getattr(map_fn, "backend", "") == "ray" else getattr(map_fn, "workers", 1)
    check_fits(largest_architecture(run.preset.space), run.preset.budget, device, concurrent)
    started = time.perf_counter()
    with run.folder.hold():
        return _execute(run, generations, map_fn, device, threads, callbacks, max_flops, started)


def _execute(run, generations, map_fn, device, threads, callbacks, max_flops, started):
    run.folder.remove_temporary_files()
    remove_stale_checkpoint_files(run.folder.checkpoints_dir)
    archive = Archive(run.folder.archive_path)
    try:
        dataset_dir = str(Path(run.dataset.text_path).parent)
        engine = METHODS.get(run.mode, Evolution)(
            run.preset, run.mode, dataset_dir=dataset_dir,
            data_sha256=run.dataset.sha256, archive=archive, checkpoints_dir=run.folder.checkpoints_dir,
            evaluate=Evaluator(map_fn, dataset_dir), seed=run.seed, task_name=run.dataset.name, device=device, threads=threads,
            snapshots=run.folder, callbacks=callbacks, max_flops=max_flops,
            vocab_size=run.dataset.vocab_size,
        )
        state = engine.run(generations)
        summary = summarize(engine, state, run.folder, time.perf_counter() - started)
        write_report(run.folder, summary, engine, state)
    finally:
        archive.close()
    return summary, state


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
