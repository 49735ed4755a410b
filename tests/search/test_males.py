import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gpnas.config import load_preset
from gpnas.search.individuals import Male
from gpnas.search.males import (
    WORST_EARLY_SCORE,
    cx_genome,
    decode,
    early_score,
    encode,
    hyperparameter_features,
    mut_genome,
    repair,
    sample_genome,
    train_config_dict,
)

PRESETS = {name: load_preset(name) for name in ("micro", "cpu-small", "shakespeare-char")}
# A space where n_embd choices and n_head choices rarely divide each other.
AWKWARD = load_preset("shakespeare-char", ["space.n_head.choices=[3, 5, 8, 9]", "space.n_embd.choices=[21, 40, 49, 64]",
                                           "reference.n_head=8", "reference.n_embd=64"]).space
SPACES = [p.space for p in PRESETS.values()] + [AWKWARD]
floats = st.floats(allow_nan=True, allow_infinity=True, width=64)


def assert_valid(genome, space):
    assert isinstance(genome, Male) and len(genome) == len(space.names)
    assert all(isinstance(v, float) and math.isfinite(v) for v in genome)
    arch = decode(genome, space)
    for gene in ("n_layer", "n_head", "n_embd", "dropout", "learning_rate"):
        spec = space.gene(gene)
        assert spec.low <= arch[gene] <= spec.high, (gene, arch)
        if spec.discrete:
            assert arch[gene] in spec.values(), (gene, arch)
    assert arch["n_embd"] % arch["n_head"] == 0, arch
    assert arch == decode(encode(arch, space), space)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(range(len(SPACES))), st.lists(floats, min_size=5, max_size=5))
def test_repair_always_gives_a_valid_genome(which, values):
    space = SPACES[which]
    genome = Male(values)
    out = repair(genome, space)
    assert out is genome
    assert_valid(genome, space)
    assert repair(Male(genome), space) == genome  # idempotent


def test_repair_examples():
    space = PRESETS["cpu-small"].space
    g = repair(Male([2.6, 3.4, 50.0, -1.0, float("nan")]), space)
    assert g == [3.0, 4.0, 48.0, 0.0, pytest.approx((math.log10(3e-4) + math.log10(1e-2)) / 2)]
    space = PRESETS["shakespeare-char"].space
    assert repair(Male([6, 6, 512, 0.1, -3]), space)[:3] == [6.0, 6.0, 384.0]  # nearest multiple of 6
    assert repair(Male([6, 8, 384, 0.1, -3]), space)[:3] == [6.0, 8.0, 384.0]
    # No allowed n_embd is a multiple of 9: n_head moves to the nearest divisor of 40.
    assert repair(Male([6, 9, 40, 0.1, -3]), AWKWARD)[1:3] == [8.0, 40.0]
    # Nor does any allowed n_head divide 49: the nearest valid pair, (8, 40) and (8, 64) tie, lower wins.
    assert repair(Male([6, 9, 49, 0.1, -3]), AWKWARD)[1:3] == [8.0, 40.0]
    with pytest.raises(ValueError):
        repair(Male([1, 2, 3]), space)


def test_decode_rounds_so_equal_architectures_compare_equal():
    space = PRESETS["cpu-small"].space
    a = decode(Male([2, 2, 64, 0.10004, math.log10(0.0012345678)]), space)
    b = decode(Male([2, 2, 64, 0.09996, math.log10(0.0012345111)]), space)
    assert a == b == dict(n_layer=2, n_head=2, n_embd=64, dropout=0.1, learning_rate=0.001235)
    assert all(type(a[k]) is int for k in ("n_layer", "n_head", "n_embd"))
    assert decode(Male([2, 2, 64, 0.2, -2.0]), space)["learning_rate"] == 0.01  # bound kept exactly


def test_encode_decode_reference():
    for p in PRESETS.values():
        ref = p.reference.as_dict()
        assert decode(encode(ref, p.space), p.space) == ref


def test_train_config_dict_and_decode_with_budget():
    p = PRESETS["micro"]
    arch = p.reference.as_dict()
    d = train_config_dict(arch, p.budget)
    assert d == dict(arch, block_size=16, batch_size=4, max_iters=24, eval_interval=2, eval_batches=2,
                     warmup_iters=2)
    assert decode(encode(arch, p.space), p.space, p.budget) == d


