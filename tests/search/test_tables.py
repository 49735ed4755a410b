"""Searches against tables of recorded curves: the space as data, the table task
behind the ledger, gpnas table build, and a table run equal to a training run on the grid."""

import json
import math
import random

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.config import ConfigError, GeneSpec, SpaceConfig, load_preset, space_from_dict
from gpnas.jobs.run import evaluation_task, execute, make_search, new_run, open_run
from gpnas.jobs.table import build_table, grid_configs, plan
from gpnas.report.run import deterministic_part
from gpnas.runs.archive import Archive
from gpnas.runs.table import infer_space, read_table
from gpnas.runs.tasks import TableTask, table_space
from gpnas.search.space import Space

# a grid preset: every gene a choice, so a training run and a table run pick from the same configs
GRID = ["space.n_layer.max=1", "space.dropout.choices=[0.0]", "space.learning_rate.choices=[1e-3, 1e-2]",
        "reference.n_layer=1", "reference.n_head=2", "reference.n_embd=16", "reference.dropout=0.0",
        "reference.learning_rate=1e-2", "space.n_embd.choices=[8, 16]", "ga.seed_archive=6"]


def write_table(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def synthetic_rows(n_configs=30, seeds=(0, 1), task="t"):
    """Curves that fall faster for larger lr (up to a point), one per config and seed."""
    rng = random.Random(0)
    rows = []
    for i in range(n_configs):
        lr = 10 ** rng.uniform(-4, -1)
        width = rng.choice([16, 32, 64])
        kind = rng.choice(["adam", "sgd"])
        for s in seeds:
            rate = max(0.01, 0.15 - 0.08 * abs(math.log10(lr) + 2.5)) * (1 + 0.05 * s)  # best near lr 3e-3
            values = [1.0 / (1 + rate * t) + 0.001 * width / 64 for t in range(21)]
            rows.append({"task": task, "config": {"lr": lr, "width": width, "opt": kind}, "seed": s,
                         "values": values, "cost_per_step": width / 16})
    return rows


# ------------------------------------------------------------------ the space

def test_a_table_space_with_log_integer_and_string_genes_round_trips():
    space = Space(space_from_dict({"lr": {"min": 1e-4, "max": 1e-1, "log": True}, "width": {"min": 1, "max": 9},
                                   "opt": {"choices": ["adam", "sgd"]}}, "test"))
    rng = random.Random(1)
    for _ in range(200):
        g = space.sample(rng)
        config = space.decode(g)
        assert 1e-4 <= config["lr"] <= 1e-1 and config["width"] in range(1, 10) and config["opt"] in ("adam", "sgd")
        assert space.decode(space.encode(config)) == config
        for n in space.neighbours(g, rng, 4, 0.2):
            assert space.decode(n) != config and space.distance(n, g) > 0
        assert space.decode(space.mutate_one(g, rng, 0.2)) != config


def test_the_nanogpt_constraint_comes_from_the_task_not_the_space():
    genes = (GeneSpec("n_head", choices=(3,), integer=True), GeneSpec("n_embd", choices=(8, 9), integer=True))
    free, constrained = Space(SpaceConfig(genes)), Space(SpaceConfig(genes, (("multiple", "n_embd", "n_head"),)))
    assert free.decode([3.0, 8.0]) == {"n_head": 3, "n_embd": 8}
    assert constrained.decode([3.0, 8.0]) == {"n_head": 3, "n_embd": 9}


# ------------------------------------------------------------- the table task

def test_a_table_replays_prefixes_and_charges_as_training_does(tmp_path):
    table = read_table(write_table(tmp_path / "t.jsonl", synthetic_rows()))
    preset = load_preset("cpu-small")
    space = table_space(preset, table)          # a foreign table: the space its configs span
    assert set(space.names) == {"lr", "opt", "width"} and space.gene("lr").log
    assert space.gene("opt").choices == ("adam", "sgd")
    task = TableTask(table, 0.1)
    assert (task.early_steps, task.full_steps, task.full_evals) == (3, 20, 21)   # 4 evaluations: steps 0..3
    search = make_search(preset, "random", task, Archive(tmp_path / "a.sqlite"), seed=1, space=space)
    ledger = search.ledger
    state = search.start()[0]
    g = ledger.space.sample(random.Random(0))
    config = ledger.run_config(g)
    assert config in table.configs                # the nearest recorded config runs
    ledger.evaluate(state, [ledger.early_request(g)])
    early = ledger.record(ledger.key(g, 3))
    i = table.configs.index(config)
    assert early.result["curve"]["val_loss"] == list(table.recording(i, 1).values[:4])
    assert state.compute.flops == 3 * table.cost_per_step[i]
    ledger.evaluate(state, [ledger.full_request(g, state)])   # freeze-thaw: pays the 17 steps beyond
    assert state.compute.flops == 20 * table.cost_per_step[i]
    assert ledger.final_loss(state, g) == table.recording(i, 1).values[-1]
    # another seed picks another recording of the same config
    assert table.recording(i, 0).values[-1] != table.recording(i, 1).values[-1]


def test_a_preset_space_the_table_does_not_cover_is_refused(tmp_path, tiny_dataset):
    preset = load_preset("micro", GRID)
    out = tmp_path / "grid.jsonl"
    build_table(preset, 2, [0], out, tiny_dataset, tmp_path / "ck", threads=1)
    table = read_table(out)
    assert table_space(preset, table) is preset.space       # its own grid: the preset's space
    wider = load_preset("micro", [*GRID, "space.n_embd.choices=[8, 16, 32]"])
    with pytest.raises(ConfigError, match=r"does not cover space.n_embd: \[32\] not recorded"):
        table_space(wider, table)


# ------------------------------------------------------------- table build

def test_the_grid_takes_every_discrete_value_and_levels_of_the_rest():
    preset = load_preset("micro")
    configs = grid_configs(preset, 3)
    # n_layer 2 x (n_head, n_embd) 6 x dropout 3 x learning_rate 3
    assert len(configs) == 2 * 6 * 3 * 3
    assert sorted({c["learning_rate"] for c in configs}) == [0.001, 0.003162, 0.01]
    assert sorted({c["dropout"] for c in configs}) == [0.0, 0.05, 0.1]
    with pytest.raises(ConfigError, match="at least 2 levels"):
        grid_configs(preset, 1)
    with pytest.raises(ConfigError, match="add --yes"):
        plan(load_preset("cpu-small"), 30, [0, 1])


def test_a_killed_build_resumes_without_training_what_it_recorded(tmp_path, tiny_dataset):
    preset = load_preset("micro", GRID)
    out = tmp_path / "grid.jsonl"
    first = build_table(preset, 2, [0], out, tiny_dataset, tmp_path / "ck", threads=1)
    assert (first.planned, first.trained, first.already) == (8, 8, 0)
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:5]) + "\n" + lines[5][:40])     # killed while writing the 6th line
    again = build_table(preset, 2, [0, 1], out, tiny_dataset, tmp_path / "ck", threads=1)
    assert (again.planned, again.already, again.trained) == (16, 5, 11)
    assert len(read_table(out).configs) == 8 and len(out.read_text().splitlines()) == 16


