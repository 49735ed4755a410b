import json
import math
import random
import re
from dataclasses import replace

import pytest

from gpnas.config import (
    EVAL_LIMIT_FLOOR_S,
    MAX_MEMORY_BYTES,
    PRESETS_DIR,
    SLOWEST_FLOPS_PER_S,
    available_presets,
    estimate_memory_bytes,
    eval_time_limit,
    flops_per_token,
    load_preset,
    non_embedding_params,
    preset_from_dict,
    preset_to_dict,
)
from gpnas.errors import ConfigError

PRESETS = ("micro", "cpu-small", "shakespeare-char")


def test_packaged_presets_load_and_round_trip_through_json():
    assert set(PRESETS) <= set(available_presets())
    for name in PRESETS:
        p = load_preset(name)
        assert p.name == name
        d = json.loads(json.dumps(preset_to_dict(p)))
        assert preset_from_dict(d) == p
        assert preset_to_dict(preset_from_dict(d)) == d


def test_shakespeare_reference_is_nanogpt_baby_gpt():
    p = load_preset("shakespeare-char")
    assert p.reference.as_dict() == dict(n_layer=6, n_head=6, n_embd=384, dropout=0.2, learning_rate=1e-3)
    b = p.budget
    assert (b.block_size, b.batch_size, b.full_iters) == (256, 64, 5000)


def test_early_run_is_a_prefix_of_at_least_four_evaluations():
    for name in PRESETS:
        b = load_preset(name).budget
        assert b.early_iters % b.eval_interval == 0 and b.full_iters % b.eval_interval == 0
        assert b.early_iters // b.eval_interval + 1 >= 4
        assert b.prefix_frac == b.early_iters / b.full_iters
        # curves.prefix_length(n_full, prefix_frac) = max(4, ceil(frac * n)) is exactly the early curve.
        n_full, n_early = b.full_iters // b.eval_interval + 1, b.early_iters // b.eval_interval + 1
        assert max(4, math.ceil(b.prefix_frac * n_full)) == n_early


