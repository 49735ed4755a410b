"""Property tests (hypothesis): what must hold for every input, not just the examples.

- curve features are finite for any curve, diverged ones included;
- GP operators keep trees valid (they print and parse back to themselves,
  compile to finite predictions) and within the preset's depth and size limits;
- genome repair turns any genes (NaN, inf, huge) into a valid config that
  trains, and repairing twice changes nothing (a resumed run decodes the same);
- loading a formula from text never executes it: random token strings either
  parse into a tree over the primitive set or are refused with FileFormatError,
  and eval/exec/compile are never called.

Few examples each (settings below), so the file runs in seconds.
"""

import builtins
import contextlib
import json
import math
import random
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpnas import config as cfg
from gpnas.errors import FileFormatError
from gpnas.predict import trees
from gpnas.predict.curves import Curve
from gpnas.predict.features import CURVE_FEATURES, FEATURE_NAMES, feature_matrix
from gpnas.search.males import cx_genome, decode, mut_genome, repair, sample_genome, train_config_dict
from gpnas.train.trainer import TrainConfig

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PSET = trees.make_pset()
PRESETS = {name: cfg.load_preset(name) for name in cfg.available_presets()}


# ------------------------------------------------------------------ curve features

any_float = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                      st.sampled_from([0.0, -0.0, 1e308, -1e308, 5e-324, 1e-300, 4.17]))


@FAST
@given(st.lists(st.tuples(st.lists(any_float, min_size=1, max_size=25), st.integers(0, 40)), min_size=1,
                max_size=5),
       st.floats(min_value=0.01, max_value=1.0))
def test_curve_features_are_always_finite(curves, frac):
    built = [Curve(values=np.array(values), task=f"t{i % 2}", config_id=str(i), horizon=len(values) + extra,
                   config={"learning_rate": 1e-3, "n_layer": 2.0})
             for i, (values, extra) in enumerate(curves)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        X = feature_matrix(built, frac, [*CURVE_FEATURES, "cohort_rank_last", "log10_learning_rate", "n_layer"])
    assert set(X) == {*CURVE_FEATURES, "cohort_rank_last", "log10_learning_rate", "n_layer"}
    for name, column in X.items():
        assert column.shape == (len(built),) and np.all(np.isfinite(column)), name


# ------------------------------------------------------------------ GP operators

@FAST
@given(st.integers(0, 2**32 - 1), st.integers(2, 8), st.integers(5, 40))
def test_gp_operators_keep_trees_valid_and_within_limits(seed, max_depth, max_size):
    rng = random.Random(seed)
    config = trees.GPConfig(init_max_depth=min(3, max_depth), max_depth=max_depth, max_size=max_size)
    population = [trees.random_tree(PSET, rng, config) for _ in range(4)]
    columns = {name: np.array([0.0, 1.0, -3.5, 1e6, 1e-9]) for name in FEATURE_NAMES}
    for _ in range(6):
        a, b = population[rng.randrange(4)], population[rng.randrange(4)]
        population += list(trees.cx_tree(a, b, rng, config)) + [trees.mut_tree(a, PSET, rng, config)]
    for tree in population:
        assert tree.height <= max_depth and len(tree) <= max_size
        assert str(trees.parse_tree(str(tree), PSET)) == str(tree)  # snapshots hold exactly this text
        out = trees.compile_tree(tree)(columns)
        assert out.shape == (5,) and np.all(np.isfinite(out))


def test_every_tree_a_preset_allows_can_be_read_back():
    assert cfg.MAX_TREE_DEPTH <= trees.MAX_PARSE_DEPTH
    deep = "neg(" * cfg.MAX_TREE_DEPTH + "rel_last" + ")" * cfg.MAX_TREE_DEPTH
    assert trees.parse_tree(deep, PSET).height == cfg.MAX_TREE_DEPTH


# ------------------------------------------------------------------ genome repair

any_gene = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**6, 10**6).map(float))


