import os
import pickle
import sqlite3
import subprocess
import sys

import pytest

from gpnas.config import load_preset
from gpnas.errors import FileFormatError
from gpnas.runs.archive import Archive, EvaluationRecord, archive_knows_run, evaluation_key
from gpnas.search.males import train_config_dict

PRESET = load_preset("micro")
ARCH = PRESET.reference.as_dict()
CONFIG = train_config_dict(ARCH, PRESET.budget)
SHA = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def key(config=CONFIG, max_iters=24, stop_at=6, seed=0, sha=SHA):
    return evaluation_key(config, max_iters, stop_at, seed, sha)


def record(status="early", stop_at=6, **kw):
    result = {"curve": {"val_loss": [4.2, 3.9, float("nan")], "eval_steps": [0, 2, 4]}, "n_params": 123}
    return EvaluationRecord(arch=dict(ARCH), train_config=dict(CONFIG), seed=0, data_sha256=SHA, stop_at=stop_at,
                            max_iters=24, status=status, result=result, **kw)


def test_key_is_stable_and_ignores_order_and_number_types():
    k = key()
    assert len(k) == 64 and int(k, 16) >= 0
    shuffled = dict(reversed(list(CONFIG.items())))
    typed = {k: float(v) if isinstance(v, int) else v for k, v in CONFIG.items()}
    assert key(shuffled) == key(typed) == k
    assert key(stop_at=None, max_iters=24) == key(stop_at=24) == key(stop_at=99)  # all the complete run
    # A pinned value: the key must not change silently between versions (it is the cache).
    pinned = dict(n_layer=1, n_head=2, n_embd=16, dropout=0.0, learning_rate=0.003, block_size=16, batch_size=4,
                  max_iters=24, eval_interval=2, eval_batches=2, warmup_iters=2)
    assert evaluation_key(pinned, 24, 6, 0, SHA) == "5774d188cec7fea3d6e0426a30868a323c6d82516de75af53ce7e3276da8fa6c"


def test_key_changes_with_everything_that_changes_a_run():
    base = key()
    variants = [key(stop_at=8), key(stop_at=None), key(seed=1), key(sha="0" * 64)]
    for field, value in [("n_layer", 2), ("n_head", 1), ("n_embd", 32), ("dropout", 0.05),
                         ("learning_rate", 0.001), ("block_size", 32), ("batch_size", 8),
                         ("eval_interval", 3), ("eval_batches", 3), ("warmup_iters", 0)]:
        variants.append(key(dict(CONFIG, **{field: value})))
    variants.append(key(dict(CONFIG, max_iters=48), max_iters=48))
    variants.append(key(dict(CONFIG, weight_decay=0.0)))
    assert len({base, *variants}) == len(variants) + 1


def test_key_refuses_incomplete_config():
    with pytest.raises(ValueError, match="train_config_dict"):
        evaluation_key(ARCH, 24, 6, 0, SHA)
    with pytest.raises(ValueError, match="max_iters"):
        evaluation_key(CONFIG, 48, 6, 0, SHA)


def test_put_get_reopen(tmp_path):
    path = tmp_path / "run" / "archive.sqlite"
    k1, k2 = key(), key(stop_at=None)
    with Archive.open(path) as a:
        assert a.journal_mode == "wal" and a.count() == 0 and a.get(k1) is None
        a.put(k1, record(checkpoint=str(a.checkpoint_path(k1))))
        a.put(k2, record("complete", stop_at=24))
        assert a.count() == 2 and a.count("complete") == 1 and k1 in a
    with Archive(path) as a:
        r = a.get(k1)
        assert r.key == k1 and r.arch == ARCH and r.train_config == CONFIG and r.status == "early"
        assert r.result["n_params"] == 123 and r.curve["val_loss"][:2] == [4.2, 3.9]
        assert r.curve["val_loss"][2] != r.curve["val_loss"][2]  # NaN survives
        assert r.checkpoint == f"checkpoints/{k1}.pt" and a.checkpoint_path(k1) == a.dir / r.checkpoint
        assert (a.dir / "checkpoints").is_dir()
        assert [x.key for x in a.completed()] == [k2]
        assert {x.key for x in a.all()} == {k1, k2}
        # Upsert: promoting the early run replaces nothing else.
        a.put(k1, record("failed", failure="worker died"))
        assert a.get(k1).status == "failed" and a.get(k1).failure == "worker died" and a.count() == 2
        assert a.integrity_check()
        with pytest.raises(ValueError):
            a.put(k1, record("done"))


