"""``gpnas curves export`` and ``gpnas curves import-optuna`` through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.config import non_embedding_params
from gpnas.predict.curves import read_curves
from gpnas.runs.archive import Archive, EvaluationRecord
from gpnas.runs.folder import RunFolder, write_json


@pytest.fixture
def runner():
    return CliRunner()


# ------------------------------------------------------------------ curves export
def test_export_of_a_real_run_holds_its_completed_curves_as_the_archive_has_them(runner, tmp_path,
                                                                                tiny_corpus_dir):
    run = tmp_path / "run"
    made = runner.invoke(main, ["evolve", "--preset", "micro", "--backend", "serial", "--threads", "1",
                                "--generations", "1", "--data-dir", str(tiny_corpus_dir), "--out", str(run)])
    assert made.exit_code == 0, made.output
    out = tmp_path / "curves.jsonl"
    result = runner.invoke(main, ["curves", "export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output

    with Archive(run / "archive.sqlite") as archive:
        complete = {r.key: r for r in archive.completed()}
        early = archive.count("early")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["config_id"] for d in lines} == set(complete) and len(lines) >= 2
    assert result.output.strip() == (f"wrote {len(lines)} curves to {out}: {len(lines)} complete, 0 diverged; "
                                     f"left out {early} early and 0 failed evaluations")
    for d in lines:
        record = complete[d["config_id"]]
        curve = record.result["curve"]
        assert d["task"] == "tiny_corpus" and d["metric"] == "val_loss" and d["higher_is_better"] is False
        assert d["values"] == curve["val_loss"] and d["train_values"] == curve["eval_train_loss"]
        assert d["x"] == list(range(0, 25, 2))  # micro: 24 steps, an evaluation every 2
        arch = record.arch
        assert d["config"] == {**{k: arch[k] for k in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate")},
                               "n_params": non_embedding_params(arch["n_layer"], arch["n_embd"])}
    # the file feeds the predictors as it is
    assert [c.final for c in read_curves(out)] == [d["values"][-1] for d in lines]


def planted_run(tmp_path, name="run", archive_path=None, charged=()):
    """A run folder whose snapshot charged ``charged``, over an archive shared at ``archive_path``."""
    archive_path = archive_path or tmp_path / name / "archive.sqlite"
    RunFolder.create(tmp_path / name, {"mode": "combined", "seed": 0, "data": {"name": "planted"},
                                       "archive": str(archive_path)})
    write_json(tmp_path / name / "snapshots" / "gen_0000.json", {"generation": 0, "charged": list(charged)})
    return tmp_path / name, archive_path


def put(archive, key, status, stop_at=24, val=(3.0, 2.5, 2.2), n_layer=1):
    steps = [0, 2, 4][:len(val)]
    curve = {"train_loss": [3.0] * 4, "eval_steps": steps, "val_loss": list(val),
             "eval_train_loss": [v - 0.1 for v in val], "step_time_s": [0.01] * 4, "max_iters": 24,
             "diverged": status == "diverged"}
    arch = {"n_layer": n_layer, "n_head": 2, "n_embd": 16, "dropout": 0.1, "learning_rate": 0.003}
    archive.put(key, EvaluationRecord(arch=arch, train_config={}, seed=0, data_sha256="0" * 64, stop_at=stop_at,
                                      max_iters=24, status=status,
                                      result=None if status == "failed" else {"curve": curve},
                                      failure="boom" if status == "failed" else None))


def test_export_keeps_only_the_runs_own_full_budget_evaluations_and_marks_diverged_ones(runner, tmp_path):
    own = ["a_complete", "b_early", "c_diverged", "d_failed", "e_missing", "f_complete"]
    run, archive_path = planted_run(tmp_path, charged=own)
    with Archive(archive_path) as archive:
        put(archive, "a_complete", "complete")
        put(archive, "b_early", "early", stop_at=4)
        put(archive, "c_diverged", "diverged", val=(3.0, 2.9))
        put(archive, "d_failed", "failed")
        put(archive, "f_complete", "complete", val=(3.1, 2.6, 2.0), n_layer=2)
        put(archive, "z_other_run", "complete")  # another run's evaluation in the shared archive
    out = tmp_path / "c.jsonl"
    result = runner.invoke(main, ["curves", "export", str(run), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 curves" in result.output and "2 complete, 1 diverged" in result.output
    assert "left out 1 early and 2 failed evaluations, and 1 in the archive that other runs paid for" \
        in result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["config_id"] for d in lines] == ["a_complete", "c_diverged", "f_complete"]  # the order charged
    diverged = lines[1]
    assert diverged["diverged"] is True and diverged["horizon"] == 13 and diverged["values"] == [3.0, 2.9]
    assert "diverged" not in lines[0] and "horizon" not in lines[0]
    assert lines[2]["config"]["n_layer"] == 2 and lines[2]["train_values"] == pytest.approx([3.0, 2.5, 1.9])
    assert {d["task"] for d in lines} == {"planted"}
    assert len(read_curves(out)) == 3


def test_export_bad_input_is_one_line_and_a_nonzero_exit(runner, tmp_path):
    out = str(tmp_path / "c.jsonl")
    cases = []
    cases.append(([str(tmp_path / "nowhere")], "is not a gpnas run folder"))
    no_snapshot = tmp_path / "fresh"
    RunFolder.create(no_snapshot, {"mode": "combined", "seed": 0})
    cases.append(([str(no_snapshot)], "no snapshot yet"))
    only_early, archive_path = planted_run(tmp_path, "early", charged=["k"])
    with Archive(archive_path) as archive:
        put(archive, "k", "early", stop_at=4)
    cases.append(([str(only_early)], "no full-budget curve yet (1 early, 0 failed"))
    lost, _ = planted_run(tmp_path, "lost", archive_path=tmp_path / "gone.sqlite", charged=["k"])
    cases.append(([str(lost)], "the run's archive is missing"))
    for args, message in cases:
        result = runner.invoke(main, ["curves", "export", *args, "--out", out])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "c.jsonl").exists()
