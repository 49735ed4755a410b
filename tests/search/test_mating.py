"""The cross-gender mating operator on hand-built parents: sons the mother
chooses among the father's neighbours (also through a piecewise formula whose
derivative is zero), random sons when she has no opinion, daughters crossed
with the father's choice on training curves only."""

import random
import re

import numpy as np
import pytest

from gpnas.config import load_preset
from gpnas.predict import fitness as fit
from gpnas.predict import trees
from gpnas.config import hyperparameter_features
from gpnas.predict.curves import curve_from_learning_curve
from gpnas.search import females as fem
from gpnas.search import mating
from gpnas.search.males import decode, encode

PREFIX = 0.1
CURVE_NAMES = [n for n in fem.FEATURE_NAMES if n not in fem.CONFIG_KEYS]


@pytest.fixture
def space():
    return load_preset("cpu-small").space  # n_embd choices 32, 48, 64, 96; dropout 0..0.2


@pytest.fixture
def pset():
    return fem.make_pset()


def context(space, pset, *, females=(), predictions=None, targets=None, index=None, training=None, seed=0, m=8):
    return mating.MatingContext(
        space=space, pset=pset, rng=random.Random(seed), gp_config=trees.GPConfig(), prefix_frac=PREFIX,
        n_candidates=m, step_scale=0.2, mutation_scale=0.15, p_guided=1.0, cx_prob=0.5, mut_prob=0.5,
        female_predictions=np.zeros((len(females), 0)) if predictions is None else predictions,
        completed_targets=np.zeros(0) if targets is None else targets,
        completed_index=index or {}, females=list(females), training=training,
    )


def father_view(father, space):
    """The father as the mother sees him: a falling early curve and its feature row."""
    arch = decode(father, space)
    result = {"curve": {"val_loss": [4.2, 3.6, 3.2, 3.0], "eval_steps": [0, 10, 20, 30],
                        "eval_train_loss": [4.2, 3.5, 3.1, 2.9], "max_iters": 300}}
    curve = curve_from_learning_curve(result["curve"], task="task", config_id="father",
                                      config=hyperparameter_features(arch))
    _, columns = fem.predict_finals([], [curve], PREFIX, fem.make_pset())
    row = {name: float(col[0]) for name, col in columns.items()}
    return mating.Father(curve, row)


def scored(text, pset):
    """A hand-built mother as scoring leaves her: r = her tree's genes, summed (a0 = 0, b = 1)."""
    tree = trees.parse_tree(text, pset)
    tree.scaling = fit.Scaling((0.0,) + (1.0,) * len(fit.genes(tree)))
    return tree


def male(space, **arch):
    return encode(arch, space)


def sons(space, pset, mother, father, seeds=range(20)):
    out = []
    for seed in seeds:
        son, guided = mating.make_son(father, mother, father_view(father, space), context(space, pset, seed=seed))
        out.append((decode(son, space), guided))
    return out


def test_candidates_are_distinct_neighbours_one_or_two_genes_away(space):
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.1, learning_rate=3e-3)
    arch = decode(father, space)
    embds = list(space.n_embd.values())
    for seed in range(10):
        candidates = [decode(c, space) for c in mating.son_candidates(father, space, random.Random(seed), 8, 0.2)]
        assert len(candidates) == 8
        assert len({tuple(sorted(c.items())) for c in candidates}) == 8 and arch not in candidates
        for c in candidates:
            assert 1 <= sum(c[k] != arch[k] for k in arch) <= 2
            # discrete genes move by index: one step along the choices, whatever the numbers
            assert abs(embds.index(c["n_embd"]) - embds.index(arch["n_embd"])) <= 1
            assert abs(c["n_layer"] - arch["n_layer"]) <= 1
            # a continuous gene moves 0.5 to 1.5 steps of 0.2 of its range
            if c["dropout"] != arch["dropout"]:
                assert 0.5 * 0.04 - 1e-3 <= abs(c["dropout"] - arch["dropout"]) <= 1.5 * 0.04 + 1e-3


