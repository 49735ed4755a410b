"""``gpnas evolve`` and ``gpnas show`` through click's CliRunner."""

import json

import pytest
from click.testing import CliRunner

from gpnas.cli import main


@pytest.fixture
def runner():
    return CliRunner()


def evolve(runner, *args):
    return runner.invoke(main, ["evolve", "--preset", "micro", "--backend", "serial", "--threads", "1", *args])


def test_evolve_prints_generations_and_a_summary_then_show_repeats_it(runner, tmp_path, tiny_corpus_dir):
    out = tmp_path / "run"
    result = evolve(runner, "--generations", "2", "--data-dir", str(tiny_corpus_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert sum(line.startswith("gen ") for line in lines) == 3  # generation 0 (seeding), 1, 2
    assert "best architecture: n_layer=" in result.output
    assert "predictor chosen:" in result.output and "baseline last" in result.output
    assert "chosen by the mother (guided)" in result.output and "daughters: " in result.output
    assert any(" training FLOPs, " in line for line in lines)

    shown = runner.invoke(main, ["show", str(out)])
    assert shown.exit_code == 0
    assert "best architecture: n_layer=" in shown.output
    as_json = runner.invoke(main, ["show", str(out), "--json"])
    assert json.loads(as_json.output) == json.loads((out / "summary.json").read_text())


def test_resume_continues_and_refuses_a_changed_config(runner, tmp_path, tiny_corpus_dir):
    out = tmp_path / "run"
    assert evolve(runner, "--generations", "1", "--data-dir", str(tiny_corpus_dir), "--out", str(out)).exit_code == 0
    more = runner.invoke(main, ["evolve", "--resume", str(out), "--generations", "2", "--backend", "serial",
                                 "--threads", "1"])
    assert more.exit_code == 0, more.output
    assert "gen   2" in more.output
    changed = runner.invoke(main, ["evolve", "--resume", str(out), "--set", "ga.n_males=5"])
    assert changed.exit_code == 2
    assert "changed config" in changed.output and "ga.n_males" in changed.output


@pytest.mark.parametrize("args, message", [
    (["--preset", "no-such-preset"], "no-such-preset"),
    (["--preset", "micro", "--set", "ga.no_such_key=1"], "no_such_key"),
    (["--preset", "micro", "--set", "space.n_layer.max=0"], "n_layer"),
    (["--preset", "micro", "--generations", "0"], "--generations"),
    (["--preset", "micro", "--set", "reference.n_layer=9"], "reference"),
    (["--preset", "micro", "--set", "ga.promote_k=99"], "promote_k"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(runner, tmp_path, tiny_corpus_dir, args, message):
    result = runner.invoke(main, ["evolve", *args, "--data-dir", str(tiny_corpus_dir), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_resume_of_a_folder_that_is_not_a_run(runner, tmp_path):
    (tmp_path / "notarun").mkdir()
    result = runner.invoke(main, ["evolve", "--resume", str(tmp_path / "notarun")])
    assert result.exit_code == 1
    assert "not a gpnas run folder" in result.output


def test_show_of_a_folder_that_is_not_a_run(runner, tmp_path):
    result = runner.invoke(main, ["show", str(tmp_path)])
    assert result.exit_code == 1 and "not a gpnas run folder" in result.output