# ------------------------------------------------------- equal to training

@pytest.mark.parametrize("mode", ["combined", "successive-halving"])
def test_on_the_grid_a_table_run_equals_a_training_run(tmp_path, tiny_dataset, mode):
    preset = load_preset("micro", GRID)
    out = tmp_path / "grid.jsonl"
    build_table(preset, 2, [0], out, tiny_dataset, tmp_path / "ck", threads=1)
    trained, _ = execute(new_run(tmp_path / "trained", preset, mode, 0, tiny_dataset), 3, threads=1)
    replayed, _ = execute(new_run(tmp_path / "replayed", preset, mode, 0, None, table=read_table(out)), 3)

    def same(summary):   # the table's own fields and what only training measures aside
        keep = deterministic_part(summary)
        keep.pop("table", None)
        for entry in [keep.get("best_architecture"), keep.get("reference"), *keep.get("hall_of_fame", [])]:
            for name in ("avg_inference_tokens_per_s", "total_train_time_s", "cached"):
                (entry or {}).pop(name, None)
        return keep

    assert same(replayed) == same(trained)
    assert replayed["table"]["sha256"] == read_table(out).sha256
    assert replayed["compute"]["flops"] == trained["compute"]["flops"] > 0


def test_a_table_run_resumes_from_its_folder(tmp_path):
    table_path = write_table(tmp_path / "t.jsonl", synthetic_rows())
    preset = load_preset("micro", ["ga.seed_archive=4"])
    run = new_run(tmp_path / "run", preset, "combined", 0, None, table=read_table(table_path))
    whole, _ = execute(run, 3)
    again = open_run(tmp_path / "run", None)
    assert again.table.sha256 == run.table.sha256 and evaluation_task(again)[0].kind == "table"
    write_table(table_path, synthetic_rows()[:-1])   # the table changed under the run
    with pytest.raises(ConfigError, match="not the one run"):
        open_run(tmp_path / "run", None)
    assert whole["best_architecture"]["arch"] in run.table.configs


# ------------------------------------------------------------------ the CLI

def test_evolve_on_a_table_through_the_cli(tmp_path):
    table_path = write_table(tmp_path / "t.jsonl", synthetic_rows() + synthetic_rows(task="u"))
    runner = CliRunner()
    result = runner.invoke(main, ["evolve", "--table", str(table_path), "--task", "t", "--preset", "micro",
                                  "--generations", "2", "--out", str(tmp_path / "run"), "--backend", "serial"])
    assert result.exit_code == 0, result.output
    assert "best architecture: lr=" in result.output and "cost units of the table" in result.output
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["table"]["task"] == "t" and summary["best_architecture"]["arch"] in read_table(
        table_path, "t").configs