def test_a_piecewise_hyperparameter_term_guides_sons_where_its_derivative_is_zero(space, pset):
    # r = min(-0.161, -dropout): flat (derivative 0) below dropout 0.161, the father sits at 0.15
    mother = scored("min2(neg(0.161), neg(dropout))", pset)
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.15, learning_rate=3e-3)
    results = sons(space, pset, mother, father)
    guided = [arch for arch, g in results if g]
    assert len(guided) >= 10  # a candidate crosses the kink with chance 1 - 0.85^8 = 0.73
    # a guided son is her choice: a candidate past the kink, where she predicts a lower loss
    assert all(arch["dropout"] > 0.161 for arch in guided)
    assert all(arch["dropout"] <= 0.161 for arch, g in results if not g)


def test_the_son_follows_her_learning_rate_and_a_discrete_gene_by_one_step(space, pset):
    lower_lr = scored("mul(0.01, log10_learning_rate)", pset)            # lower lr: lower predicted loss
    father = male(space, n_layer=2, n_head=2, n_embd=32, dropout=0.05, learning_rate=3e-3)
    results = sons(space, pset, lower_lr, father)
    # a seed whose 8 candidates all leave lr alone (chance 0.7^8 = 6 %) has nothing to choose
    assert sum(g for _, g in results) >= 16
    assert all(arch["learning_rate"] <= 3e-3 for arch, g in results if g)
    assert sum(arch["learning_rate"] < 3e-3 for arch, g in results if g) >= 16
    wider = scored("neg(mul(0.01, n_embd))", pset)                   # wider: lower predicted loss
    results = sons(space, pset, wider, father)
    assert all(arch["n_embd"] in (32, 48) for arch, _ in results)      # one index step, never 64 or 96
    assert sum(arch["n_embd"] == 48 for arch, g in results if g) >= 10


def test_a_mother_without_a_hyperparameter_term_does_not_guide(space, pset):
    mother = scored(f"mul(1.5, {CURVE_NAMES[0]})", pset)
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.05, learning_rate=3e-3)
    results = sons(space, pset, mother, father)
    assert not any(g for _, g in results)
    assert len({tuple(sorted(a.items())) for a, _ in results}) > 10, "random sons differ between seeds"


def test_a_father_without_a_feature_row_gets_a_random_son(space, pset):
    mother = scored("mul(0.01, log10_learning_rate)", pset)
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.05, learning_rate=3e-3)
    for view in (None, mating.Father(None, None), mating.Father(None, {})):
        son, guided = mating.make_son(father, mother, view, context(space, pset))
        assert not guided and decode(son, space) != decode(father, space)


def test_daughter_is_crossed_with_the_female_that_predicted_the_father_best(space, pset, monkeypatch):
    a, b, c = CURVE_NAMES[:3]
    mother = trees.parse_tree(f"add({a}, {a})", pset)
    others = [trees.parse_tree(f"add({b}, {b})", pset), trees.parse_tree(f"add({c}, {c})", pset)]
    females = [mother, *others]
    # the father's completed curve has r = 2.0; the second female (b) predicted 2.01
    predictions = np.array([[3.0], [2.01], [5.0]])
    ctx = context(space, pset, females=females, predictions=predictions, targets=np.array([2.0]),
                  index={"father-key": 0}, training=np.array([True]))
    choice, chose = mating.father_choice("father-key", ctx)
    assert chose and choice is females[1]
    monkeypatch.setattr(trees, "mut_tree", lambda tree, *args, **kwargs: tree)  # isolate the crossover
    daughter, chose = mating.make_daughter(mother, "father-key", ctx)
    names = set(re.findall(r"\w+", str(daughter)))
    assert chose and b in names and a in names and c not in names


