import json

import numpy as np
import pytest

from gpnas.errors import FileFormatError
from gpnas.predict.curves import Curve, curve_from_learning_curve, prefix_length, read_curves, write_curves


def test_prefix_length_convention():
    assert prefix_length(51, 0.2) == 11          # ceil(10.2)
    assert prefix_length(50, 0.2) == 10          # no float round-up to 11
    assert prefix_length(10, 0.2) == 4           # at least 4
    assert prefix_length(3, 0.2) == 3            # capped at n
    assert prefix_length(51, 1.0) == 51


def test_prefix_keeps_horizon():
    c = Curve(values=np.arange(20.0), task="t")
    p = c.prefix(0.25)
    assert len(p.values) == 5 and p.n == 20 and not p.complete


def test_read_write_round_trip_and_accuracy_flip(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        json.dumps({"task": "a", "config_id": "1", "values": [0.5, 0.6, 0.8], "higher_is_better": True,
                    "x": [0, 1, 2], "config": {"learning_rate": 0.01, "beta1": 0.9}}) + "\n\n"
        + json.dumps({"values": [3, 2, 1.5], "horizon": 10}) + "\n")
    a, b = read_curves(path)
    assert np.allclose(a.values, [0.5, 0.4, 0.2])  # 1 - accuracy
    assert a.config == {"learning_rate": 0.01, "beta1": 0.9}  # every numeric config key
    assert b.n == 10 and not b.complete
    write_curves(tmp_path / "d.jsonl", [a, b])
    a2, b2 = read_curves(tmp_path / "d.jsonl")
    assert np.array_equal(a2.values, a.values) and b2.n == 10 and a2.config == a.config


@pytest.mark.parametrize("line, problem", [
    ("not json", "not JSON"),
    ('{"task": "a"}', "missing 'values'"),
    ('{"values": []}', "non-empty"),
    ('{"values": [1, null]}', "values[1]"),
    ('{"values": [1, NaN]}', "values[1]"),
    ('{"values": [1, true]}', "values[1]"),
    ('{"values": [1, 2], "x": [1]}', "'x' has 1"),
    ('{"values": [1, 2], "horizon": 1}', "horizon"),
    ('[1, 2]', "JSON object"),
])
def test_malformed_lines_name_file_and_line(tmp_path, line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"values": [1, 2]}\n' + line + "\n")
    with pytest.raises(FileFormatError) as info:
        read_curves(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}:2: ") and problem in msg and "\n" not in msg


def test_unreadable_and_empty_files(tmp_path):
    with pytest.raises(FileFormatError, match="cannot read"):
        read_curves(tmp_path / "missing.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(FileFormatError, match="no curves"):
        read_curves(tmp_path / "empty.jsonl")


def test_trainer_curve_conversion_knows_its_horizon():
    d = {"eval_steps": [0, 250, 500], "val_loss": [4.2, 3.0, float("nan")], "max_iters": 2000,
         "train_loss": [], "eval_train_loss": [], "step_time_s": [], "diverged": True}
    c = curve_from_learning_curve(d, task="shakespeare_char", config_id="abc", config={"n_layer": 4})
    assert c.n == 9  # 0, 250, ..., 2000
    assert len(c.values) == 3 and np.isnan(c.values[-1])
    d2 = dict(d, eval_steps=[0, 300], val_loss=[4.2, 3.0], max_iters=1000)
    assert curve_from_learning_curve(d2).n == 5  # 0, 300, 600, 900 and the last step 1000
