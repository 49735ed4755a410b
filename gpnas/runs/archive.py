"""The archive: every evaluation of a run in one SQLite file (WAL), doubling as the cache.

An evaluation is a pure function of (train config, steps run, seed, data), so
``evaluation_key`` hashes exactly those and an identical evaluation is never
trained twice, also across runs that open the same file (``--archive PATH``).
Each ``put`` commits its own transaction, so a killed process loses at most the
evaluation in flight. One writer at a time; readers may share the file.

Rows of table ``evaluations``:

    key TEXT PRIMARY KEY   evaluation_key(...)
    arch TEXT              JSON: n_layer, n_head, n_embd, dropout, learning_rate
    train_config TEXT      JSON: the TrainConfig fields
    seed INTEGER, data_sha256 TEXT, stop_at INTEGER, max_iters INTEGER
    status TEXT            'early' | 'complete' | 'diverged' | 'failed'
    result TEXT            JSON: TrainResult.to_dict(), stored as given (NULL if failed)
    failure TEXT           why a failed evaluation failed (NULL otherwise)
    checkpoint TEXT        path relative to the archive's folder, or NULL
    created REAL           Unix time of the put

Table ``meta`` (name, value) holds the schema and version, and one row
``run:<run_id>`` per run folder that was started with this archive named on
the command line (``--archive``): a run folder outside the archive's own
folder may use the archive only if the archive knows its id.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from gpnas.errors import FileFormatError, GpnasError

SCHEMA = "gpnas-archive"
SCHEMA_VERSION = 1
STATUSES = ("early", "complete", "diverged", "failed")
# The TrainConfig fields that change what a run computes, and their types.
# Keys of a config outside this list are hashed as given.
RUN_FIELDS = {
    "n_layer": int, "n_head": int, "n_embd": int, "dropout": float, "learning_rate": float,
    "block_size": int, "batch_size": int, "eval_interval": int, "eval_batches": int, "warmup_iters": int,
}
OPTIONAL_FIELDS = {
    "max_iters": int, "min_lr_ratio": float, "weight_decay": float, "beta1": float, "beta2": float,
    "grad_clip": float,
}
COLUMNS = ("key", "arch", "train_config", "seed", "data_sha256", "stop_at", "max_iters", "status",
           "result", "failure", "checkpoint", "created")
_CREATE = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS evaluations (
    key TEXT PRIMARY KEY,
    arch TEXT NOT NULL,
    train_config TEXT NOT NULL,
    seed INTEGER NOT NULL,
    data_sha256 TEXT NOT NULL,
    stop_at INTEGER NOT NULL,
    max_iters INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('early', 'complete', 'diverged', 'failed')),
    result TEXT,
    failure TEXT,
    checkpoint TEXT,
    created REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS evaluations_status ON evaluations (status);
"""


def evaluation_key(config: Mapping, max_iters: int, stop_at: int | None, seed: int, data_sha256: str) -> str:
    """Stable hex digest (SHA-256) of everything that decides an evaluation's outcome.

    ``config`` is a TrainConfig field dict (``genome.train_config_dict``): it
    must hold the architecture and the budget fields that change a run
    (``RUN_FIELDS``). ``max_iters`` is the full budget the LR schedule is laid
    over, ``stop_at`` where the run stops (None, or anything >= max_iters:
    the complete run). Ints and floats are normalised (4 and 4.0 hash alike)
    and the JSON is canonical (sorted keys), so the key does not depend on dict
    order or on how numbers were typed.
    """
    missing = [k for k in RUN_FIELDS if k not in config]
    if missing:
        raise ValueError(f"evaluation_key: config lacks {missing}; pass genome.train_config_dict(arch, budget)")
    if "max_iters" in config and int(config["max_iters"]) != int(max_iters):
        raise ValueError(f"evaluation_key: config max_iters {config['max_iters']} != max_iters {max_iters}")
    canon = {}
    for k, v in config.items():
        kind = RUN_FIELDS.get(k) or OPTIONAL_FIELDS.get(k)
        canon[k] = kind(v) if kind is not None else v
    max_iters = int(max_iters)
    stop = max_iters if stop_at is None else min(int(stop_at), max_iters)
    payload = {"v": SCHEMA_VERSION, "config": canon, "max_iters": max_iters, "stop_at": stop,
               "seed": int(seed), "data_sha256": str(data_sha256)}
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class EvaluationRecord:
    """One row of the archive. ``result`` is the trainer's TrainResult.to_dict(), kept opaque."""

    arch: dict
    train_config: dict
    seed: int
    data_sha256: str
    stop_at: int
    max_iters: int
    status: str
    result: dict | None = None
    failure: str | None = None
    checkpoint: str | None = None  # relative to the archive's folder
    created: float = field(default=0.0)
    key: str = ""

    @property
    def curve(self) -> dict | None:
        """The learning curve dict inside ``result`` (LearningCurve.to_dict()), if any."""
        return None if self.result is None else self.result.get("curve")