@pytest.mark.parametrize("args, rows, message", [
    (["--task", "nope"], None, "no task 'nope'"),
    ([], None, "holds 2 tasks"),
    (["--task", "t"], [{"task": "t", "config": {"lr": 0.1}, "values": [1.0, 0.5], "horizon": 5}], "incomplete curve"),
    (["--task", "t"], [{"task": "t", "config": {"lr": 0.1}, "values": [1.0, 0.5]},
                       {"task": "t", "config": {"lr": 0.2}, "values": [1.0, 0.5, 0.4]}], "2"),
    (["--task", "t"], [{"task": "t", "config": {"lr": 0.1}, "values": [1.0, 0.5]},
                       {"task": "t", "config": {"lr": 0.1}, "values": [1.0, 0.4]}], "already recorded"),
    (["--task", "t"], [{"task": "t", "config": {"lr": 0.1, "b": 1}, "values": [1.0, 0.5]},
                       {"task": "t", "config": {"lr": 0.2}, "values": [1.0, 0.4]}], "b"),
])
def test_a_bad_table_is_one_line_and_nothing_is_written(tmp_path, args, rows, message):
    table_path = write_table(tmp_path / "t.jsonl", rows or (synthetic_rows() + synthetic_rows(task="u")))
    result = CliRunner().invoke(main, ["evolve", "--table", str(table_path), *args, "--preset", "micro",
                                       "--out", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output
    assert not (tmp_path / "run").exists()


def test_task_without_table_and_bad_levels_are_refused(tmp_path):
    result = CliRunner().invoke(main, ["evolve", "--task", "t"])
    assert result.exit_code == 2 and "--task picks a task of a --table file" in result.output
    result = CliRunner().invoke(main, ["table", "build", "--preset", "micro", "--levels", "1",
                                       "--out", str(tmp_path / "t.jsonl")])
    assert result.exit_code != 0 and "at least 2 levels" in result.output
    assert not (tmp_path / "t.jsonl").exists()


def test_infer_space_of_a_table_is_what_a_search_reads(tmp_path):
    table = read_table(write_table(tmp_path / "t.jsonl", synthetic_rows()))
    spec = infer_space(table)
    assert spec["opt"] == {"choices": ["adam", "sgd"]} and spec["width"] == {"choices": [16, 32, 64]}


def test_with_the_run_cohort_a_resumed_table_run_ends_as_an_uninterrupted_one(tmp_path):
    """``ga.cohort = "run"``: the cohort features rank against every config the run started,
    read from its own records, so a run continued from its folder ends where one run straight
    through ends; the predictor chosen on the way uses that reference."""
    table_path = write_table(tmp_path / "t.jsonl", synthetic_rows(n_configs=60))
    preset = load_preset("micro", ["ga.seed_archive=8", "ga.cohort=run"])
    straight, state = execute(new_run(tmp_path / "a", preset, "combined", 0, None,
                                      table=read_table(table_path)), 6, reference=False)
    assert any(row.get("cv_spearman") is not None for row in state.logbook)   # a predictor was chosen
    execute(new_run(tmp_path / "b", preset, "combined", 0, None, table=read_table(table_path)), 3,
            reference=False)
    resumed, _ = execute(open_run(tmp_path / "b", None), 6, reference=False)
    assert deterministic_part(resumed) == deterministic_part(straight)
    with pytest.raises(ConfigError, match="ga.cohort = 'both' must be 'call' or 'run'"):
        load_preset("micro", ["ga.cohort=both"])


def test_a_cohort_reference_ranks_a_few_curves_as_the_whole_cohort_ranks_them():
    from gpnas.predict.curves import Curve
    from gpnas.predict.features import cohort_reference, feature_matrix

    rng = random.Random(0)
    curves = [Curve(values=[3.0 - rng.uniform(0.5, 1.5) * t / 30 for t in range(30)], task="t", config_id=str(i),
                    config={}) for i in range(40)]
    names = ("cohort_rank_last", "cohort_rank_best", "cohort_rank_slope")
    whole = feature_matrix(curves, 0.2, names)
    few = feature_matrix(curves[:5], 0.2, names, cohort=cohort_reference(curves, 0.2, train=False))
    for name in names:
        assert [round(v, 9) for v in few[name]] == [round(v, 9) for v in whole[name][:5]]
    alone = feature_matrix(curves[:5], 0.2, names)
    assert sorted(alone["cohort_rank_last"]) == [0.0, 0.25, 0.5, 0.75, 1.0]   # without it: among the five