def test_the_choice_ignores_held_out_curves_and_breaks_ties_at_random(space, pset):
    females = [trees.parse_tree(f"neg({name})", pset) for name in CURVE_NAMES[:4]]
    for i, f in enumerate(females):
        f.fitness.values = (float(i),)
    predictions = np.array([[2.0, 1.0], [2.0, 0.0], [5.0, 9.0], [7.0, 9.0]])
    targets = np.array([2.0, 0.0])
    index = {"train-father": 0, "held-out-father": 1}
    training = np.array([True, False])
    picked = set()
    for seed in range(20):
        ctx = context(space, pset, females=females, predictions=predictions, targets=targets, index=index,
                      training=training, seed=seed)
        choice, chose = mating.father_choice("train-father", ctx)
        assert chose
        picked.add(females.index(choice))
        # his curve is held out: female 1 predicted it exactly, but the choice may not use it
        _, chose = mating.father_choice("held-out-father", ctx)
        assert not chose
    assert picked == {0, 1}  # the two that tie on his training curve, both drawn


def test_a_father_without_a_completed_curve_chooses_by_tournament(space, pset):
    females = [trees.parse_tree(f"neg({name})", pset) for name in CURVE_NAMES[:4]]
    for i, f in enumerate(females):
        f.fitness.values = (float(i),)
    choice, chose = mating.father_choice("never-completed", context(space, pset, females=females))
    assert not chose and choice in females


def test_son_statistics_compare_guided_and_random_sons_of_the_same_generation():
    sons = [
        {"generation": 1, "guided": True, "early_loss": 3.0}, {"generation": 1, "guided": False, "early_loss": 3.4},
        {"generation": 1, "guided": True, "early_loss": 3.2},
        {"generation": 2, "guided": True, "early_loss": 2.9}, {"generation": 2, "guided": False, "early_loss": 2.8},
        {"generation": 3, "guided": True, "early_loss": None},  # not trained (yet, or it failed)
        {"generation": 4, "guided": False, "early_loss": 2.5},  # no guided son to pair with
    ]
    stats = mating.son_statistics(sons)
    assert (stats["guided"], stats["random"]) == (4, 3)
    assert stats["guided_fraction"] == pytest.approx(4 / 7)
    assert stats["guided_early_loss"] == pytest.approx((3.0 + 3.2 + 2.9) / 3) and stats["guided_trained"] == 3
    assert stats["random_early_loss"] == pytest.approx((3.4 + 2.8 + 2.5) / 3)
    # generation 1: 3.1 - 3.4 = -0.3; generation 2: 2.9 - 2.8 = +0.1
    assert stats["paired_generations"] == 2 and stats["paired_difference"] == pytest.approx(-0.1)
    assert stats["guided_lower_generations"] == 1
    assert mating.son_statistics([])["guided_fraction"] is None


