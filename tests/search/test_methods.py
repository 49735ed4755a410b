"""The standard methods: Hyperband's brackets against the paper's formula,
successive halving on hand-made curves, aging evolution's queue and one-gene
mutation, and every method on the micro preset within its FLOPs budget."""

import math
import random

import pytest

from gpnas.config import largest_architecture, load_preset, training_flops_per_step
from gpnas.jobs.run import execute, new_run
from gpnas.report.run import deterministic_part
from gpnas.runs.archive import Archive
from gpnas.runs.folder import RunFolder, read_json
from gpnas.search.males import decode, sample_genome
from gpnas.search.methods import (METHODS, Bracket, MethodConfig, aged, hyperband_brackets, mut_one_gene,
                                  successive_halving, survivors)

FULL_RUN_TOKENS = 24 * 4 * 16  # micro: full_iters x batch_size x block_size


@pytest.fixture
def micro():
    return load_preset("micro")


def full_run_flops(preset, arch, dataset) -> int:
    """A full run's training FLOPs (the vocabulary enters the parameter count)."""
    return training_flops_per_step(arch, preset.budget, dataset.vocab_size) * preset.budget.full_iters


def run_method(tmp_path, preset, dataset, mode, budget, seed=0, generations=20, name=None):
    run = new_run(tmp_path / (name or mode), preset, mode, seed, dataset)
    return execute(run, generations, threads=1, max_flops=budget), run


# ------------------------------------------------------------ pure bracket logic

def paper_bracket(s: int, s_max: int, R: float, eta: int = 3):
    """Li et al. 2018, Algorithm 1, as written: n, r, then n_i = floor(n eta^-i), r_i = r eta^i."""
    n = math.ceil((s_max + 1) / (s + 1) * eta ** s)
    r = R * eta ** -s
    return [math.floor(n * eta ** -i) for i in range(s + 1)], [r * eta ** i for i in range(s + 1)]


@pytest.mark.parametrize("early, full, interval", [(30, 300, 10), (500, 5000, 125), (10, 810, 10), (6, 24, 2)])
def test_hyperband_brackets_spend_what_the_papers_formula_says(early, full, interval):
    brackets = hyperband_brackets(early, full, interval)
    s_max = math.floor(math.log(full / early, 3) + 1e-9)
    assert [b.s for b in brackets] == list(range(s_max, -1, -1))
    for b in brackets:
        counts, resources = paper_bracket(b.s, s_max, full)
        assert list(b.counts) == counts
        # resources rounded to the evaluation interval (exact prefixes of the full curve)
        assert all(abs(step - r) <= interval / 2 for step, r in zip(b.steps, resources)) and b.steps[-1] == full
        # the paper's spend, sum n_i r_i, and the freeze-thaw spend, which pays each rung's increment
        assert b.cost(resume=False) == sum(n * r for n, r in zip(counts, b.steps))
        assert b.cost() == sum(n * (r - below) for n, r, below in zip(counts, b.steps, (0, *b.steps[:-1])))
        # each bracket spends about (s_max + 1) R, the paper's budget per bracket
        assert b.cost(resume=False) <= (s_max + 1) * full * 1.05


def test_hyperband_on_cpu_small():
    assert hyperband_brackets(30, 300, 10) == [Bracket(2, (9, 3, 1), (30, 100, 300)),
                                               Bracket(1, (5, 1), (100, 300)), Bracket(0, (3,), (300,))]
    assert [b.cost() for b in hyperband_brackets(30, 300, 10)] == [9 * 30 + 3 * 70 + 200, 5 * 100 + 200, 900]


def test_survivors_are_the_best_and_never_a_failed_run():
    assert survivors([3.0, 1.0, 2.0, 0.5, 4.0, 2.5], 2) == [3, 1]
    assert survivors([2.0, 2.0, 1.0], 1) == [2]
    assert survivors([2.0, 2.0, 5.0], 1) == [0]            # ties: the lower index
    assert survivors([math.nan, 3.0, math.inf], 1) == [1]
    assert survivors([math.nan, math.inf], 1) == []


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

    ladder = successive_halving((9, 3, 1), losses_at)
    # rung 0 losses: best three are 2 (2.5), 5 (2.6), 3 (2.8)
    # rung 1 among them: 3 (1.9) beats 5 (2.2) and 2 (2.4)
    assert ladder == [list(range(9)), [2, 5, 3], [3]]
    assert calls == [(list(range(9)), 0), ([2, 5, 3], 1), ([3], 2)]


def test_successive_halving_stops_when_every_member_of_a_rung_failed():
    ladder = successive_halving((3, 1, 1), lambda members, rung: [math.nan] * len(members))
    assert ladder == [[0, 1, 2]]


