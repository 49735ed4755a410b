"""One run, one folder: the resolved config, generation snapshots as data, the
logbook and hall of fame. The archive (SQLite) and checkpoints usually live in
it too, unless the run shares an archive elsewhere.

Layout::

    RUN/run.json            what the run is: mode, seed, resolved preset, data, archive path
    RUN/archive.sqlite      every evaluation (the cache); RUN/checkpoints/ beside it
    RUN/.lock               held by the one gpnas process that runs the folder
    RUN/snapshots/gen_0007.json   the state after generation 7 (numbers and tree strings, no pickle)
    RUN/logbook.csv         one row per generation
    RUN/hall_of_fame.json   the best fully trained architectures
    RUN/summary.json, RUN/formulas.md, RUN/predictor.json, RUN/plots/*.png   written by report

Every file is written to a temporary name and renamed into place, so a kill at
any moment leaves either the old file or the new one. Loading parses numbers
and tree strings against the primitive set; nothing in a run folder is ever
executed.

A run folder may have come from someone else, so nothing it holds may lead
gpnas outside it. run.json's ``archive`` is a path inside the folder (written
relative to it), unless the user named an archive elsewhere with ``--archive``
when the run started: then run.json says so (``archive_external``) and carries
the run's ``run_id``, which the archive itself records, so a forged run.json
cannot aim gpnas at a file the user never gave it. Checkpoints live beside the
archive. A link (symlink) in the folder, in ``snapshots/``, ``plots/`` or
beside the archive that points outside is refused before anything is written.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import io
import json
import math
import os
import shlex
from pathlib import Path

from gpnas.errors import FileFormatError, GpnasError

FORMAT = "gpnas-run"
VERSION = 1
ARCHIVE_NAME = "archive.sqlite"
SUBFOLDERS = ("snapshots", "plots")  # the run folder's own folders (checkpoints/ follows the archive)


def write_atomic(path: Path, text: str) -> None:
    """Write text so that readers see the old or the new file, never half of one.

    A failed write (full disk, read-only folder) removes its temporary file and
    raises a GpnasError naming the file; the old file stays as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        # A fresh file ("x": O_CREAT | O_EXCL), never an old one or a link planted under the
        # temporary name, so the text lands in this folder and nowhere a link points.
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise storage_error(path, error) from None