def completed_curves(space, n=12, seed=0):
    """Completed curves of random cpu-small males, as the run's archive holds them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        arch = decode(encode({"n_layer": 1 + i % 3, "n_head": 2, "n_embd": 64, "dropout": 0.1,
                              "learning_rate": float(10 ** rng.uniform(-3.5, -2))}, space), space)
        val = 4.2 * np.exp(-np.linspace(0, rng.uniform(0.3, 0.8), 31)) + rng.normal(0, 0.01, 31)
        result = {"curve": {"val_loss": val.tolist(), "eval_steps": list(range(0, 310, 10)),
                            "eval_train_loss": (val - 0.05).tolist(), "max_iters": 300}}
        out.append(curve_from_learning_curve(result["curve"], task="task", config_id=f"k{i}",
                                              config=hyperparameter_features(arch)))
    return out


def test_predictions_on_the_training_curves_reuse_the_scores_and_nothing_else(space, pset):
    curve_set = fem.CurveSet.build(completed_curves(space), PREFIX)
    rng = random.Random(0)
    females = fem.initial_population(30, pset, rng, trees.GPConfig())
    cache = {}
    fem.rescore(females, curve_set, pset, cache)
    fresh = fem.predict_all(females, curve_set.columns, pset)
    np.testing.assert_array_equal(fem.predict_all(females, curve_set.columns, pset, cache), fresh)
    # a female whose scaling was fitted elsewhere is computed, not looked up
    other = fem.clone(females[3])
    other.scaling = fit.Scaling((0.5,) + (0.0,) * len(fit.genes(other)))
    np.testing.assert_array_equal(fem.predict_all([other], curve_set.columns, pset, cache),
                                  np.full((1, curve_set.train.m), 0.5))


class _WidthPredictor:
    """A chosen predictor that prefers wider candidates (r falls with n_embd)."""

    def r_of_columns(self, columns):
        return -np.asarray(columns["n_embd"], dtype=float)


def test_with_the_predictor_as_ranker_the_son_is_its_pick_and_the_mother_is_logged(space, pset):
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.1, learning_rate=3e-3)
    mother = scored("dropout", pset)   # prefers low dropout; ignores width
    picks = []
    for seed in range(10):
        ctx = context(space, pset, seed=seed)
        ctx.ranker, ctx.predictor, ctx.rankings = "predictor", _WidthPredictor(), []
        son, guided = mating.make_son(father, mother, father_view(father, space), ctx)
        (logged,) = ctx.rankings
        widths = [decode(c, space)["n_embd"] for c in logged["candidates"]]
        assert guided == (max(widths) > min(widths))
        if guided:
            assert decode(son, space)["n_embd"] == max(widths)     # the predictor's pick, not the mother's
            picks.append(decode(son, space)["n_embd"])
        assert logged["mother"] is not None and logged["predictor"] is not None
    assert picks


def test_without_a_predictor_its_ranking_gives_random_sons(space, pset):
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.1, learning_rate=3e-3)
    ctx = context(space, pset, seed=0)
    ctx.ranker = "predictor"
    _, guided = mating.make_son(father, scored("dropout", pset), father_view(father, space), ctx)
    assert guided is False


def test_son_ranker_is_checked_when_the_preset_loads():
    from gpnas.config import ConfigError
    assert load_preset("cpu-small", ["ga.son_ranker=predictor"]).ga.son_ranker == "predictor"
    with pytest.raises(ConfigError, match="ga.son_ranker = 'oracle' must be one of 'mother', 'judged', 'predictor'"):
        load_preset("cpu-small", ["ga.son_ranker=oracle"])


def test_the_judged_mother_is_the_female_whose_ranking_of_the_fathers_neighbourhood_agrees(space, pset):
    """``son_ranker = "judged"``: the started configs nearest the father, with their early
    values, judge every female; the son is the pick of the one that agrees best, and no
    female agreeing (Spearman <= 0) gives a random son."""
    father = male(space, n_layer=2, n_head=2, n_embd=48, dropout=0.1, learning_rate=3e-3)
    by_dropout, by_width = scored("dropout", pset), scored("neg(mul(0.01, n_embd))", pset)
    started = [hyperparameter_features(decode(male(space, n_layer=layers, n_head=2, n_embd=width, dropout=0.1,
                                                   learning_rate=lr), space))
               for layers in (1, 2, 3) for width in (32, 48, 64, 96) for lr in (1e-3, 3e-3)]

    def son(wider_starts_lower, seed):
        ctx = context(space, pset, females=[by_dropout, by_width], seed=seed)
        ctx.ranker = "judged"
        ctx.early = [(c, 3.0 - (0.01 if wider_starts_lower else -0.01) * c["n_embd"]) for c in started]
        child, guided = mating.make_son(father, by_dropout, father_view(father, space), ctx)
        return decode(child, space), guided, ctx

    results = [son(True, seed) for seed in range(10)]
    assert mating.judged_mother(father_view(father, space), results[0][2]) is by_width
    assert sum(g for _, g, _ in results) >= 8
    assert all(arch["n_embd"] == 64 for arch, g, _ in results if g and arch["n_embd"] != 48)
    assert not any(arch["n_embd"] == 32 for arch, g, _ in results if g)      # never the narrower step
    reversed_ = [son(False, seed) for seed in range(10)]
    assert mating.judged_mother(father_view(father, space), reversed_[0][2]) is None
    assert not any(g for _, g, _ in reversed_)