def test_load_by_path_equals_load_by_name(tmp_path):
    src = (PRESETS_DIR / "micro.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(src)
    assert load_preset(str(path)) == load_preset("micro")
    path.write_text(src.replace('name = "micro"\n', ""))
    assert load_preset(path).name == "mine"  # name defaults to the file's stem


def test_overrides_are_parsed_as_toml():
    p = load_preset("cpu-small", ["ga.n_males=6", "budget.early_iters=50", "space.n_layer.max=4",
                                  "ga.calibration=false", "ga.mutation_sigma=1", "seed=7",
                                  "space.n_embd.choices=[32, 64]", "description=plain words"])
    assert p.ga.n_males == 6 and p.budget.early_iters == 50 and p.space.n_layer.max == 4
    assert p.ga.calibration is False and p.ga.mutation_sigma == 1.0 and p.seed == 7
    assert p.space.n_embd.choices == (32, 64) and p.description == "plain words"
    q = load_preset("micro", ["space.n_embd.min=8", "space.n_embd.max=32", "space.n_embd.step=8"])
    assert q.space.n_embd.choices is None and q.space.n_embd.values() == (8, 16, 24, 32)


@pytest.mark.parametrize("overrides, pattern", [
    (["ga.n_mals=3"], r"--set ga.n_mals=3: unknown key ga.n_mals"),
    (["gaa.n_males=3"], r"unknown key gaa.n_males"),
    (["space.width.max=3"], r"unknown key space.width.max"),
    (["space.n_layer.mx=3"], r"unknown key space.n_layer.mx"),
    (["ga.n_males"], r"expected KEY=VALUE"),
    (["ga.n_males=six"], r"ga.n_males = 'six' must be an integer"),
    (["ga.n_males=6.5"], r"ga.n_males = 6.5 must be an integer"),
    (["ga.calibration=1"], r"ga.calibration = 1 must be true or false"),
    (["ga.mutation_sigma=true"], r"ga.mutation_sigma = True must be a finite number"),
    (["ga.mutation_sigma=inf"], r"must be a finite number"),
    (["seed=1.5"], r"seed = 1.5 must be an integer"),
    (["space.n_layer.min=5"], r"space.n_layer: empty range, min 5 > max 3"),
    (["space.n_head.choices=[]"], r"space.n_head.choices must be a non-empty list"),
    (["space.n_head.choices=[1.5]"], r"space.n_head.choices = 1.5 must be an integer"),
    (["space.n_layer.min=0"], r"space.n_layer must be >= 1"),
    (["space.dropout.max=1.0"], r"space.dropout must lie in \[0, 1\)"),
    (["space.learning_rate.min=0.0"], r"space.learning_rate must be > 0"),
    (["space.learning_rate.log=false"], r"space.learning_rate.log"),
    (["space.dropout.log=true"], r"space.dropout.log"),
    (["space.n_layer.step=2"], r"space.n_layer.step: only n_embd"),
    (["space.n_embd.min=8", "space.n_embd.max=32", "space.n_embd.step=0"], r"space.n_embd.step = 0 must be >= 1"),
    (["space.n_embd.min=8"], r"missing key space.n_embd.max"),
    (["space.n_head.choices=[4]", "space.n_embd.choices=[30, 50]", "reference.n_head=4",
      "reference.n_embd=30"], r"no n_embd in space.n_embd is a multiple"),
    (["budget.full_iters=400", "budget.early_iters=400"], r"budget.early_iters = 400 must be < budget.full_iters = 400"),
    (["budget.early_iters=45"], r"budget.early_iters = 45 must be a multiple of budget.eval_interval"),
    (["budget.early_iters=20"], r"budget.early_iters = 20 must be >= 3 \* budget.eval_interval"),
    (["budget.full_iters=405"], r"budget.full_iters = 405 must be a multiple"),
    (["budget.batch_size=0"], r"budget.batch_size = 0 must be >= 1"),
    (["budget.block_size=-1"], r"budget.block_size = -1 must be >= 1"),
    (["budget.warmup_iters=-1"], r"budget.warmup_iters = -1 must be >= 0"),
    (["budget.eval_timeout_s=-5"], r"budget.eval_timeout_s = -5.0 must be >= 0 \(0: derived from the budget\)"),
    (["budget.eval_timeout_s='long'"], r"budget.eval_timeout_s = 'long' must be a finite number"),
    (["budget.warmup_iters=400"], r"budget.warmup_iters = 400 must be < budget.full_iters"),
    (["ga.promote_k=17"], r"ga.promote_k = 17 must be in 0..ga.n_males \(16\)"),
    (["ga.n_males=1"], r"ga.n_males = 1 must be >= 2"),
    (["ga.n_females=0"], r"ga.n_females = 0 must be >= 2"),
    (["ga.male_elites=16"], r"ga.male_elites = 16 must be in 0..n_males-1"),
    (["ga.female_elites=-1"], r"ga.female_elites = -1"),
    (["ga.p_guided=1.5"], r"ga.p_guided = 1.5 must be a probability"),
    (["ga.mutation_sigma=0"], r"ga.mutation_sigma = 0.0 must be > 0"),
    (["ga.top_females=65"], r"ga.top_females = 65 must be in 1..ga.n_females"),
    (["ga.male_tournament=0"], r"ga.male_tournament = 0"),
    (["ga.parsimony_size=3"], r"ga.parsimony_size = 3.0 must be in \[1, 2\]"),
    (["ga.tree_max_depth=0"], r"ga.tree_max_depth = 0 must be >= 1"),
    (["ga.female_steps=0"], r"ga.female_steps = 0 must be >= 1"),
    (["reference.n_layer=9"], r"reference.n_layer = 9 is outside space.n_layer"),
    (["reference.n_embd=40"], r"reference.n_embd = 40 is outside space.n_embd \(one of \[32, 48, 64, 96\]\)"),
    (["reference.learning_rate=0.1"], r"reference.learning_rate = 0.1 is outside space.learning_rate"),
    (["space.n_head.choices=[1, 32]", "reference.n_head=32", "reference.n_embd=48"],
     r"reference.n_embd = 48 is not a multiple of reference.n_head = 32"),
    (["space.n_layer.max=100000", "space.n_embd.choices=[8192]", "reference.n_embd=8192"], r"GiB"),
])
def test_config_errors_are_one_line_naming_the_key(overrides, pattern):
    with pytest.raises(ConfigError) as err:
        load_preset("cpu-small", overrides)
    message = str(err.value)
    assert "\n" not in message and re.search(pattern, message), message


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown preset 'nope'; use one of .*cpu-small"):
        load_preset("nope")
    with pytest.raises(ConfigError, match=r"not found"):
        load_preset(str(tmp_path / "missing.toml"))
    bad = tmp_path / "bad.toml"
    bad.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML"):
        load_preset(str(bad))
    src = (PRESETS_DIR / "micro.toml").read_text()
    for edit, pattern in [
        ("extra = 1\n" + src, r"unknown key extra"),
        (src.replace("warmup_iters = 2", "warmup_iters = 2\nwarmup = 3"), r"unknown key budget.warmup;"),
        (src.replace("n_layer = { min = 1, max = 2 }", "").replace("n_head = { choices = [1, 2] }", "")
         .replace("n_embd = { choices = [8, 16, 32] }", "").replace("dropout = { min = 0.0, max = 0.1 }", "")
         .replace("learning_rate = { min = 1e-3, max = 1e-2, log = true }", ""), r"\[space\] names no gene"),
        (src.replace("n_layer = { min = 1, max = 2 }", "n_layer = 2"), r"space.n_layer must be a table"),
        (src.replace("n_layer = { min = 1, max = 2 }", "n_layer = { min = 1, max = 2, choices = [1] }"),
         r"either choices or min/max"),
        (src.replace("block_size = 16\n", ""), r"missing key budget.block_size; add it to \[budget\]"),
        (src.replace("learning_rate = 3e-3", ""), r"missing key reference.learning_rate"),
        (src.replace("depth = 5", "depth = 5\nnew_knob = 1"), r"unknown key ga.new_knob"),
    ]:
        bad.write_text(edit)
        with pytest.raises(ConfigError, match=pattern):
            load_preset(str(bad))


def test_ga_keys_have_defaults(tmp_path):
    src = (PRESETS_DIR / "micro.toml").read_text()
    head, tail = src.split("[ga]")
    path = tmp_path / "short.toml"
    path.write_text(head + "[ga]\nn_males = 4\nn_females = 8\n[reference]" + tail.split("[reference]")[1])
    p = load_preset(str(path))
    assert p.ga.n_males == 4 and p.ga.promote_k == 2 and p.ga.calibration is True


def test_preset_from_dict_refuses_what_load_refuses():
    d = preset_to_dict(load_preset("micro"))
    d["ga"]["promote_k"] = 99
    with pytest.raises(ConfigError, match="ga.promote_k = 99"):
        preset_from_dict(d)
    d = preset_to_dict(load_preset("micro"))
    d["budget"]["unknown"] = 1
    with pytest.raises(ConfigError, match="unknown key budget.unknown"):
        preset_from_dict(d)


def test_changed_config_compares_unequal():
    a = load_preset("micro")
    b = load_preset("micro", ["ga.mutation_sigma=0.3"])
    assert a != b and preset_to_dict(a) != preset_to_dict(b)
    assert replace(a, ga=replace(a.ga, mutation_sigma=0.3)) == b


def test_non_embedding_params_matches_nanogpt():
    assert non_embedding_params(4, 128, 65) == 795_904
    assert non_embedding_params(6, 384, 65) == 10_646_784


def test_memory_estimate_formula():
    b = load_preset("micro").budget  # batch 4, block 16
    arch = dict(n_layer=1, n_head=2, n_embd=16)
    params = non_embedding_params(1, 16, 65) + 16 * 16
    expected = 16 * params + 68 * 4 * 16 * 16 * 1 + 8 * 4 * 2 * 16 * 16 * 1 + 12 * 4 * 16 * 65
    assert estimate_memory_bytes(arch, b) == expected
    big = load_preset("shakespeare-char")
    assert 1 * 2**30 < estimate_memory_bytes(big.reference.as_dict(), big.budget) < MAX_MEMORY_BYTES


def test_override_into_a_value_that_is_not_a_table(tmp_path):
    src = (PRESETS_DIR / "micro.toml").read_text()
    path = tmp_path / "flat.toml"
    path.write_text("ga = 5\n" + src.replace("[ga]", "[unused]"))
    with pytest.raises(ConfigError, match=r"--set ga.n_males=3: ga is not a table"):
        load_preset(str(path), ["ga.n_males=3"])


def test_the_evaluation_time_limit_is_the_presets_or_derived_from_its_budget():
    micro, small, paper = (load_preset(n) for n in PRESETS)
    # derived: the floor plus the largest architecture's full run at a throughput far below any real one
    b = small.budget
    largest = {"n_layer": 3, "n_head": 4, "n_embd": 96}
    tokens = b.full_iters * b.batch_size * b.block_size
    eval_tokens = 2 * (b.full_iters // b.eval_interval + 1) * b.eval_batches * b.batch_size * b.block_size
    expected = EVAL_LIMIT_FLOOR_S + flops_per_token(largest, b.block_size) * (tokens + eval_tokens / 3) / 1e9
    assert eval_time_limit(small, "cpu") == pytest.approx(expected)
    assert 600 < eval_time_limit(small, "cpu") < 1200  # about 17 min for runs that take seconds
    assert eval_time_limit(paper, "cuda") < eval_time_limit(paper, "cpu")
    assert 3600 < eval_time_limit(paper, "cuda") < 6 * 3600  # the largest paper-scale run, bounded
    assert eval_time_limit(micro, "cuda:1") >= EVAL_LIMIT_FLOOR_S
    longer = load_preset("cpu-small", ["budget.full_iters=3000"])
    grown = eval_time_limit(longer, "cpu") - EVAL_LIMIT_FLOOR_S
    assert grown == pytest.approx(10 * (expected - EVAL_LIMIT_FLOOR_S), rel=0.02)  # ten times the steps
    # set in the preset: used as it is
    assert eval_time_limit(load_preset("micro", ["budget.eval_timeout_s=90"]), "cpu") == 90.0
    assert set(SLOWEST_FLOPS_PER_S) == {"cpu", "cuda"}


def test_flops_per_token_is_nanogpts_estimate():
    # nanoGPT's estimate_mfu: 6 N + 12 L H Q T with H Q = n_embd; N its non-embedding count
    arch = {"n_layer": 6, "n_head": 6, "n_embd": 384}
    assert flops_per_token(arch, 256) == 6 * non_embedding_params(6, 384) + 12 * 6 * 384 * 256
    assert flops_per_token(arch, 256) == 6 * 10_646_784 + 7_077_888  # the baby GPT: 10.65 M parameters


def test_a_gene_left_out_of_the_space_is_fixed_at_the_reference(tmp_path):
    from gpnas.search.males import decode, sample_genome, train_config_dict

    src = (PRESETS_DIR / "micro.toml").read_text().replace("n_layer = { min = 1, max = 2 }", "")
    path = tmp_path / "no_layers.toml"
    path.write_text(src)
    preset = load_preset(str(path))
    assert preset.space.names == ("n_head", "n_embd", "dropout", "learning_rate")
    genome = sample_genome(preset.space, random.Random(0))
    assert len(genome) == 4
    config = train_config_dict(decode(genome, preset.space), preset.budget, preset.reference.as_dict())
    assert config["n_layer"] == preset.reference.n_layer
    assert config["n_embd"] % config["n_head"] == 0
