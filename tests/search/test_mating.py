"""The cross-gender mating operator on hand-built parents."""

import random
import re

import numpy as np
import pytest

from gpnas.config import load_preset
from gpnas.predict import trees
from gpnas.search import females as fem
from gpnas.search import mating
from gpnas.search.males import decode, encode, hyperparameter_features


@pytest.fixture
def space():
    return load_preset("micro").space


@pytest.fixture
def pset():
    return fem.make_pset()


def context(space, pset, *, females=(), predictions=None, targets=None, index=None, mutation=0.0, seed=0):
    return mating.MatingContext(
        space=space, pset=pset, rng=random.Random(seed), gp_config=trees.GPConfig(),
        step_scale=0.3, mutation_scale=mutation, p_guided=1.0, cx_prob=0.5, mut_prob=0.5,
        female_predictions=np.zeros((len(females), 0)) if predictions is None else predictions,
        completed_targets=np.zeros(0) if targets is None else targets,
        completed_index=index or {}, females=list(females),
    )


def father_row(arch):
    """A feature row for the father: neutral curve features, his hyperparameters."""
    row = dict.fromkeys(fem.FEATURE_NAMES, 0.5)
    hp = hyperparameter_features(arch)
    row.update({name: np.log10(hp[key]) if name.startswith("log10_") else hp[key]
                for name, key in fem.CONFIG_KEYS.items()})
    return row


def male(space, **arch):
    return encode(arch, space)


def test_son_steps_down_the_mothers_learning_rate_gradient(space, pset):
    # she predicts final loss = 2 + 0.5 * log10 lr: a lower learning rate lowers it
    mother = trees.parse_tree("add(2.0, mul(0.5, log10_learning_rate))", pset)
    father = male(space, n_layer=1, n_head=2, n_embd=16, dropout=0.05, learning_rate=5e-3)
    arch = decode(father, space)
    son, guided = mating.make_son(father, mother, father_row(arch), context(space, pset))
    son_arch = decode(son, space)
    assert guided
    assert son_arch["learning_rate"] < arch["learning_rate"]
    assert {k: son_arch[k] for k in ("n_layer", "n_head", "n_embd", "dropout")} == \
           {k: arch[k] for k in ("n_layer", "n_head", "n_embd", "dropout")}


def test_son_follows_a_dropout_gradient_upwards(space, pset):
    # final loss falls as dropout rises
    mother = trees.parse_tree("sub(3.0, dropout)", pset)
    father = male(space, n_layer=2, n_head=1, n_embd=32, dropout=0.02, learning_rate=3e-3)
    arch = decode(father, space)
    son, guided = mating.make_son(father, mother, father_row(arch), context(space, pset))
    assert guided and decode(son, space)["dropout"] > arch["dropout"]


def test_son_mutates_at_random_when_the_formula_uses_no_hyperparameter(space, pset):
    mother = trees.parse_tree(f"mul(1.5, {fem.FEATURE_NAMES[0]})", pset)
    father = male(space, n_layer=1, n_head=2, n_embd=16, dropout=0.05, learning_rate=5e-3)
    arch = decode(father, space)
    sons = set()
    for seed in range(8):
        son, guided = mating.make_son(father, mother, father_row(arch), context(space, pset, seed=seed))
        assert not guided
        sons.add(tuple(sorted(decode(son, space).items())))
    assert len(sons) > 1, "random steps differ between seeds"


def test_daughter_is_crossed_with_the_female_that_predicted_the_father_best(space, pset, monkeypatch):
    a, b, c = fem.FEATURE_NAMES[:3]
    mother = trees.parse_tree(f"add({a}, {a})", pset)
    others = [trees.parse_tree(f"add({b}, {b})", pset), trees.parse_tree(f"add({c}, {c})", pset)]
    females = [mother, *others]
    # the father's completed curve ended at 2.0; the second female (b) predicted 2.01
    predictions = np.array([[3.0], [2.01], [5.0]])
    ctx = context(space, pset, females=females, predictions=predictions, targets=np.array([2.0]),
                  index={"father-key": 0})
    choice, chose = mating.father_choice("father-key", ctx)
    assert chose and choice is females[1]
    monkeypatch.setattr(trees, "mut_tree", lambda tree, *args, **kwargs: tree)  # isolate the crossover
    daughter, chose = mating.make_daughter(mother, "father-key", ctx)
    names = set(re.findall(r"\w+", str(daughter)))
    assert chose and b in names and a in names and c not in names


def test_a_father_without_a_completed_curve_chooses_by_tournament(space, pset):
    females = [trees.parse_tree(f"neg({name})", pset) for name in fem.FEATURE_NAMES[:4]]
    for i, f in enumerate(females):
        f.fitness.values = (float(i),)
    ctx = context(space, pset, females=females)
    choice, chose = mating.father_choice("never-completed", ctx)
    assert not chose and choice in females


def test_the_gradient_is_evaluated_at_the_father(space, pset):
    # final loss = (log lr)^2: its slope 2 ln(lr) < 0 at any lr < 1, so descent raises lr
    mother = trees.parse_tree("mul(log10_learning_rate, log10_learning_rate)", pset)
    father = male(space, n_layer=1, n_head=2, n_embd=16, dropout=0.05, learning_rate=2e-3)
    arch = decode(father, space)
    gradient = mating.hyperparameter_gradient(mother, father_row(arch), context(space, pset))
    assert gradient == pytest.approx({"log10_learning_rate": 2 * np.log10(2e-3)})
    son, guided = mating.make_son(father, mother, father_row(arch), context(space, pset))
    assert guided and decode(son, space)["learning_rate"] > arch["learning_rate"]