def test_a_killed_writer_loses_nothing_it_committed(tmp_path):
    path = tmp_path / "archive.sqlite"
    script = f"""
import os, signal
from gpnas.runs.archive import Archive, EvaluationRecord
a = Archive({str(path)!r})
for i in range(3):
    a.put(f"k{{i}}", EvaluationRecord(arch={{}}, train_config={{}}, seed=i, data_sha256="x", stop_at=1,
                                      max_iters=2, status="early"))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd(), env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.returncode != 0
    with Archive(path) as a:
        assert a.count() == 3 and a.get("k2").seed == 2 and a.integrity_check()


def test_foreign_files_are_refused(tmp_path):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all " * 200)
    pickled = tmp_path / "pop.pkl"
    pickled.write_bytes(pickle.dumps({"population": list(range(1000))}))
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE things (x)")
    db.close()
    for path in (garbage, pickled, other):
        with pytest.raises(FileFormatError) as err:
            Archive(path)
        assert "is not a gpnas archive" in str(err.value) and "\n" not in str(err.value)
    with sqlite3.connect(other) as db:  # refused without being changed
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    db.close()


def test_wrong_version_or_columns_refused(tmp_path):
    path = tmp_path / "a.sqlite"
    Archive(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
    db.close()
    with pytest.raises(FileFormatError, match="found version 99"):
        Archive(path)
    path = tmp_path / "b.sqlite"
    Archive(path).close()
    with sqlite3.connect(path) as db:
        db.execute("ALTER TABLE evaluations ADD COLUMN extra TEXT")
    db.close()
    with pytest.raises(FileFormatError, match="columns"):
        Archive(path)


def test_integrity_check_sees_corruption(tmp_path):
    path = tmp_path / "a.sqlite"
    with Archive(path) as a:
        for i in range(200):
            a.put(f"key{i:04d}", record())
        a._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert a.integrity_check()
    data = bytearray(path.read_bytes())
    page = 4096
    for offset in range(2 * page + 100, len(data) - page, page):  # scribble over b-tree pages
        data[offset:offset + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))
    try:
        a = Archive(path)
    except FileFormatError:
        return  # refused at open: also a correct answer
    with a:
        assert not a.integrity_check()


def test_an_archive_knows_the_runs_started_on_it_and_asking_writes_nothing(tmp_path):
    run_id, other = "ab" * 16, "cd" * 16
    with Archive(tmp_path / "a.sqlite") as archive:
        archive.register_run(run_id, tmp_path / "run")
        assert archive.knows_run(run_id) and not archive.knows_run(other)
    assert archive_knows_run(tmp_path / "a.sqlite", run_id)
    assert not archive_knows_run(tmp_path / "a.sqlite", other)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.sqlite"]  # the reader's WAL files are gone
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert not archive_knows_run(empty, run_id) and empty.read_bytes() == b""  # no schema written into it
    assert not archive_knows_run(tmp_path / "missing.sqlite", run_id)
    assert not (tmp_path / "missing.sqlite").exists()
    with sqlite3.connect(tmp_path / "foreign.sqlite") as db:
        db.execute("CREATE TABLE meta (name TEXT, value TEXT)")
        db.execute("INSERT INTO meta VALUES (?, 'x')", (f"run:{run_id}",))  # the row, but not a gpnas schema
    db.close()
    assert not archive_knows_run(tmp_path / "foreign.sqlite", run_id)


def test_a_run_records_where_its_archive_is(tmp_path, tiny_dataset):
    """Inside the folder: a path relative to it. Named elsewhere with --archive: the absolute path,
    the flag and a run id that the archive records, so the resume check passes."""
    from gpnas.jobs.run import check_archive, new_run, open_run
    from gpnas.runs.folder import read_json
    from gpnas.train.data import load_dataset

    micro = load_preset("micro")
    own = new_run(tmp_path / "own", micro, "combined", 0, tiny_dataset)
    inside = new_run(tmp_path / "inside", micro, "combined", 0, tiny_dataset,
                     archive_path=tmp_path / "inside" / "db" / "cache.sqlite")
    shared = new_run(tmp_path / "shared", micro, "combined", 0, tiny_dataset,
                     archive_path=tmp_path / "elsewhere" / "archive.sqlite")
    assert read_json(own.folder.path / "run.json")["archive"] == "archive.sqlite"
    meta = read_json(inside.folder.path / "run.json")
    assert meta["archive"] == "db/cache.sqlite" and "archive_external" not in meta
    meta = read_json(shared.folder.path / "run.json")
    assert meta["archive"] == str((tmp_path / "elsewhere" / "archive.sqlite").resolve())
    assert meta["archive_external"] is True and archive_knows_run(meta["archive"], meta["run_id"])
    for run in (own, inside, shared):
        check_archive(run.folder)
        again = open_run(run.folder.path, load_dataset, tiny_dataset.text_path.parent)
        assert again.folder.checkpoints_dir == again.folder.archive_path.parent / "checkpoints"
    assert shared.folder.archive_external and not inside.folder.archive_external
