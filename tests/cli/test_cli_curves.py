"""``gpnas curves export`` and ``gpnas curves import-optuna`` through click's CliRunner."""

import json
import math
import sqlite3

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

    # the preset's reference architecture, trained at the end beside the run, is not the run's evaluation
    reference = (json.loads((run / "summary.json").read_text()).get("reference") or {}).get("key")
    with Archive(run / "archive.sqlite") as archive:
        complete = {r.key: r for r in archive.completed() if r.key != reference}
        early = archive.count("early")
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {d["config_id"] for d in lines} == set(complete) and len(lines) >= 2
    # the reference is named as such: in a single run's own archive no other run paid for anything
    assert result.output.strip() == (f"wrote {len(lines)} curves to {out}: {len(lines)} complete, 0 diverged; "
                                     f"left out {early} early and 0 failed evaluations, the preset's reference "
                                     "architecture (trained beside the run, not charged to it)")
    assert "other runs" not in result.output
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
    assert "left out 1 early and 2 failed evaluations, and 1 in the archive not charged to this run" \
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
    # the archive run.json names is gone (inside the folder: one outside is refused as such, see test_hostile_inputs)
    lost, _ = planted_run(tmp_path, "lost", archive_path=tmp_path / "lost" / "gone.sqlite", charged=["k"])
    cases.append(([str(lost)], "the run's archive is missing"))
    for args, message in cases:
        result = runner.invoke(main, ["curves", "export", *args, "--out", out])
        assert result.exit_code == 1, (args, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "c.jsonl").exists()


# ------------------------------------------------------------------ curves import-optuna
@pytest.fixture(scope="module")
def optuna_storage(tmp_path_factory):
    """One real SQLite Optuna storage for the module (creating its schema takes seconds)."""
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    path = tmp_path_factory.mktemp("optuna") / "study.db"
    storage = f"sqlite:///{path}"

    def objective(trial):  # a loss curve set by lr; some trials pruned, one fails
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        width = trial.suggest_categorical("width", [32, 64])
        trial.suggest_categorical("act", ["relu", "gelu"])
        if trial.number == 3:
            raise ValueError("planted failure")
        final = 2.0 + abs(math.log10(lr) + 2.5) * 0.5 - width / 640
        for i in range(12):
            trial.report(final + 2.0 * math.exp(-i / 3), i * 5)
            if trial.number in (5, 9) and i == 4:
                raise optuna.TrialPruned()
        return final + 2.0 * math.exp(-11 / 3)

    study = optuna.create_study(storage=storage, study_name="demo", sampler=optuna.samplers.RandomSampler(0))
    study.optimize(objective, n_trials=16, catch=(ValueError,))
    optuna.create_study(storage=storage, study_name="empty")
    optuna.create_study(storage=storage, study_name="pareto", directions=["minimize", "minimize"])
    return storage, path


def test_import_optuna_writes_finished_trials_that_predictors_fit_reads(runner, tmp_path, optuna_storage):
    storage, _ = optuna_storage
    out = tmp_path / "demo.jsonl"
    result = runner.invoke(main, ["curves", "import-optuna", "--storage", storage, "--study", "demo",
                                  "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"wrote 13 curves to {out} from study 'demo'; left out 2 pruned, 1 failed"
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [d["config_id"] for d in lines] == [str(i) for i in range(16) if i not in (3, 5, 9)]
    d = lines[0]
    assert d["x"] == list(range(0, 56, 5)) and len(d["values"]) == 12 and d["higher_is_better"] is False
    assert set(d["config"]) == {"lr", "width"}  # numeric params only: "act" is a string
    assert d["values"][0] > d["values"][-1]
    curves = read_curves(out)
    assert len(curves) == 13 and {c.task for c in curves} == {"demo"}
    fit = runner.invoke(main, ["predictors", "fit", "--curves", str(out), "--generations", "2",
                               "--population", "20", "--out", str(tmp_path / "pred")])
    assert fit.exit_code == 0, fit.output
    assert (tmp_path / "pred" / "predictor.json").exists()


def test_import_optuna_bad_input_is_one_line_and_a_nonzero_exit(runner, tmp_path, optuna_storage):
    storage, _ = optuna_storage
    not_a_study = tmp_path / "other.db"
    sqlite3.connect(not_a_study).execute("CREATE TABLE t (x)").connection.commit()
    cases = [
        ([storage, "empty"], "has no finished trial with reported values (0 pruned, 0 failed)"),
        ([storage, "nope"], "no study named 'nope'"),
        ([storage, "pareto"], "has 2 objectives"),
        ([f"sqlite:///{tmp_path / 'missing.db'}", "demo"], "does not exist"),
        ([f"sqlite:///{not_a_study}", "demo"], "holds no Optuna studies"),
        (["nosuchdialect://x", "demo"], "cannot open storage 'nosuchdialect://x'"),
    ]
    for (url, name), message in cases:
        result = runner.invoke(main, ["curves", "import-optuna", "--storage", url, "--study", name,
                                      "--out", str(tmp_path / "x.jsonl")])
        assert result.exit_code == 1, (url, name, result.output)
        assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "missing.db").exists()  # a wrong path is not created
    assert not (tmp_path / "x.jsonl").exists()
