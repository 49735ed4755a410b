import builtins
import random

import numpy as np
import pytest

from gpnas.errors import FileFormatError
from gpnas.predict import trees
from gpnas.predict.features import FEATURE_NAMES
from gpnas.search.individuals import Female


@pytest.fixture(scope="module")
def pset():
    return trees.make_pset()


def _columns(n=64, seed=0):
    rng = np.random.default_rng(seed)
    X = {name: rng.normal(0, 3, n) for name in FEATURE_NAMES}
    X["rel_last"][:4] = [0.0, 1e-9, -1e-9, 1e3]  # protected-op edge cases
    return X


def test_config_terminals_are_the_names_that_are_no_curve_feature():
    pset = trees.make_pset(["rel_last", "log10_learning_rate", "dropout"])
    assert trees.config_terminals(pset) == ["log10_learning_rate", "dropout"]
    with pytest.raises(ValueError, match="identifiers"):
        trees.make_pset(["rel_last", "add"])


def test_parse_round_trips_exactly(pset):
    rng = random.Random(3)
    for _ in range(200):
        tree = trees.random_tree(pset, rng, trees.GPConfig(init_max_depth=5))
        again = trees.parse_tree(str(tree), pset)
        assert isinstance(again, Female) and str(again) == str(tree)
    t = trees.parse_tree("add(rel_last, -0.123456789012345)", pset)
    assert t[2].value == -0.123456789012345 and str(trees.parse_tree(str(t), pset)) == str(t)


@pytest.mark.parametrize("text", [
    "__import__('os').system('true')",
    "add(rel_last, rel_last.__class__)",
    "lambda: 1",
    "add(rel_last)",                       # wrong arity
    "add(rel_last, rel_best, rel_p50)",    # wrong arity
    "neg(rel_last) rel_best",              # trailing tokens
    "open(rel_last)",                      # unknown name
    "ARG0",                                # DEAP's raw argument name
    "const",                               # the ephemeral's class name
    "add(rel_last, 1e999)",                # not finite
    "add(rel_last, [1])",
    "",
    "neg(" * 5000 + "rel_last" + ")" * 5000,  # nesting: an error, not a RecursionError
])
def test_parse_refuses_anything_else_without_evaluating(pset, monkeypatch, text):
    def tripwire(*args, **kwargs):
        raise AssertionError("evaluated")
    monkeypatch.setattr(builtins, "eval", tripwire)
    monkeypatch.setattr(builtins, "exec", tripwire)
    monkeypatch.setattr(builtins, "__import__", tripwire)
    with pytest.raises(FileFormatError):
        trees.parse_tree(text, pset)


def test_vectorised_equals_per_row(pset):
    X = _columns()
    rng = random.Random(0)
    for _ in range(60):
        tree = trees.random_tree(pset, rng, trees.GPConfig(init_max_depth=5))
        a = trees.compile_tree(tree, pset)(X)
        b = trees.compile_tree_rows(tree, pset)(X)
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_compiled_trees_are_finite_and_silent(pset):
    X = _columns()
    with np.errstate(all="raise"):
        for text in ["pdiv(rel_last, sub(rel_best, rel_best))", "cexp(mul(1000.0, rel_last))",
                     "plog(sub(rel_last, rel_last))", "mul(cexp(rel_third), mul(cexp(rel_third), 1e300))",
                     "sub(mul(1e300, 1e300), mul(1e300, 1e300))", "1.5"]:
            out = trees.compile_tree(trees.parse_tree(text, pset), pset)(X)
            assert out.shape == (64,) and np.all(np.isfinite(out)), text
            assert np.all(np.abs(out) <= trees.OUTPUT_CLIP)


@np.errstate(all="ignore")
def test_protected_operators():
    assert trees.pdiv(np.array([3.0, 3.0]), np.array([2.0, 0.0])).tolist() == [1.5, 1.0]
    assert np.isclose(trees.plog(0.0), np.log(1e-6))
    assert trees.cexp(1e6) == np.exp(20.0)


def _run_operators(seed, pset):
    rng = random.Random(seed)
    pop = [trees.random_tree(pset, rng) for _ in range(20)]
    for i, t in enumerate(pop):
        t.fitness.values = (float(i % 7),)
    out = []
    for _ in range(30):
        a, b = trees.cx_tree(pop[rng.randrange(20)], pop[rng.randrange(20)], rng)
        out += [str(a), str(b), str(trees.mut_tree(a, pset, rng))]
    out += [str(t) for t in trees.sel_parsimony(pop, 10, rng)]
    return out


def test_same_seed_same_trees_and_global_random_untouched(pset):
    random.seed(12345)
    before = random.getstate()
    a = _run_operators(1, pset)
    assert random.getstate() == before          # the caller's global state is restored
    b = _run_operators(1, pset)
    assert a == b
    assert a != _run_operators(2, pset)


def test_deap_random_advances_the_lent_generator():
    rng = random.Random(5)
    ref = random.Random(5)
    with trees.deap_random(rng):
        x = random.random()
    assert x == ref.random() and rng.random() == ref.random()


def test_operators_respect_limits_and_leave_parents_alone(pset):
    rng = random.Random(4)
    config = trees.GPConfig(max_depth=4, max_size=12)
    pop = [trees.random_tree(pset, rng, config) for _ in range(30)]
    before = [str(t) for t in pop]
    for _ in range(300):
        a, b = trees.cx_tree(pop[rng.randrange(30)], pop[rng.randrange(30)], rng, config)
        m = trees.mut_tree(a, pset, rng, config)
        for t in (a, b, m):
            assert t.height <= 4 and len(t) <= 12 and not t.fitness.valid
    assert [str(t) for t in pop] == before