class Archive:
    """An open archive file. ``Archive(path)`` or ``Archive.open(path)``; also a context manager."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        where = f"{self.path} is not a gpnas archive"
        try:
            self._db = sqlite3.connect(self.path, timeout=30.0)
        except sqlite3.Error as e:
            raise FileFormatError(f"{self.path}: cannot open ({e}); give a writable archive path") from None
        try:
            # Look before writing anything: another program's database keeps its journal mode.
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables and tables:
                raise FileFormatError(f"{where} (another SQLite database); give a new file or a gpnas archive")
            self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            self._db.execute("PRAGMA synchronous=FULL")
            if not tables:  # a new file: schema and version in one transaction
                self._db.executescript(f"BEGIN; {_CREATE} INSERT INTO meta VALUES ('schema', '{SCHEMA}'), "
                                       f"('version', '{SCHEMA_VERSION}'); COMMIT;")
            meta = dict(self._db.execute("SELECT name, value FROM meta"))
            if meta.get("schema") != SCHEMA:
                raise FileFormatError(f"{where} (another SQLite database); give a new file or a gpnas archive")
            if meta.get("version") != str(SCHEMA_VERSION):
                raise FileFormatError(f"{where} of version {SCHEMA_VERSION} (found version {meta.get('version')}); "
                                      "use the gpnas release that wrote it or start a new archive")
            cols = tuple(r[1] for r in self._db.execute("PRAGMA table_info(evaluations)"))
            if cols != COLUMNS:
                raise FileFormatError(f"{where}: its evaluations table has columns {cols}; start a new archive")
        except sqlite3.OperationalError as e:  # read-only folder, full disk, locked by another writer
            self._db.close()
            raise GpnasError(f"{self.path}: cannot use the archive ({e}); make its folder writable, "
                             "free some space or stop the other writer") from None
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise FileFormatError(f"{where} ({e}); give a new file or a gpnas archive") from None
        except FileFormatError:
            self._db.close()
            raise

    @classmethod
    def open(cls, path: str | Path) -> "Archive":
        return cls(path)

    @property
    def dir(self) -> Path:
        """The folder holding the archive; checkpoint paths are relative to it."""
        return self.path.parent

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def journal_mode(self) -> str:
        return self._db.execute("PRAGMA journal_mode").fetchone()[0]

    # ------------------------------------------------------------ records

    def put(self, key: str, record: EvaluationRecord) -> None:
        """Insert or replace ``key``'s record, committed at once (one transaction)."""
        if record.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {record.status!r}")
        ckpt = record.checkpoint
        if ckpt is not None and Path(ckpt).is_absolute():
            ckpt = Path(ckpt).relative_to(self.dir).as_posix()
        row = (key, json.dumps(record.arch, sort_keys=True), json.dumps(record.train_config, sort_keys=True),
               int(record.seed), str(record.data_sha256), int(record.stop_at), int(record.max_iters),
               record.status, None if record.result is None else json.dumps(record.result),
               record.failure, None if ckpt is None else str(ckpt), record.created or time.time())
        try:
            with self._db:
                self._db.execute(f"INSERT OR REPLACE INTO evaluations VALUES ({', '.join('?' * len(COLUMNS))})", row)
        except sqlite3.OperationalError as e:  # the transaction rolled back: the archive is as it was
            raise GpnasError(f"cannot write to the archive {self.path} ({e}); free some space or make it "
                             "writable, then continue with --resume: every finished generation is kept") from None

    def get(self, key: str) -> EvaluationRecord | None:
        rows = self._select("WHERE key = ?", (key,))
        return rows[0] if rows else None

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM evaluations WHERE key = ?", (key,)).fetchone() is not None

    def completed(self) -> list[EvaluationRecord]:
        """Records of complete runs (status 'complete'), oldest first."""
        return self._select("WHERE status = 'complete'")

    def all(self) -> list[EvaluationRecord]:
        return self._select("")

    def count(self, status: str | None = None) -> int:
        if status is None:
            return self._db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM evaluations WHERE status = ?", (status,)).fetchone()[0]

    def integrity_check(self) -> bool:
        """SQLite's own check of the file (PRAGMA integrity_check)."""
        try:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        except sqlite3.DatabaseError:
            return False

    # --------------------------------------------------------------- runs

    def register_run(self, run_id: str, folder) -> None:
        """Record that the user started run ``run_id`` (in ``folder``) on this archive."""
        try:
            with self._db:
                self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (f"run:{run_id}", str(folder)))
        except sqlite3.OperationalError as e:
            raise GpnasError(f"cannot write to the archive {self.path} ({e}); free some space or make it "
                             "writable") from None

    def knows_run(self, run_id: str) -> bool:
        """Whether ``register_run(run_id, ...)`` was ever called on this archive."""
        row = self._db.execute("SELECT 1 FROM meta WHERE name = ?", (f"run:{run_id}",)).fetchone()
        return row is not None

    def checkpoint_path(self, key: str) -> Path:
        """Where the early checkpoint of ``key`` lives: <archive dir>/checkpoints/<key>.pt (folder created)."""
        folder = self.dir / "checkpoints"
        folder.mkdir(exist_ok=True)
        return folder / f"{key}.pt"

    def _select(self, where: str, args: tuple = ()) -> list[EvaluationRecord]:
        sql = f"SELECT {', '.join(COLUMNS)} FROM evaluations {where} ORDER BY created, key"
        try:
            rows = self._db.execute(sql, args).fetchall()
            return [_record(row) for row in rows]
        except (sqlite3.DatabaseError, json.JSONDecodeError) as e:
            raise FileFormatError(
                f"{self.path}: unreadable record ({e}); run integrity_check or start a new archive") from None


