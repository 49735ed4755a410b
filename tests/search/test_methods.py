"""The standard methods: successive halving's rung logic on hand-made curves,
aging evolution's queue, and every method on the micro preset within its budget."""

import math

import pytest

from gpnas.config import load_preset
from gpnas.jobs.run import execute, new_run
from gpnas.report.run import deterministic_part
from gpnas.runs.archive import Archive
from gpnas.runs.folder import RunFolder, read_json
from gpnas.search.methods import METHODS, MethodConfig, aged, rung_steps, successive_halving, survivors

FULL_RUN_TOKENS = 24 * 4 * 16  # micro: full_iters x batch_size x block_size


@pytest.fixture
def micro():
    return load_preset("micro")


def run_method(tmp_path, preset, dataset, mode, budget, seed=0, generations=20, name=None):
    run = new_run(tmp_path / (name or mode), preset, mode, seed, dataset)
    return execute(run, generations, threads=1, max_tokens=budget), run


# ------------------------------------------------------------ pure rung logic

def test_rung_steps_grow_by_eta_from_the_early_to_the_full_budget():
    assert rung_steps(40, 400, 10) == [40, 130, 400]
    assert rung_steps(30, 300, 10) == [30, 90, 300]         # cpu-small
    assert rung_steps(6, 24, 2) == [6, 24]                  # micro
    assert rung_steps(500, 5000, 125) == [500, 1625, 5000]  # shakespeare-char
    assert rung_steps(10, 810, 10) == [10, 30, 90, 270, 810]


def test_survivors_are_the_best_third_and_never_a_failed_run():
    assert survivors([3.0, 1.0, 2.0, 0.5, 4.0, 2.5], eta=3) == [3, 1]
    assert survivors([2.0, 2.0, 1.0], eta=3) == [2]
    assert survivors([2.0, 2.0, 5.0], eta=3) == [0]            # ties: the lower index
    assert survivors([math.nan, 3.0, math.inf], eta=3) == [1]
    assert survivors([math.nan, math.inf], eta=3) == []


def test_successive_halving_promotes_by_rung_on_hand_made_curves():
    # Nine curves over three rungs. Curve 8 starts worst but ends best: halving
    # by rung loss drops it at rung 0, exactly as successive halving should.
    curves = {
        0: (3.0, 2.0, 1.5), 1: (2.9, 2.1, 1.2), 2: (2.5, 2.4, 2.3), 3: (2.8, 1.9, 1.4),
        4: (3.5, 3.0, 2.0), 5: (2.6, 2.2, 1.3), 6: (3.3, 3.1, 3.0), 7: (3.1, 2.5, 2.1),
        8: (4.0, 1.0, 0.5),
    }
    calls = []

    def losses_at(members, rung):
        calls.append((list(members), rung))
        return [curves[i][rung] for i in members]

    ladder = successive_halving(9, 3, losses_at, eta=3)
    # rung 0 losses: best three are 2 (2.5), 5 (2.6), 3 (2.8)
    # rung 1 among them: 3 (1.9) beats 5 (2.2) and 2 (2.4)
    assert ladder == [list(range(9)), [2, 5, 3], [3]]
    assert calls == [(list(range(9)), 0), ([2, 5, 3], 1), ([3], 2)]


def test_successive_halving_stops_when_every_member_of_a_rung_failed():
    ladder = successive_halving(3, 3, lambda members, rung: [math.nan] * len(members), eta=3)
    assert ladder == [[0, 1, 2]]


def test_aging_removes_the_oldest():
    assert aged(["a", "b", "c", "d"], ["x", "y"]) == ["c", "d", "x", "y"]
    assert aged(["a", "b"], []) == ["a", "b"]
    assert aged(["a", "b"], ["x", "y", "z"]) == ["y", "z"]


def test_method_config_follows_the_preset(micro):
    config = MethodConfig.from_preset(micro)
    assert (config.batch, config.population, config.sample) == (4, 4, 2)
    assert config.children == micro.ga.promote_k + 1  # as many full runs as an engine generation promotes


# ------------------------------------------------------------ methods on micro

@pytest.mark.parametrize("mode", sorted(METHODS))
def test_every_method_runs_and_never_overspends(tmp_path, micro, tiny_dataset, mode):
    budget = int(3.5 * FULL_RUN_TOKENS)
    (summary, state), run = run_method(tmp_path, micro, tiny_dataset, mode, budget)
    assert summary["mode"] == mode
    assert 0 < summary["compute"]["tokens"] <= budget
    best = summary["best_architecture"]
    with Archive(run.folder.archive_path) as archive:
        untrained = archive.get(best["key"]).curve["val_loss"][0]  # step 0: the same model before any step
    assert best["final_val_loss"] < untrained - 0.25  # micro's reference falls by about 0.37
    assert (run.folder.path / "summary.json").exists() and (run.folder.path / "plots/curves.png").exists()
    tokens = [p["tokens"] for p in summary["promotions"]]
    assert tokens == sorted(tokens) and tokens[-1] <= summary["compute"]["tokens"]
    assert all(p["predicted"] is None for p in summary["promotions"])
    if mode == "baseline":
        assert summary["best_architecture"]["arch"] == micro.reference.as_dict()
        assert summary["compute"]["tokens"] == FULL_RUN_TOKENS and summary["generations"] == 0
    else:  # the budget, not the generations, ended the run; what is left buys no more training
        assert summary["budget_exhausted"]
        assert summary["compute"]["tokens"] > budget - FULL_RUN_TOKENS


def test_a_budget_below_one_run_trains_nothing(tmp_path, micro, tiny_dataset):
    (summary, _), _ = run_method(tmp_path, micro, tiny_dataset, "baseline", FULL_RUN_TOKENS - 1)
    assert summary["compute"]["tokens"] == 0 and summary["best_architecture"] is None


def test_successive_halving_resumes_its_rung_checkpoints(tmp_path, micro, tiny_dataset):
    (summary, state), _ = run_method(tmp_path, micro, tiny_dataset, "successive-halving", None, generations=2)
    # one bracket: three architectures for 6 steps, the best resumed from step 6 to 24
    per_bracket = (3 * 6 + (24 - 6)) * 4 * 16
    assert [row["tokens"] for row in state.logbook] == [0, per_bracket, 2 * per_bracket]
    assert [row["promoted"] for row in state.logbook] == [0, 1, 1]
    assert summary["compute"]["evaluations"] == 8


def test_regularized_evolution_removes_the_oldest(tmp_path, micro, tiny_dataset):
    (_, state), run = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", None, generations=2)
    snapshots = [read_json(p) for p in RunFolder(run.folder.path).snapshot_paths()]
    children = MethodConfig.from_preset(micro).children
    for before, after in zip(snapshots, snapshots[1:]):
        assert len(after["males"]) == len(before["males"]) == micro.ga.n_males
        assert after["males"][:-children] == before["males"][children:]  # the oldest left
        assert after["males"][-children:] != before["males"][:children]  # children joined at the young end


def test_same_seed_same_result_different_seed_differs(tmp_path, micro, tiny_dataset):
    budget = 4 * FULL_RUN_TOKENS
    (a, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 1, name="a")
    (b, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 1, name="b")
    (c, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 2, name="c")
    assert deterministic_part(a) == deterministic_part(b)
    assert deterministic_part(a) != deterministic_part(c)