def storage_error(path, error: OSError) -> GpnasError:
    """One line for a file that cannot be written: which file, why, and that nothing finished is lost."""
    why = error.strerror or str(error)
    hint = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space",
            errno.EROFS: "make the folder writable or move the run"}.get(error.errno, "check the folder's permissions")
    return GpnasError(f"cannot write {path} ({why}); {hint}, then continue with --resume: "
                      "every finished generation is kept")


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, allow_nan=False, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path):
    """A JSON file from a run folder, or one line saying what is wrong with it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileFormatError(f"{path}: missing; is this a gpnas run folder?") from None
    except UnicodeDecodeError:
        raise FileFormatError(f"{path}: not UTF-8 text; the file is damaged or not from gpnas") from None
    except json.JSONDecodeError as error:
        raise FileFormatError(f"{path}: not valid JSON ({error.msg} at line {error.lineno}); "
                              "the file is truncated or not from gpnas") from None
    except RecursionError:
        raise FileFormatError(f"{path}: JSON nested too deeply; the file is not from gpnas") from None
    except OSError as error:
        raise FileFormatError(f"{path}: cannot read ({error.strerror or error}); "
                              "give a readable gpnas run folder") from None


class RunFolder:
    """The files of one run; knows where things go, not what the engine does."""

    def __init__(self, path):
        self.path = Path(path)

    # ------------------------------------------------------------ the run
    @classmethod
    def create(cls, path, meta: dict) -> "RunFolder":
        folder = cls(path)
        if (folder.path / "run.json").exists():
            raise FileFormatError(f"{folder.path} already holds a run; continue it with "
                                  f"`gpnas evolve --resume {shlex.quote(str(folder.path))}` or choose another --out")
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.check_links()  # an existing --out folder may hold links that lead out of it
        (folder.path / "snapshots").mkdir(exist_ok=True)
        write_json(folder.path / "run.json", {"format": FORMAT, "version": VERSION, **meta})
        return folder

    @classmethod
    def open(cls, path) -> "RunFolder":
        folder = cls(path)
        if not folder.path.is_dir() or not (folder.path / "run.json").exists():
            raise FileFormatError(f"{folder.path} is not a gpnas run folder (no run.json); "
                                  "give the folder that `gpnas evolve` created")
        meta = folder.meta
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise FileFormatError(f"{folder.path / 'run.json'}: not a gpnas run of format version {VERSION}")
        return folder

    @property
    def meta(self) -> dict:
        return read_json(self.path / "run.json")

    @property
    def archive_path(self) -> Path:
        """The archive run.json names, resolved, after the checks of ``archive_location``."""
        return self.archive_location()[0]

    @property
    def archive_external(self) -> bool:
        """True when the archive lies outside the folder because the user named it (--archive)."""
        return self.archive_location()[1]

    @property
    def checkpoints_dir(self) -> Path:
        """Checkpoints follow the archive: <archive's folder>/checkpoints."""
        return self.archive_path.parent / "checkpoints"

    @property
    def run_id(self) -> str | None:
        """The token an external archive records for this run (None for a run that keeps its archive)."""
        value = self.meta.get("run_id")
        if value is not None and not (isinstance(value, str) and len(value) == 32
                                      and all(c in "0123456789abcdef" for c in value)):
            raise FileFormatError(f"{self.path / 'run.json'}: 'run_id' must be 32 hex digits; "
                                  "the file is damaged or not from gpnas")
        return value

    def archive_location(self) -> tuple[Path, bool]:
        """(resolved archive path, external?) from run.json, or a FileFormatError.

        Inside the folder: any path that resolves (links followed) into it. Outside:
        only where run.json records it as the user's --archive (``archive_external``),
        as an absolute path to an archive that already exists; ``jobs.run`` then checks
        that this archive knows the run's ``run_id`` before anything is written.
        """
        meta, where = self.meta, self.path / "run.json"
        raw, external = meta.get("archive") or ARCHIVE_NAME, meta.get("archive_external", False)
        if not isinstance(raw, str):
            raise FileFormatError(f"{where}: 'archive' must be a path; the file is damaged or not from gpnas")
        if not isinstance(external, bool):
            raise FileFormatError(f"{where}: 'archive_external' must be true or false; the file is damaged")
        try:
            root = self.path.resolve()
            path = (root / raw).resolve()  # an absolute raw replaces root
            exists = path.is_file()
        except (OSError, ValueError, RuntimeError) as error:  # a NUL byte, a link loop
            raise FileFormatError(f"{where}: 'archive' {raw!r} is not a usable path ({error}); "
                                  "the file is damaged or not from gpnas") from None
        if not external:
            if not is_inside(path, root):
                raise FileFormatError(
                    f"{where}: 'archive' {raw} lies outside the run folder, and run.json does not record it "
                    f"as an archive given with --archive; a run folder's files stay inside it: set 'archive' "
                    f"to {ARCHIVE_NAME} or start a new run with --archive PATH")
            return path, False
        if not Path(raw).is_absolute() or not exists:
            raise FileFormatError(
                f"{where}: 'archive' {raw} is recorded as given with --archive but is not an existing archive "
                "file (an absolute path); restore the archive there or start a new run")
        return path, True

    def check_links(self) -> None:
        """Refuse a folder holding a link that leads out of it, at the top or in snapshots/
        or plots/ (checkpoints/ is checked with the archive, ``check_archive_links``). A
        followed link would make gpnas write, or on resume delete, files anywhere."""
        root = self.path.resolve()
        for folder in (root, *(root / name for name in SUBFOLDERS)):
            _refuse_links_out(folder, root)

    def check_archive_links(self) -> None:
        """The archive's own files (its -wal, -shm and -journal, checkpoints/ and every file in
        it) stay beside the archive: none is a link that leads elsewhere."""
        archive = self.archive_path
        base = archive.parent
        for suffix in ("-wal", "-shm", "-journal"):
            _refuse_link(base / f"{archive.name}{suffix}", base)
        _refuse_links_out(base / "checkpoints", base, top=True)

    # -------------------------------------------------------- snapshots
    def snapshot_paths(self) -> list[Path]:
        return sorted((self.path / "snapshots").glob("gen_*.json"))

    def save(self, snapshot: dict, hall_of_fame: list, logbook: list) -> None:
        """The snapshot (plain data from the engine) first: it alone is enough to
        resume; the files derived from it follow."""
        write_json(self.path / "snapshots" / f"gen_{int(snapshot['generation']):04d}.json", snapshot)
        self.save_derived(hall_of_fame, logbook)

    def save_derived(self, hall_of_fame: list, logbook: list) -> None:
        """hall_of_fame.json and logbook.csv (rewritten on resume: a kill between the
        snapshot and these files leaves them one generation behind)."""
        write_json(self.path / "hall_of_fame.json", hall_of_fame)
        write_atomic(self.path / "logbook.csv", csv_text(logbook))

    @contextlib.contextmanager
    def hold(self):
        """Hold the run for this process: a second gpnas process on the same
        folder (two `--resume`s at once) is refused instead of interleaving
        snapshots. The lock is the kernel's, so a killed holder frees it."""
        handle = open(self.path / ".lock", "a")
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise GpnasError(f"{self.path} is in use by another gpnas process; wait for it to "
                                 "finish or stop it, then resume") from None
            yield self
        finally:
            handle.close()

    def remove_temporary_files(self) -> list[Path]:
        """Temporary files a killed writer left in the run folder (never read; safe to delete)."""
        removed = []
        for folder in (self.path, self.path / "snapshots"):
            for path in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    path.unlink()
                    removed.append(path)
        return removed

    def load_latest(self) -> tuple[object, Path] | None:
        """The newest snapshot's data and its path (the engine checks and rebuilds it)."""
        paths = self.snapshot_paths()
        if not paths:
            return None
        try:
            return read_json(paths[-1]), paths[-1]
        except FileFormatError as error:
            raise FileFormatError(f"{error}; delete it to resume from the snapshot before") from None


def is_inside(path: Path, root: Path) -> bool:
    """Whether resolved ``path`` is ``root`` or lies under it (both already resolved)."""
    return path == root or root in path.parents


def _refuse_links_out(folder: Path, root: Path, top: bool = False) -> None:
    """Refuse the first entry of ``folder`` (and ``folder`` itself, when ``top``) that is a
    link resolving outside ``root``; a missing folder has nothing to refuse."""
    if top:
        _refuse_link(folder, root)
    if folder.is_dir():
        for entry in sorted(folder.iterdir()):
            _refuse_link(entry, root)


def _refuse_link(entry: Path, root: Path) -> None:
    if entry.is_symlink():
        target = entry.resolve()
        if not is_inside(target, root):
            raise FileFormatError(f"{entry} is a link to {target}, outside {root}; a run's files stay in "
                                  "its folder: replace the link with a real file or folder")


def csv_text(rows: list[dict]) -> str:
    """Rows of equal keys as CSV text, a header first (empty for no rows)."""
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return out.getvalue()
