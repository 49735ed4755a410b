import json

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.predict.curves import write_curves
from tests.predict.test_predictor import synthetic_curves


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    curves = root / "curves.jsonl"
    write_curves(curves, synthetic_curves(90, tasks=("a", "b", "c")))
    out = root / "pred"
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(curves), "--prefix-frac", "0.2",
                                       "--generations", "3", "--population", "30", "--seed", "1",
                                       "--out", str(out), "--holdout-task", "c"])
    assert result.exit_code == 0, result.output
    return curves, out, result.output


def test_fit_prints_table_and_baselines_and_writes_files(fitted):
    curves, out, output = fitted
    assert "cv_obj" in output and "cv_rho" in output and "cv_regret" in output
    for name in ("gpnas", "last+offset", "last", "best", "power_law", "held-out tasks (c)"):
        assert name in output
    assert "fitted on 60 curves of 2 task(s)" in output and "chosen:" in output
    assert (out / "predictor.json").exists()


def test_fit_refuses_too_few_curves_in_one_line(tmp_path):
    few = tmp_path / "few.jsonl"
    write_curves(few, synthetic_curves(5))
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(few), "--out", str(tmp_path / "p")])
    assert result.exit_code != 0
    assert result.output.strip().splitlines() == ["Error: 5 completed curves to fit on; a predictor needs at least 8"]


@pytest.mark.parametrize("option", ["--rank-margin", "--linear-margin"])
def test_fit_refuses_a_negative_margin_in_one_line(tmp_path, option):
    curves = tmp_path / "c.jsonl"
    write_curves(curves, synthetic_curves(10))
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(curves), option, "-1",
                                       "--out", str(tmp_path / "p")])
    assert result.exit_code == 2
    assert option in result.output and ">=0" in result.output.replace(" ", "")
    assert not (tmp_path / "p").exists()


def test_predict_writes_one_json_line_per_curve(fitted):
    curves, out, _ = fitted
    result = CliRunner().invoke(main, ["predictors", "predict", "--predictor", str(out / "predictor.json"),
                                       "--curves", str(curves)])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 90 and set(rows[0]) == {"task", "config_id", "prediction"}


def test_eval_tables_and_json(fitted):
    curves, out, _ = fitted
    runner = CliRunner()
    text = runner.invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(curves)])
    assert text.exit_code == 0 and "mean over tasks" in text.output and "power_law" in text.output
    result = runner.invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(curves),
                                  "--prefix-frac", "0.3", "--json"])
    assert result.exit_code == 0
    d = json.loads(result.output)
    assert d["prefix_frac"] == 0.3 and set(d["scores"]) == {"gpnas", "last", "best", "power_law"}
    assert set(d["scores"]["gpnas"]["per_task"]) == {"a", "b", "c"}
    assert set(d["scores"]["last"]["mean"]) == {"mae", "median_ae", "spearman", "regret"}


def test_malformed_curve_file_is_one_line_and_nonzero(fitted, tmp_path):
    _, out, _ = fitted
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"values": [1, 2, 3, 4, 5]}\n{"values": [1, "oops"]}\n')
    for args in (["predict", "--predictor", str(out)], ["eval", "--predictor", str(out)],
                 ["fit", "--out", str(tmp_path / "o")]):
        result = CliRunner().invoke(main, ["predictors", *args, "--curves", str(bad)])
        assert result.exit_code == 1, result.output
        assert result.output.strip().splitlines() == [f"Error: {bad}:2: 'values[1]' is \"oops\", not a number"]


def test_missing_file_unknown_task_and_bad_predictor(fitted, tmp_path):
    curves, out, _ = fitted
    runner = CliRunner()
    r = runner.invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(tmp_path / "no.jsonl")])
    assert r.exit_code == 1 and "cannot read curve file" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, ["predictors", "fit", "--curves", str(curves), "--out", str(tmp_path / "o"),
                             "--holdout-task", "nope"])
    assert r.exit_code == 2 and "'nope' is not a task" in r.output
    evil = tmp_path / "evil.json"
    evil.write_text(json.dumps({"format": "gpnas-female-predictor", "version": 2, "features": ["rel_last"],
                                "prefix": {"frac": 0.2}, "best_index": 0,
                                "equations": [{"kind": "tree", "tree": "__import__('os')",
                                               "scaling": {"coef": [0, 1], "lo": -1, "hi": 1}}]}))
    r = runner.invoke(main, ["predictors", "predict", "--predictor", str(evil), "--curves", str(curves)])
    assert r.exit_code == 1 and "tree:" in r.output and len(r.output.strip().splitlines()) == 1
    r = runner.invoke(main, ["predictors", "fit", "--curves", str(curves), "--out", str(tmp_path / "o"),
                             "--prefix-frac", "1.5"])
    assert r.exit_code == 2


def test_help_for_every_subcommand():
    for sub in ("fit", "predict", "eval"):
        r = CliRunner().invoke(main, ["predictors", sub, "--help"])
        assert r.exit_code == 0 and "--curves" in r.output


def test_fit_saves_the_margins_it_was_given(tmp_path):
    curves = tmp_path / "c.jsonl"
    write_curves(curves, synthetic_curves(20))
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(curves), "--generations", "0",
                                       "--population", "4", "--rank-margin", "3", "--linear-margin", "0.5",
                                       "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "p" / "predictor.json").read_text())["config"]
    assert (config["rank_margin"], config["linear_margin"]) == (3.0, 0.5)


def test_eval_on_the_curves_it_was_fitted_on_says_the_figures_are_in_sample(fitted, tmp_path):
    """Fitted on tasks a and b (c held out): scoring all 90 curves is in-sample for 60 of them;
    scoring only c is not."""
    from gpnas.predict.curves import read_curves

    curves, out, _ = fitted
    result = CliRunner().invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(curves)])
    assert result.exit_code == 0, result.output
    assert "in-sample: the predictor was fitted on 60 of these 90 curves" in result.output
    assert "mean over tasks (in-sample)" in result.output
    as_json = CliRunner().invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(curves),
                                        "--json"])
    assert json.loads(as_json.output)["in_sample_curves"] == 60

    held = tmp_path / "held.jsonl"
    write_curves(held, [c for c in read_curves(curves) if c.task == "c"])
    result = CliRunner().invoke(main, ["predictors", "eval", "--predictor", str(out), "--curves", str(held)])
    assert result.exit_code == 0, result.output
    assert "in-sample" not in result.output
