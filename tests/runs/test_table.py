import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from gpnas.errors import FileFormatError
from gpnas.runs.table import (
    TableError,
    append_recording,
    config_key,
    infer_space,
    read_table,
    recorded_pairs,
    table_tasks,
)


def line(config, values, **extra):
    return json.dumps({"config": config, "values": values, **extra})


def write(path, *lines, end="\n"):
    path.write_text("\n".join(lines) + end)
    return path


@pytest.fixture
def small(tmp_path):
    """Three configs of task "a" (one recorded with seeds 0 and 1), one curve of task "b"."""
    return write(
        tmp_path / "t.jsonl",
        line({"lr": 0.1, "act": "relu"}, [3.0, 2.0, 1.0], seed=1, x=[0, 5, 10], task="a", cost_per_step=2.0),
        line({"lr": 0.01, "act": "gelu"}, [3.0, 2.5, 2.0], seed=0, x=[0, 5, 10], task="a", cost_per_step=4.0,
             train_values=[2.9, 2.4, 1.9]),
        line({"lr": 9.0}, [1.0, 1.0], task="b"),
        "",
        line({"lr": 0.1, "act": "relu"}, [3.0, 2.0, 0.5], seed=0, x=[0, 5, 10], task="a", cost_per_step=2.0),
        line({"act": "tanh", "lr": 0.5}, [0.1, 0.2, 0.3], higher_is_better=True, x=[0, 5, 10], task="a",
             cost_per_step=1.0),
    )


def test_read_table_orders_configs_recordings_and_costs(small):
    assert table_tasks(small) == ["a", "b"]
    t = read_table(small, "a")
    assert t.task == "a" and t.keys == ("act", "lr") and t.horizon == 3
    # canonical json order: "gelu" < "relu" < "tanh"
    assert [c["act"] for c in t.configs] == ["gelu", "relu", "tanh"]
    assert [[r.seed for r in recs] for recs in t.recordings] == [[0], [0, 1], [None]]
    assert [[r.line for r in recs] for recs in t.recordings] == [[2], [5, 1], [6]]
    assert np.array_equal(t.steps, [0.0, 5.0, 10.0])
    assert np.array_equal(t.cost_per_step, [4.0, 2.0, 1.0])
    assert np.allclose(t.recordings[2][0].values, [0.9, 0.8, 0.7])   # 1 - accuracy
    assert np.allclose(t.recordings[0][0].train_values, [2.9, 2.4, 1.9])
    assert t.recordings[1][0].train_values is None
    # finals: mean over recordings; regret's best and median
    assert np.allclose(t.finals(), [2.0, 0.75, 0.7])
    assert t.best() == pytest.approx(0.7) and t.median() == pytest.approx(0.75)
    with pytest.raises(ValueError):
        t.recordings[0][0].values[0] = 0.0   # read-only: a frozen table stays frozen


def test_one_task_needs_no_name_and_defaults(tmp_path):
    path = write(tmp_path / "t.jsonl", line({"k": 1}, [2.0, 1.0]), line({"k": 2}, [3.0, 1.0]))
    t = read_table(path)
    assert t.task == "" and np.array_equal(t.steps, [0.0, 1.0]) and np.array_equal(t.cost_per_step, [1.0, 1.0])
    assert [r.seed for recs in t.recordings for r in recs] == [None, None]


def test_sha256_is_of_the_tasks_own_lines(small, tmp_path):
    t = read_table(small, "a")
    own = [raw for raw in small.read_bytes().split(b"\n") if b'"task": "a"' in raw]
    assert len(own) == 4 and t.sha256 == hashlib.sha256(b"".join(r + b"\n" for r in own)).hexdigest()
    # another task's lines and blank lines do not change it; a changed value does
    alone = write(tmp_path / "alone.jsonl", *[r.decode() for r in own])
    assert read_table(alone).sha256 == t.sha256
    changed = write(tmp_path / "changed.jsonl", *[r.decode().replace("0.5]", "0.4]") for r in own])
    assert read_table(changed).sha256 != t.sha256


def test_recording_pick_is_deterministic(small):
    t = read_table(small, "a")
    relu = [c["act"] for c in t.configs].index("relu")
    assert t.recording(relu, 1).line == 1 and t.recording(relu, 0).line == 5      # the seed itself
    assert [t.recording(relu, s).line for s in (2, 3, 4, -1)] == [5, 1, 5, 1]      # recordings[seed % 2]
    assert {t.recording(2, s).line for s in range(5)} == {6}                       # one recording: always it
    assert read_table(small, "a").recording(relu, 7) is not None
    assert [read_table(small, "a").recording(relu, s).line for s in range(6)] == \
        [t.recording(relu, s).line for s in range(6)]