def test_same_rng_same_genome_and_different_seeds_differ():
    space = PRESETS["cpu-small"].space
    a = [sample_genome(space, random.Random(1)) for _ in range(3)]
    b = [sample_genome(space, random.Random(1)) for _ in range(3)]
    assert a == b
    rng1, rng2 = random.Random(1), random.Random(2)
    assert [sample_genome(space, rng1) for _ in range(5)] != [sample_genome(space, rng2) for _ in range(5)]
    state = random.getstate()
    sample_genome(space, random.Random(3))
    assert random.getstate() == state  # the global generator is untouched


def test_sampling_covers_the_space():
    space = PRESETS["cpu-small"].space
    rng = random.Random(0)
    archs = [decode(sample_genome(space, rng), space) for _ in range(400)]
    assert {a["n_layer"] for a in archs} == {1, 2, 3}
    assert {a["n_head"] for a in archs} == {1, 2, 4}
    assert {a["n_embd"] for a in archs} == {32, 48, 64, 96}
    lrs = sorted(a["learning_rate"] for a in archs)
    assert lrs[0] < 5e-4 and lrs[-1] > 6e-3 and 1e-3 < lrs[200] < 3e-3  # log-uniform median ~1.7e-3


def test_operators_stay_valid_and_are_seeded():
    for space in SPACES:
        rng = random.Random(5)
        pop = [sample_genome(space, rng) for _ in range(10)]
        for _ in range(30):
            a, b = rng.sample(pop, 2)
            a, b = cx_genome(Male(a), Male(b), space, rng)
            (m,) = mut_genome(Male(a), space, rng, 0.3)
            for g in (a, b, m):
                assert_valid(g, space)
            pop[rng.randrange(len(pop))] = m

    def run(seed):
        rng = random.Random(seed)
        space = PRESETS["cpu-small"].space
        g = sample_genome(space, rng)
        for _ in range(10):
            g = mut_genome(g, space, rng, 0.2)[0]
            g = cx_genome(g, sample_genome(space, rng), space, rng)[0]
        return g
    assert run(3) == run(3) and run(3) != run(4)


def test_crossover_children_take_discrete_genes_from_a_parent():
    space = PRESETS["cpu-small"].space
    rng = random.Random(0)
    for _ in range(50):
        p1, p2 = sample_genome(space, rng), sample_genome(space, rng)
        c1, c2 = cx_genome(Male(p1), Male(p2), space, rng)
        assert c1[0] in (p1[0], p2[0]) and c2[0] in (p1[0], p2[0])


def test_mutation_scale_per_gene_and_fitness_invalidated():
    space = PRESETS["cpu-small"].space
    rng = random.Random(0)
    g = encode(PRESETS["cpu-small"].reference.as_dict(), space)
    g.fitness.values = (1.0,)
    before = list(g)
    (m,) = mut_genome(g, space, rng, {"learning_rate": 0.3})
    assert m is g and not m.fitness.valid
    assert m[:4] == before[:4] and m[4] != before[4]
    moved = [mut_genome(Male(before), space, rng, 0.5)[0] for _ in range(50)]
    assert all(len({m[i] for m in moved}) > 1 for i in range(5))  # every gene moves sometimes


def test_hyperparameter_features_nanogpt_counts():
    f = hyperparameter_features(dict(n_layer=4, n_head=4, n_embd=128, dropout=0.0, learning_rate=1e-3))
    assert f == dict(learning_rate=1e-3, dropout=0.0, n_layer=4.0, n_head=4.0, n_embd=128.0, n_params=795_904.0)
    f = hyperparameter_features(dict(n_layer=6, n_head=6, n_embd=384, dropout=0.2, learning_rate=1e-3))
    assert f["n_params"] == 10_646_784


def test_early_score():
    # Fell 1.5 nats over 0.5 M tokens: 3 per million tokens.
    assert early_score([4.2, 3.5, 3.0, 2.7], [0, 10, 20, 30], 500_000) == pytest.approx(3.0)
    assert early_score([4.2, 3.5, 3.0, 2.7], tokens=1_000_000) == pytest.approx(1.5)
    with pytest.raises(TypeError):
        early_score([4.2, 2.7], 1_000_000)  # tokens must not land in steps
    assert early_score([4.0, 4.5], None, 1e6) == pytest.approx(-0.5)  # got worse
    for bad in ([4.0, float("nan")], [float("inf"), 3.0], [4.0]):
        assert early_score(bad, None, 1e6) == WORST_EARLY_SCORE
    assert WORST_EARLY_SCORE < early_score([4.0, 9.0], None, 1.0)
    with pytest.raises(ValueError):
        early_score([4.0, 3.0], [0], 1e6)
    with pytest.raises(ValueError):
        early_score([4.0, 3.0], None, 0)