@FAST
@given(st.sampled_from(sorted(PRESETS)), st.lists(any_gene, min_size=5, max_size=5))
def test_genome_repair_always_gives_a_valid_config(name, genes):
    preset = PRESETS[name]
    repaired = repair(list(genes), preset.space)
    assert all(math.isfinite(x) for x in repaired)
    assert repair(list(repaired), preset.space) == repaired  # idempotent: a resumed run decodes alike
    arch = decode(repaired, preset.space)
    for gene in cfg.SPACE_GENES:
        spec = preset.space.gene(gene)
        assert spec.low <= arch[gene] <= spec.high, gene
        if gene in cfg.INT_GENES:
            assert arch[gene] in spec.values(), gene
    assert arch["n_embd"] % arch["n_head"] == 0
    TrainConfig(**train_config_dict(arch, preset.budget)).validate()


@FAST
@given(st.sampled_from(sorted(PRESETS)), st.integers(0, 2**32 - 1))
def test_genome_operators_always_give_valid_genomes(name, seed):
    preset, rng = PRESETS[name], random.Random(seed)
    a, b = sample_genome(preset.space, rng), sample_genome(preset.space, rng)
    children = [*cx_genome(a, b, preset.space, rng), *mut_genome(a, preset.space, rng, 0.3)]
    for child in children:
        assert repair(list(child), preset.space) == list(child)
        arch = decode(child, preset.space)
        assert arch["n_embd"] % arch["n_head"] == 0


# ------------------------------------------------------------------ formula loading never executes

TOKENS = (list(FEATURE_NAMES[:6]) + list(trees.PRIMITIVES)
          + ["(", ")", ",", " ", "0.5", "-2", "1e999", "nan", "inf", "__import__", "os", "system", "eval",
             "exec", "lambda", "open", ".", "'", '"', ";", "__class__", "__globals__", "[", "]", "{", "}",
             "=", "\n", "\\", "`", "touch PWNED", "#", "*", "**", "print"])


@contextlib.contextmanager
def no_execution():
    """eval, exec and compile replaced by recorders for the duration."""
    calls = []
    saved = {name: getattr(builtins, name) for name in ("eval", "exec", "compile")}
    for name in saved:
        setattr(builtins, name, lambda *args, _name=name, **kwargs: calls.append(_name))
    try:
        yield calls
    finally:
        for name, fn in saved.items():
            setattr(builtins, name, fn)


@FAST
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=40))
def test_random_token_strings_never_execute(tokens):
    text = "".join(tokens)
    with no_execution() as calls:
        try:
            tree = trees.parse_tree(text, PSET)
        except FileFormatError:
            tree = None
    assert calls == []
    if tree is not None:  # what parses is a tree over the primitive set, and prints as it parsed
        for node in tree:
            if node.arity:
                assert node.name in trees.PRIMITIVES
            else:
                assert node.value in FEATURE_NAMES or (isinstance(node.value, float) and math.isfinite(node.value))
        assert str(trees.parse_tree(str(tree), PSET)) == str(tree)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(TOKENS), min_size=1, max_size=30))
def test_predictor_and_snapshot_files_with_random_trees_never_execute(tmp_path, tokens):
    from gpnas.predict.predictor import FORMAT, CurvePredictor
    from gpnas.search.state import state_from_dict

    text = "".join(tokens)
    path = tmp_path / "predictor.json"
    path.write_text(json.dumps({"format": FORMAT, "version": 1, "tree": text, "features": list(FEATURE_NAMES),
                                "prefix": {"frac": 0.2}}))
    snapshot = {"generation": 1, "males": [], "females": [text], "charged": [], "hall_of_fame": [],
                "logbook": [], "promotions": [], "failures": [], "exhausted": False,
                "mating_stats": {"guided": 0, "random": 0, "chose": 0, "tournament": 0},
                "compute": {"steps": 0, "tokens": 0, "train_seconds": 0.0, "evaluations": 0},
                "rng_state": {"version": 3, "internal": list(random.Random(0).getstate()[1]), "gauss_next": None}}
    with no_execution() as calls:
        for load in (lambda: CurvePredictor.load(path), lambda: state_from_dict(snapshot, PSET, "gen_0001.json", 5)):
            with contextlib.suppress(FileFormatError):
                load()
    assert calls == []


@pytest.mark.parametrize("text", ["__import__('os').system('touch PWNED')", "rel_last.__class__",
                                  "add(rel_last, eval('1'))", "exec", "(lambda: 0)()"])
def test_known_attacks_are_refused_without_execution(text):
    with no_execution() as calls, pytest.raises(FileFormatError):
        trees.parse_tree(text, PSET)
    assert calls == []