def test_several_tasks_need_a_name(small):
    with pytest.raises(TableError) as info:
        read_table(small)
    assert "'a', 'b'" in str(info.value) and "--task NAME" in str(info.value)
    with pytest.raises(TableError) as info:
        read_table(small, "c")
    assert "no task 'c'" in str(info.value) and "'a', 'b'" in str(info.value)


GOOD = line({"lr": 0.1, "n": 2}, [3.0, 2.0, 1.0])


@pytest.mark.parametrize("bad, problem", [
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0], horizon=3), "incomplete curve: 2 of its 3"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0, 0.5]), "4 values but line 1's has 3"),
    (line({"lr": 0.2}, [3.0, 2.0, 1.0]), "lacks key 'n' that line 1 has"),
    (line({"lr": 0.2, "n": 2, "m": 1}, [3.0, 2.0, 1.0]), "key 'm' that line 1 lacks"),
    (line({"lr": "high", "n": 2}, [3.0, 2.0, 1.0]), "'config.lr' is a string here but a number on line 1"),
    (json.dumps({"values": [3.0, 2.0, 1.0]}), "without 'config'"),
    (line({"lr": 0.1, "n": 2}, [3.0, 2.0, 0.0]), "already recorded on line 1"),
    ('{"config": {"lr": 0.2, "n": 2}, "values": [3.0, NaN, 1.0]}', "'values[1]' is nan"),
    ('{"config": {"lr": 0.2, "n": 2}, "values": [3.0, Infinity, 1.0]}', "'values[1]' is inf"),
    ('{"config": {"lr": NaN, "n": 2}, "values": [3.0, 2.0, 1.0]}', "'config.lr' is nan"),
    (line({"lr": 0.2, "n": [2]}, [3.0, 2.0, 1.0]), "'config.n' is [2]"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], cost_per_step=0), "'cost_per_step' is 0"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], cost_per_step="1e9"), "'cost_per_step' is \"1e9\""),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], cost_per_step=True), "'cost_per_step' is true"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], seed=1.5), "'seed' is 1.5"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], seed="0"), "'seed' is \"0\""),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], x=[0, 10, 20]), "a 'x' here but none on line 1"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], x=[0, 2, 1]), "'x' must increase"),
    (line({"lr": 0.2, "n": 2}, [3.0, 2.0, 1.0], train_values=[1.0]), "'train_values' has 1"),
    ("not json", "not JSON"),
    ("[1, 2]", "JSON object"),
])
def test_bad_lines_are_one_line_errors_naming_file_and_line(tmp_path, bad, problem):
    path = write(tmp_path / "bad.jsonl", GOOD, bad)
    before = path.read_bytes()
    with pytest.raises(TableError) as info:
        read_table(path)
    message = str(info.value)
    assert message.startswith(f"{path}:2: ") and problem in message and "\n" not in message
    assert isinstance(info.value, FileFormatError) and path.read_bytes() == before


def test_different_x_and_cost_presence_name_both_lines(tmp_path):
    first = line({"k": 1}, [2.0, 1.0, 0.5], x=[0, 10, 20], cost_per_step=3.0)
    path = write(tmp_path / "x.jsonl", first, line({"k": 2}, [2.0, 1.0, 0.5], x=[0, 10, 30], cost_per_step=3.0))
    with pytest.raises(TableError, match=r"x.jsonl:2: 'x' differs from line 1's at index 2 \(30 vs 20\)"):
        read_table(path)
    path = write(tmp_path / "c.jsonl", first, line({"k": 2}, [2.0, 1.0, 0.5], x=[0, 10, 20]))
    with pytest.raises(TableError, match=r"c.jsonl:2: no 'cost_per_step' here but one on line 1"):
        read_table(path)


def test_only_the_chosen_tasks_curves_are_checked(tmp_path):
    path = write(tmp_path / "t.jsonl", GOOD, line({"other": 1}, [1.0], task="b"))
    assert len(read_table(path, "").configs) == 1 and len(read_table(path, "b").configs) == 1


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(TableError, match="cannot read table"):
        read_table(tmp_path / "missing.jsonl")
    with pytest.raises(TableError, match="no curves"):
        read_table(write(tmp_path / "empty.jsonl", "", ""))


