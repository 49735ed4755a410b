import math

import pytest
import torch

from gpnas.train.model import GPT, GPTConfig, count_params

NANOGPT_SHAKESPEARE = GPTConfig(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, bias=False)
NANOGPT_CPU = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65)
TINY = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=20, dropout=0.1)


@pytest.mark.parametrize("config, expected", [(NANOGPT_SHAKESPEARE, 10_646_784), (NANOGPT_CPU, 795_904)])
def test_parameter_count_equals_nanogpt(config, expected):
    model = GPT(config)
    assert model.num_params() == count_params(config) == expected
    assert model.num_params(non_embedding=False) == expected + config.block_size * config.n_embd


def test_count_params_matches_the_built_model_with_bias():
    config = GPTConfig(n_layer=3, n_head=2, n_embd=48, block_size=32, vocab_size=30, bias=True)
    model = GPT(config)
    assert count_params(config) == model.num_params()
    assert count_params(config, non_embedding=False) == model.num_params(non_embedding=False)


def test_shapes_and_initial_loss_near_uniform():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(TINY.vocab_size, (3, TINY.block_size))
    logits, loss = model(idx, torch.randint(TINY.vocab_size, (3, TINY.block_size)))
    assert logits.shape == (3, TINY.block_size, TINY.vocab_size)
    assert abs(loss.item() - math.log(TINY.vocab_size)) < 0.1
    logits, loss = model(idx)
    assert logits.shape == (3, 1, TINY.vocab_size) and loss is None


def test_output_head_is_tied_and_residual_projections_are_scaled():
    torch.manual_seed(0)
    model = GPT(NANOGPT_CPU)
    assert model.lm_head.weight is model.transformer.wte.weight
    c_proj = torch.cat([b.attn.c_proj.weight.flatten() for b in model.transformer.h])
    assert c_proj.std().item() == pytest.approx(0.02 / math.sqrt(2 * NANOGPT_CPU.n_layer), rel=0.05)
    assert model.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_attention_is_causal():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(TINY.vocab_size, (1, 10))
    changed = idx.clone()
    changed[0, -1] = (idx[0, -1] + 1) % TINY.vocab_size
    a, _ = model(idx, idx)
    b, _ = model(changed, changed)
    assert torch.allclose(a[:, :-1], b[:, :-1])  # earlier positions never see later tokens
    assert not torch.allclose(a[:, -1], b[:, -1])


def test_generate_is_reproducible_and_crops_the_context():
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    start = torch.zeros((1, 1), dtype=torch.long)
    a = model.generate(start, 40, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    b = model.generate(start, 40, temperature=0.8, top_k=5, generator=torch.Generator().manual_seed(1))
    assert a.shape == (1, 41) and torch.equal(a, b)  # 41 > block_size 16: the context was cropped
    assert int(a.max()) < TINY.vocab_size


def test_sequences_longer_than_the_block_are_refused():
    with pytest.raises(ValueError, match="block_size"):
        GPT(TINY)(torch.zeros((1, TINY.block_size + 1), dtype=torch.long))
