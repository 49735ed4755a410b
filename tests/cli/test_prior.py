"""gpnas evolve --prior: a predictor file's formulas are where the females start, recorded in
run.json for a resume; a prior that reads features the run lacks, a mode without females
and a prior on --resume are one line and leave nothing behind."""

import json

from click.testing import CliRunner

from gpnas.cli import main
from tests.jobs.test_table_ablation import write_table


def fit_prior(tmp_path, table, name="prior"):
    result = CliRunner().invoke(main, ["predictors", "fit", "--curves", str(table), "--prefix-frac", "0.25",
                                       "--generations", "3", "--population", "40", "--seed", "0",
                                       "--out", str(tmp_path / name)])
    assert result.exit_code == 0, result.output
    return tmp_path / name


def test_the_females_start_from_the_prior_and_a_resume_keeps_it(tmp_path):
    table = write_table(tmp_path / "t.jsonl", n_configs=60)
    prior = fit_prior(tmp_path, table)
    out = tmp_path / "run"
    args = ["evolve", "--table", str(table), "--preset", "micro", "--generations", "2", "--out", str(out),
            "--prior", str(prior), "--backend", "serial"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    recorded = json.loads((out / "run.json").read_text())["prior"]
    assert recorded["formulas"] and len(recorded["sha256"]) == 64
    # the engine's generation 0: the prior's formulas are the first females
    from gpnas.jobs.run import evaluation_task, make_search, open_run
    from gpnas.runs.archive import Archive
    from gpnas.train.data import load_dataset
    run = open_run(out, load_dataset)
    assert run.prior == tuple(recorded["formulas"])
    task, space = evaluation_task(run)
    with Archive(tmp_path / "a.sqlite") as archive:
        engine = make_search(run.preset, "combined", task, archive, 0, space=space, prior=run.prior)
        state, _ = engine.start()
    assert [str(f) for f in state.females[:len(run.prior)]] == list(run.prior)
    again = CliRunner().invoke(main, ["evolve", "--resume", str(out), "--generations", "3", "--backend", "serial"])
    assert again.exit_code == 0, again.output
    refused = CliRunner().invoke(main, ["evolve", "--resume", str(out), "--prior", str(prior)])
    assert refused.exit_code != 0 and "--prior cannot change on --resume" in refused.output


def test_a_prior_reading_other_features_or_a_mode_without_females_is_one_line(tmp_path):
    import pytest

    from gpnas.config import load_preset
    from gpnas.errors import ConfigError
    from gpnas.predict import trees
    from gpnas.runs.table import read_table
    from gpnas.runs.tasks import replay_task
    from gpnas.search import females as fem

    table = write_table(tmp_path / "t.jsonl", n_configs=60)
    prior = fit_prior(tmp_path, table)
    features = fem.Features.of_task(replay_task(load_preset("micro"), read_table(table))[0])
    formulas = fem.prior_formulas(prior, features)
    used = sorted({n.value for t in formulas for n in trees.parse_tree(t, features.pset())
                   if isinstance(getattr(n, "value", None), str)})
    lacking = fem.Features(tuple(n for n in features.names if n != used[0]), features.config_keys)
    with pytest.raises(ConfigError, match=f"its formulas read {used[0]}, which this run's curves do not have"):
        fem.prior_formulas(prior, lacking)
    out = tmp_path / "refused"
    result = CliRunner().invoke(main, ["evolve", "--table", str(table), "--preset", "micro", "--out", str(out),
                                       "--prior", str(prior), "--mode", "male"])
    assert result.exit_code != 0 and "--prior seeds the females, and mode male has none" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_a_prior_file_with_code_in_it_is_refused_without_running_it(tmp_path):
    table = write_table(tmp_path / "t.jsonl", n_configs=60)
    prior = fit_prior(tmp_path, table)
    d = json.loads((prior / "predictor.json").read_text())
    tree = next(e for e in d["equations"] if e.get("tree"))
    tree["tree"] = "__import__('os').system('touch pwned')"
    (prior / "predictor.json").write_text(json.dumps(d))
    result = CliRunner().invoke(main, ["evolve", "--table", str(table), "--preset", "micro",
                                       "--out", str(tmp_path / "run"), "--prior", str(prior)])
    assert result.exit_code != 0 and not (tmp_path / "pwned").exists() and not (tmp_path / "run").exists()