def test_infer_space_on_a_synthetic_table(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(20):
        config = {"act": ["relu", "gelu"][i % 2], "n_layer": [2, 4, 6][i % 3], "width": 16 + 8 * i,
                  "lr": float(10 ** rng.uniform(-4, -1)), "dropout": 0.01 * i, "fixed": 7.5}
        lines.append(line(config, [2.0, 1.0]))
    space = infer_space(read_table(write(tmp_path / "s.jsonl", *lines)))
    lrs = sorted(json.loads(x)["config"]["lr"] for x in lines)
    assert space == {
        "act": {"choices": ["gelu", "relu"]},
        "dropout": {"min": 0.0, "max": 0.19, "quantiles": [0.01 * i for i in range(20)]},
        "fixed": {"choices": [7.5]},
        "lr": {"min": lrs[0], "max": lrs[-1], "log": True, "quantiles": lrs},
        "n_layer": {"choices": [2, 4, 6]},
        "width": {"min": 16, "max": 168},
    }
    assert type(space["width"]["min"]) is int and lrs[-1] / lrs[0] >= 10


def test_append_and_recorded_pairs_survive_a_killed_writer(tmp_path):
    path = tmp_path / "build.jsonl"
    assert recorded_pairs(path, "t") == set()
    a, b = {"n": 1, "lr": 0.1}, {"n": 2, "lr": 0.1}
    append_recording(path, {"task": "t", "config": a, "seed": 0, "values": [2.0, 1.0]})
    append_recording(path, {"task": "t", "config": b, "seed": 0, "values": [2.0, 1.5]})
    append_recording(path, {"task": "u", "config": a, "values": [2.0, 1.5]})
    assert recorded_pairs(path, "t") == {(config_key(a), 0), (config_key(b), 0)}
    assert recorded_pairs(path, "u") == {('{"lr": 0.1, "n": 1}', None)}
    # a writer killed mid-line leaves a partial last line: ignored, then cut before the next append
    with open(path, "a") as f:
        f.write('{"task": "t", "config": {"n": 3, "lr": 0.1}, "seed": 0, "val')
    assert recorded_pairs(path, "t") == {(config_key(a), 0), (config_key(b), 0)}
    append_recording(path, {"task": "t", "config": a, "seed": 1, "values": [2.0, 0.5]})
    assert path.read_text().count("\n") == 4 and '"val\n' not in path.read_text()
    t = read_table(path, "t")
    assert [[r.seed for r in recs] for recs in t.recordings] == [[0, 1], [0]]
    # a complete last line without its newline is kept, and gets one
    path.write_bytes(path.read_bytes().rstrip(b"\n"))
    append_recording(path, {"task": "t", "config": b, "seed": 1, "values": [2.0, 1.0]})
    assert len(recorded_pairs(path, "t")) == 4
    # a bad line other than a partial last one is an error
    bad = write(tmp_path / "bad.jsonl", "{oops", GOOD)
    with pytest.raises(TableError, match=r"bad.jsonl:1: not JSON"):
        recorded_pairs(bad, "")


@pytest.mark.parametrize("curve, problem", [
    ({"config": {"n": 1}, "values": [1.0, float("nan")]}, "'values[1]' is nan"),
    ({"values": [1.0]}, "without 'config'"),
    ({"config": {"n": 1}, "values": [1.0], "seed": "x"}, "'seed'"),
    ({"config": {"n": 1}, "values": [1.0], "extra": object()}, "not JSON serializable"),
])
def test_append_refuses_what_read_table_refuses_and_writes_nothing(tmp_path, curve, problem):
    path = write(tmp_path / "build.jsonl", GOOD)
    with pytest.raises(TableError, match="cannot append the curve of config") as info:
        append_recording(path, curve)
    assert problem in str(info.value) and path.read_text() == GOOD + "\n"


@pytest.mark.skipif(not os.environ.get("GPNAS_CURVES_FILE"), reason="set GPNAS_CURVES_FILE to a real curve file")
def test_a_real_curve_file_reads_as_tables():
    path = os.environ["GPNAS_CURVES_FILE"]
    tasks = table_tasks(path)
    total = 0
    for task in tasks:
        t = read_table(path, task)
        total += sum(len(recs) for recs in t.recordings)
        finals = t.finals()
        assert np.all(np.isfinite(finals)) and t.best() == finals.min() and t.best() <= t.median()
        assert set(infer_space(t)) == set(t.keys) and np.all(t.cost_per_step > 0)
    assert total == sum(1 for raw in Path(path).read_bytes().split(b"\n") if raw.strip())
