"""gpnas ablate --table: every method against a table at one budget, resumable records
that carry their code and table, anytime regret, and bad input refused before anything runs."""

import json
import math
import random

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.config import ConfigError, load_preset, preset_to_dict
from gpnas.jobs import table_ablation as ta
from gpnas.runs.table import read_table


def write_table(path, n_configs=40, task="t"):
    """Configs whose curves fall fastest near lr 3e-3, each cost 1 per step."""
    rng = random.Random(0)
    lines = []
    for _ in range(n_configs):
        lr, width = 10 ** rng.uniform(-4, -1), rng.choice([16, 32, 64])
        rate = max(0.01, 0.15 - 0.08 * abs(math.log10(lr) + 2.5))
        values = [1.0 / (1 + rate * t) + 0.001 * width / 64 for t in range(21)]
        lines.append(json.dumps({"task": task, "config": {"lr": lr, "width": width}, "values": values}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def table(tmp_path):
    return write_table(tmp_path / "t.jsonl")


def test_every_method_spends_the_same_budget_and_never_more(table):
    preset = load_preset("micro", ["ga.seed_archive=4"])
    budget = 8 * ta.full_cost(read_table(table))
    for method in ("combined", "male", "female", "within-gender", "random", "successive-halving",
                   "regularized-evolution", "optuna-tpe-hyperband", "optuna-random-sh", "optuna-tpe"):
        record = ta.run_search((str(table), "t", method, 0, preset_to_dict(preset), budget))
        assert record["spent"] <= budget and record["trace"], method
        # a config completed again (from the cache) keeps the cost at which it was first paid for
        assert all(0 < c <= budget for c, _ in record["trace"]), method
        assert min(v for _, v in record["trace"]) >= read_table(table).best()
    # the reference of a foreign table is not recorded: the baseline says so
    assert "skipped" in ta.run_search((str(table), "t", "baseline", 0, preset_to_dict(preset), budget))


def test_same_seed_same_record_different_seed_differs(table):
    preset = preset_to_dict(load_preset("micro", ["ga.seed_archive=4"]))
    budget = 8 * ta.full_cost(read_table(table))
    a, b, c = (ta.run_search((str(table), "t", "combined", s, preset, budget)) for s in (0, 0, 1))
    assert a["trace"] == b["trace"] and a["trace"] != c["trace"]


def test_an_interrupted_ablation_resumes_and_other_code_is_refused(tmp_path, table, monkeypatch):
    preset = load_preset("micro", ["ga.seed_archive=4"])
    plan = ta.make_table_plan(table, (), ("random", "successive-halving"), 3, 6, None, preset)
    seen = []
    first = ta.run_table_ablation(tmp_path / "out", plan, on_record=seen.append)
    assert len(first) == len(seen) == 6
    lines = (tmp_path / "out" / "records.jsonl").read_text().splitlines()
    (tmp_path / "out" / "records.jsonl").write_text("\n".join(lines[:4]) + "\n")   # two searches lost
    seen.clear()
    again = ta.run_table_ablation(tmp_path / "out", plan, on_record=seen.append)
    assert len(seen) == 2 and sorted((r["method"], r["seed"]) for r in again) == \
        sorted((r["method"], r["seed"]) for r in first)
    report = ta.write_table_report(tmp_path / "out", plan, again)
    rows = (tmp_path / "out" / "regret.csv").read_text().splitlines()
    assert rows[0] == "task,method,seed,cost_fraction,incumbent,normalized_regret" and len(rows) == 1 + 6 * 20
    assert "random" in report["markdown"] and all(p.exists() for p in report["paths"])
    monkeypatch.setattr(ta, "code_version", lambda: "other")
    with pytest.raises(ConfigError, match="records of code .* --allow-mixed"):
        ta.run_table_ablation(tmp_path / "out", plan)
    ta.run_table_ablation(tmp_path / "out", plan, allow_mixed=True)
    assert json.loads((tmp_path / "out" / "ablation.json").read_text())["mixed"] is True


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0"], "give at least 1 seed"),
    (["--budget", "0.5"], "below one full curve"),
    (["--modes", "combined,nope"], "unknown method 'nope'"),
    (["--task", "u"], "no task 'u'"),
])
def test_bad_table_ablations_are_one_line_and_write_nothing(tmp_path, table, args, message):
    result = CliRunner().invoke(main, ["ablate", "--table", str(table), "--preset", "micro", *args,
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code != 0 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_optuna_missing_is_one_line_naming_the_extra(table, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a))
    with pytest.raises(ConfigError, match=r"pip install 'gpnas\[optuna\]'"):
        ta.make_table_plan(table, (), ("optuna-tpe",), 2, 5, None, load_preset("micro"))


def test_the_cli_writes_the_regret_table(tmp_path, table):
    result = CliRunner().invoke(main, ["ablate", "--table", str(table), "--preset", "micro", "--seeds", "3",
                                       "--modes", "random,successive-halving", "--budget", "6",
                                       "--out", str(tmp_path / "out"), "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert "Anytime normalized regret" in result.output
    table_rows = (tmp_path / "out" / "table.csv").read_text().splitlines()
    assert table_rows[0].startswith("task,method,n_seeds,mean_regret_end") and len(table_rows) == 3


def test_combined_with_a_prior_runs_beside_combined_and_needs_the_prior(tmp_path, table):
    from tests.cli.test_prior import fit_prior
    prior = fit_prior(tmp_path, table)
    preset = load_preset("micro", ["ga.seed_archive=4"])
    with pytest.raises(ConfigError, match="method combined\\+prior and --prior go together"):
        ta.make_table_plan(table, (), ("combined", "combined+prior"), 2, 6, None, preset)
    plan = ta.make_table_plan(table, (), ("combined", "combined+prior"), 2, 6, None, preset, prior)
    assert plan.prior and len(plan.prior_sha256) == 64
    records = ta.run_table_ablation(tmp_path / "out", plan)
    assert sorted(r["method"] for r in records) == ["combined", "combined", "combined+prior", "combined+prior"]
    assert all(r["trace"] for r in records)
    result = CliRunner().invoke(main, ["ablate", "--table", str(table), "--preset", "micro", "--seeds", "2",
                                       "--budget", "6", "--modes", "combined", "--prior", str(prior),
                                       "--out", str(tmp_path / "cli")])
    assert result.exit_code != 0 and "--prior is used by method combined+prior" in result.output
