"""``gpnas ablate`` on the micro preset and a tiny corpus: every mode runs at
the combined mode's budget and never beyond it, the table has every mode and
column, plots are written, a rerun resumes, the statistics are right, and the
experiment scripts regenerate the table and figures."""

import csv
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from gpnas.cli import main
from gpnas.config import largest_architecture, load_preset, training_flops_per_step
from gpnas.errors import ConfigError
from gpnas.jobs.ablation import ALL_MODES, complete_seeds, make_plan, run_ablation
from gpnas.report.ablation import METRICS, best_so_far, compute_to_reach, mean_ci, sign_flip_p, t_quantile
from gpnas.runs.archive import Archive

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the", "king", "queen", "lord", "good", "night", "speak", "thou", "my", "of", "and", "to")


def write_corpus(folder: Path) -> Path:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 8))).capitalize() + "." for _ in range(600)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "input.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def ablate_args(out, data_dir, *more):
    return ["ablate", "--preset", "micro", "--generations", "1", "--seeds", "2", "--out", str(out),
            "--data-dir", str(data_dir), "--backend", "serial", "--threads", "1", *more]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory):
    """One CLI ablation of all eight modes over two seeds, shared by the tests below."""
    root = tmp_path_factory.mktemp("ablation")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(root / "cache"))
        data = write_corpus(root / "corpus")
        result = CliRunner().invoke(main, ablate_args(root / "out", data))
    assert result.exit_code == 0, result.output
    return {"out": root / "out", "data": data, "output": result.output, "cache": root / "cache"}


def results(out):
    return json.loads((out / "results.json").read_text())["runs"]


def test_every_mode_runs_and_the_table_has_every_mode_and_column(ablation):
    out, output = ablation["out"], ablation["output"]
    runs = results(out)
    assert sorted((r["mode"], r["seed"]) for r in runs) == sorted((m, s) for m in ALL_MODES for s in (0, 1))
    table = (out / "table.md").read_text()
    assert table in output  # printed at the end
    header, rule, *rows = table.splitlines()
    assert [row.split("|")[1].strip() for row in rows] == list(ALL_MODES)
    for _, title, _ in METRICS:
        assert title in header
    assert "p (sign-flip)" in header and "vs combined" in header
    with open(out / "table.csv") as handle:
        table_csv = list(csv.DictReader(handle))
    assert [row["mode"] for row in table_csv] == list(ALL_MODES)
    for key, _, _ in METRICS:
        assert {key, f"{key}_lo", f"{key}_hi"} <= set(table_csv[0])
    assert all(row["seeds"] == "2" for row in table_csv)
    for name in ("best_so_far.png", "best_curves.png", "predicted_vs_true.png"):
        assert (out / "plots" / name).stat().st_size > 10_000


def test_every_mode_gets_the_combined_budget_of_its_seed_and_never_overspends(ablation):
    from gpnas.train.data import load_dataset

    runs = results(ablation["out"])
    spent = {r["seed"]: r["compute"]["flops"] for r in runs if r["mode"] == "combined"}
    micro = load_preset("micro")
    vocab = load_dataset(ablation["data"]).vocab_size
    full_run = training_flops_per_step(largest_architecture(micro.space, micro.reference), micro.budget, vocab) * 24
    for r in runs:
        assert r["compute"]["flops"] > r["compute"]["tokens"] > 0  # FLOPs counted, tokens kept beside them
        if r["mode"] == "combined":
            assert r["budget_flops"] is None and r["generations"] == 1
            continue
        assert r["budget_flops"] == spent[r["seed"]]
        assert r["compute"]["flops"] <= r["budget_flops"]
        if r["mode"] != "baseline":  # spent all it could: less than the largest full run is left
            assert r["compute"]["flops"] > r["budget_flops"] - full_run, r["mode"]
        untrained = r["best_curve"]["val_loss"][0]  # step 0: the same model before any step
        assert r["best"]["final_val_loss"] < untrained - 0.25  # micro's reference falls by about 0.37
        assert all(c["flops"] <= r["compute"]["flops"] for c in r["completions"])


def test_runs_share_one_archive_and_a_rerun_trains_nothing(ablation):
    out = ablation["out"]
    runs = results(out)
    with Archive(out / "archive.sqlite") as archive:
        stored = archive.count()
    assert stored == sum(r["cache"]["trained"] for r in runs)  # each evaluation trained once
    assert sum(r["cache"]["hits"] for r in runs) > 0          # and reused across runs
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(ablation["cache"]))
        again = CliRunner().invoke(main, ablate_args(out, ablation["data"]))
    assert again.exit_code == 0, again.output
    assert again.output.count(": skip") == len(ALL_MODES) * 2
    assert results(out) == runs
    with Archive(out / "archive.sqlite") as archive:
        assert archive.count() == stored