def archive_knows_run(path: Path, run_id: str) -> bool:
    """Whether the existing file ``path`` is a gpnas archive that recorded ``run_id``.

    Only reads: an empty or foreign file is left as it is (``Archive(path)`` would write
    a schema into an empty file), and nothing is created where no file is (``mode=rw``).
    Not ``mode=ro``: a read-only reader of a WAL database leaves its -wal and -shm
    files behind, where a plain reader's are removed when it closes.
    """
    try:
        db = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=rw", uri=True, timeout=30.0)
    except sqlite3.Error:
        return False
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" not in tables:
            return False
        meta = dict(db.execute("SELECT name, value FROM meta WHERE name IN ('schema', ?)", (f"run:{run_id}",)))
        return meta.get("schema") == SCHEMA and f"run:{run_id}" in meta
    except sqlite3.Error:
        return False
    finally:
        db.close()


def evaluation_count(path: Path) -> int | None:
    """How many evaluations the archive at ``path`` holds, only reading: 0 where no file
    is or the file is empty, None where the file is not a readable gpnas archive (opening
    it with ``Archive`` says why)."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return 0
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=rw", uri=True, timeout=30.0)
    except (OSError, sqlite3.Error):
        return None
    try:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if "evaluations" not in tables:
            return 0 if not tables else None
        return int(db.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0])
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _record(row: tuple) -> EvaluationRecord:
    d = dict(zip(COLUMNS, row))
    for k in ("arch", "train_config", "result"):
        d[k] = None if d[k] is None else json.loads(d[k])
    return EvaluationRecord(**d)