def test_a_regularized_evolution_child_differs_from_its_parent_in_one_gene():
    space = load_preset("cpu-small").space
    rng = random.Random(0)
    changed = set()
    for _ in range(200):
        parent = sample_genome(space, rng)
        a, b = decode(parent, space), decode(mut_one_gene(parent, space, rng, 0.15), space)
        diff = [k for k in a if a[k] != b[k]]
        assert len(diff) == 1, (a, b)  # (cpu-small: every n_embd is a multiple of every n_head)
        changed.add(diff[0])
    assert changed == set(a)  # every gene gets mutated sometimes


def test_aging_removes_the_oldest():
    assert aged(["a", "b", "c", "d"], ["x", "y"]) == ["c", "d", "x", "y"]
    assert aged(["a", "b"], []) == ["a", "b"]
    assert aged(["a", "b"], ["x", "y", "z"]) == ["y", "z"]


def test_method_config_follows_the_preset(micro):
    config = MethodConfig.from_preset(micro)
    assert (config.batch, config.population, config.sample) == (4, 4, 2)
    assert config.children == micro.ga.promote_k + 1  # cycles: as many full runs as an engine generation promotes


# ------------------------------------------------------------ methods on micro

@pytest.mark.parametrize("mode", sorted(METHODS))
def test_every_method_runs_and_never_overspends(tmp_path, micro, tiny_dataset, mode):
    largest = full_run_flops(micro, largest_architecture(micro.space, micro.reference), tiny_dataset)
    budget = int(3.5 * largest)
    (summary, state), run = run_method(tmp_path, micro, tiny_dataset, mode, budget)
    assert summary["mode"] == mode
    assert 0 < summary["compute"]["flops"] <= budget
    best = summary["best_architecture"]
    with Archive(run.folder.archive_path) as archive:
        untrained = archive.get(best["key"]).curve["val_loss"][0]  # step 0: the same model before any step
    assert best["final_val_loss"] < untrained - 0.25  # micro's reference falls by about 0.37
    assert (run.folder.path / "summary.json").exists() and (run.folder.path / "plots/curves.png").exists()
    flops = [p["flops"] for p in summary["promotions"]]
    assert flops == sorted(flops) and flops[-1] <= summary["compute"]["flops"]
    assert all(p["predicted"] is None for p in summary["promotions"])
    if mode == "baseline":
        assert summary["best_architecture"]["arch"] == micro.reference.as_dict()
        assert summary["compute"]["tokens"] == FULL_RUN_TOKENS and summary["generations"] == 0
        assert summary["compute"]["flops"] == full_run_flops(micro, micro.reference.as_dict(), tiny_dataset)
    else:  # the budget, not the generations, ended the run; what is left buys no more training
        assert summary["budget_exhausted"]
        assert summary["compute"]["flops"] > budget - largest


def test_a_budget_below_one_run_trains_nothing(tmp_path, micro, tiny_dataset):
    (summary, _), _ = run_method(tmp_path, micro, tiny_dataset, "baseline",
                                 full_run_flops(micro, micro.reference.as_dict(), tiny_dataset) - 1)
    assert summary["compute"]["tokens"] == 0 and summary["best_architecture"] is None


def test_successive_halving_cycles_hyperbands_brackets_and_resumes_its_checkpoints(tmp_path, micro, tiny_dataset):
    (summary, state), _ = run_method(tmp_path, micro, tiny_dataset, "successive-halving", None, generations=3)
    # micro: s_max = 1. Bracket 1: three architectures for 8 steps, the best resumed from 8 to 24;
    # bracket 0: two architectures trained to 24; then bracket 1 again
    first, second = (3 * 8 + (24 - 8)) * 4 * 16, 2 * 24 * 4 * 16
    assert [row["tokens"] for row in state.logbook] == [0, first, first + second, 2 * first + second]
    assert [row["promoted"] for row in state.logbook] == [0, 1, 2, 1]
    assert summary["compute"]["evaluations"] == 4 + 2 + 4


def test_regularized_evolution_removes_the_oldest(tmp_path, micro, tiny_dataset):
    (_, state), run = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", None, generations=2)
    snapshots = [read_json(p) for p in RunFolder(run.folder.path).snapshot_paths()]
    children = MethodConfig.from_preset(micro).children
    for before, after in zip(snapshots, snapshots[1:]):
        assert len(after["males"]) == len(before["males"]) == micro.ga.n_males
        assert after["males"][:-children] == before["males"][children:]  # the oldest left
        assert after["males"][-children:] != before["males"][:children]  # children joined at the young end
    # one child per cycle, each trained fully: children full runs per generation
    assert [row["promoted"] for row in state.logbook] == [0, children, children]


def test_same_seed_same_result_different_seed_differs(tmp_path, micro, tiny_dataset):
    budget = 4 * full_run_flops(micro, largest_architecture(micro.space, micro.reference), tiny_dataset)
    (a, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 1, name="a")
    (b, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 1, name="b")
    (c, _), _ = run_method(tmp_path, micro, tiny_dataset, "regularized-evolution", budget, 2, name="c")
    assert deterministic_part(a) == deterministic_part(b)
    assert deterministic_part(a) != deterministic_part(c)