class Interrupt(Exception):
    pass


def test_an_interrupted_ablation_resumes_where_it_stopped(tmp_path, micro_dataset_dir):
    from gpnas.train.data import load_dataset

    preset = load_preset("micro")
    dataset = load_dataset(micro_dataset_dir)
    plan = make_plan(preset, 1, 1, ["combined", "random", "successive-halving"])
    calls = {"n": 0, "die at": None}

    def counting_map(fn, items):
        calls["n"] += 1
        if calls["n"] == calls["die at"]:
            raise Interrupt
        return [fn(item) for item in items]

    def on_run(event, mode, seed, info):
        if event == "start" and mode == "successive-halving":
            calls["halving starts after"] = calls["n"]

    whole = run_ablation(tmp_path / "whole", plan, dataset, load_dataset, map_fn=counting_map, threads=1,
                         on_run=on_run)
    # inside the last run, successive halving, at its first evaluation
    calls.update({"n": 0, "die at": calls["halving starts after"] + 1})
    with pytest.raises(Interrupt):
        run_ablation(tmp_path / "cut", plan, dataset, load_dataset, map_fn=counting_map, threads=1)
    assert [r["mode"] for r in results(tmp_path / "cut")] == ["combined", "random"]
    assert (tmp_path / "cut" / "runs" / "successive-halving-s0" / "snapshots" / "gen_0000.json").exists()
    resumed = run_ablation(tmp_path / "cut", plan, dataset, load_dataset, threads=1)

    def same(records):
        return [(r["mode"], r["compute"]["flops"], r["best"]["final_val_loss"], r["budget_flops"],
                 [(c["flops"], c["true"]) for c in r["completions"]]) for r in records]

    assert same(resumed) == same(whole)


def test_a_fixed_budget_applies_to_every_mode_including_combined(tmp_path, micro_dataset_dir):
    from gpnas.train.data import load_dataset

    budget = 400_000_000
    plan = make_plan(load_preset("micro"), 1, 1, ["combined", "baseline", "random"], budget_flops=budget)
    dataset = load_dataset(micro_dataset_dir)
    records = run_ablation(tmp_path / "fixed", plan, dataset, load_dataset, threads=1)
    assert [r["budget_flops"] for r in records] == [budget] * 3
    assert all(0 < r["compute"]["flops"] <= budget for r in records)


@pytest.fixture
def micro_dataset_dir(tmp_path):
    return write_corpus(tmp_path / "corpus")


@pytest.mark.parametrize("args, message", [
    (["--modes", "combined,nope"], "unknown mode 'nope'"),
    (["--seeds", "0"], "--seeds"),
    (["--generations", "0"], "--generations"),
    (["--modes", "random,baseline"], "--budget-flops"),
    (["--budget-flops", "0"], "--budget-flops"),
    (["--budget-flops", "inf"], "--budget-flops must be a finite number"),
    (["--set", "ga.nope=1"], "nope"),
])
def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path, micro_dataset_dir, args, message):
    result = CliRunner().invoke(main, ablate_args(tmp_path / "x", micro_dataset_dir) + args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_a_changed_ablation_is_refused(ablation):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GPNAS_CACHE_DIR", str(ablation["cache"]))
        result = CliRunner().invoke(main, ablate_args(ablation["out"], ablation["data"], "--set", "ga.n_males=3"))
    assert result.exit_code == 2
    assert "another preset" in result.output


# ------------------------------------------------------------ statistics

def test_mean_and_t_interval():
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.7764451 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4) from any table
    assert mean == 3.0 and lo == pytest.approx(3.0 - half) and hi == pytest.approx(3.0 + half)
    assert mean_ci([2.0]) == (2.0, None, None)
    assert mean_ci([None, math.nan]) == (None, None, None)
    assert t_quantile(4) == pytest.approx(2.7764451) and t_quantile(1000) == pytest.approx(1.9623391)
    assert mean_ci([3.0, 3.0, 3.0]) == (3.0, 3.0, 3.0)  # zero spread: a zero-width interval, not NaN


def test_sign_flip_test_is_exact():
    assert sign_flip_p([0.1, 0.2, 0.3, 0.4, 0.5]) == pytest.approx(2 / 32)  # the smallest p with 5 pairs
    assert sign_flip_p([1.0, -1.0]) == 1.0
    # |mean| of 3 of the 8 patterns of (1, 2, 4) reaches 7/3 or more... only the all-same-sign ones
    assert sign_flip_p([1.0, 2.0, 4.0]) == pytest.approx(2 / 8)
    assert sign_flip_p([1.0, 2.0, -0.5]) == pytest.approx(4 / 8)  # patterns with |sum| >= 2.5
    assert sign_flip_p([]) is None
    assert sign_flip_p([0.0, 0.0, 0.0]) == 1.0 and sign_flip_p([0.4]) == 1.0
    # beyond max_exact: a seeded sample of sign patterns, close to the exact value
    d = [0.3, -0.1, 0.2, 0.25, 0.1, -0.05, 0.15, 0.2]
    assert sign_flip_p(d, max_exact=4, samples=20_000) == pytest.approx(sign_flip_p(d), abs=0.01)


def test_compute_to_reach_a_loss_and_best_so_far():
    completions = [{"tokens": 100, "flops": 1e9, "true": 3.0}, {"tokens": 250, "flops": 4e9, "true": 2.5},
                   {"tokens": 400, "flops": 5e9, "true": 2.7}, {"tokens": 500, "flops": 8e9, "true": 2.0}]
    assert compute_to_reach(completions, 2.6) == 4e9
    assert compute_to_reach(completions, 2.6, "tokens") == 250
    assert compute_to_reach(completions, 1.0) is None
    assert compute_to_reach(completions, None) is None
    assert compute_to_reach([{"tokens": 100, "true": 2.0}], 2.6) is None  # a record from before FLOPs
    curve = best_so_far(completions, [0, 1e9, 4.5e9, 6e9, 9e9])
    assert math.isnan(curve[0]) and list(curve[1:]) == [3.0, 2.5, 2.5, 2.0]


# ------------------------------------------------------------ experiment scripts

def test_experiment_scripts_regenerate_the_table_and_plots(ablation, tmp_path):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import ablation_plots
        import ablation_table
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert ablation_table.main([str(ablation["out"]), "--to", str(tmp_path / "t")]) == 0
    assert (tmp_path / "t" / "table.md").read_text() == (ablation["out"] / "table.md").read_text()
    assert ablation_plots.main([str(ablation["out"]), "--to", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["best_curves.png", "best_so_far.png",
                                                                   "predicted_vs_true.png"]
    assert ablation_table.main([str(tmp_path / "empty")]) == 1


def test_run_script_in_a_tiny_mode(tmp_path, micro_dataset_dir):
    env = {**os.environ, "PRESET": "micro", "GENERATIONS": "1", "SEEDS": "1", "MODES": "baseline,combined",
           "OUT": str(tmp_path / "out"), "RESULTS": str(tmp_path / "results"),
           "DATA_DIR": str(micro_dataset_dir), "EXTRA": "--backend serial",
           "GPNAS_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(["bash", str(ROOT / "experiments" / "run_cpu_small_ablation.sh")], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "results" / "table.md").exists() and (tmp_path / "results" / "table.csv").exists()
    assert (tmp_path / "results" / "plots" / "best_so_far.png").exists()


def test_an_interrupted_ablations_table_keeps_only_the_seeds_every_mode_finished():
    records = [{"mode": m, "seed": s} for s in (0, 1) for m in ("combined", "random")]
    records += [{"mode": "combined", "seed": 2}]
    kept, left_out = complete_seeds(records)
    assert sorted((r["mode"], r["seed"]) for r in kept) == sorted((m, s) for s in (0, 1) for m in ("combined", "random"))
    assert left_out == [2]
    assert complete_seeds(records[:4]) == (records[:4], [])


def test_make_plan_refuses_what_it_cannot_run():
    preset = load_preset("micro")
    with pytest.raises(ConfigError, match="unknown mode"):
        make_plan(preset, 1, 1, ["evolution"])
    assert make_plan(preset, 1, 3, ["random", "combined", "random"]).modes == ("random", "combined")
    assert make_plan(preset, 1, 3, ["random", "combined"]).ordered_modes() == ["combined", "random"]
    assert make_plan(preset, 1, 3, ["combined"]).seeds == (0, 1, 2)


def test_the_prefix_table_pairs_the_seeds_both_arms_finished(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import prefix_table
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    for arm, finals in (("early30", [2.30, 2.28, 2.26]), ("early60", [2.29, 2.30])):  # seed 2 of early60 unfinished
        for seed, final in enumerate(finals):
            path = tmp_path / arm / "runs" / f"combined-s{seed}" / "record.json"
            path.parent.mkdir(parents=True)
            path.write_text(json.dumps({"seed": seed, "best": {"final_val_loss": final},
                                        "compute": {"evaluations": 100 + seed, "flops": 1.1e13}}))
    prefix_table.main([str(tmp_path), "--out", str(tmp_path / "table.md")])
    text = (tmp_path / "table.md").read_text()
    assert "| 0 | 2.3000 | 100 | 1.1e+13 | 2.2900 | 100 | 1.1e+13 | -0.0100 |" in text
    assert "| 1 |" in text and "| 2 |" not in text
    assert "mean over 2 seeds: +0.0050" in text and "early 60 lower on 1 of 2" in text
    with pytest.raises(SystemExit, match="no seed has finished"):
        prefix_table.main([str(tmp_path / "nothing")])
