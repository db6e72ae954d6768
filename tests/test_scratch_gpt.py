"""The from-scratch GPT: shapes, causality, both input kinds, config errors."""

import math

import pytest
import torch

from tvlib.scratch.gpt import GPT, GPTConfig


def token_model(**kw) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=11, n_layer=2, n_embd=32, n_head=2, block_size=16, **kw))


def test_token_model_shapes_and_blocks():
    model = token_model()
    ids = torch.randint(0, 11, (3, 7))
    assert model(input_ids=ids).shape == (3, 7, 11)
    assert len(model.blocks) == 2
    assert model.blocks[0](torch.randn(3, 7, 32)).shape == (3, 7, 32)


def test_causal_future_tokens_do_not_change_the_past():
    model = token_model()
    ids = torch.randint(0, 11, (2, 8))
    changed = ids.clone()
    changed[:, 5:] = (changed[:, 5:] + 1) % 11
    torch.testing.assert_close(model(input_ids=ids)[:, :5], model(input_ids=changed)[:, :5])


def test_full_attention_mask_equals_no_mask():
    model = token_model()
    ids = torch.randint(0, 11, (2, 6))
    torch.testing.assert_close(model(input_ids=ids), model(input_ids=ids, attention_mask=torch.ones(2, 6)))


def test_padding_mask_hides_masked_keys():
    model = token_model()
    ids = torch.randint(0, 11, (1, 6))
    other = ids.clone()
    other[0, 1] = (other[0, 1] + 3) % 11
    mask = torch.ones(1, 6)
    mask[0, 1] = 0
    a, b = model(input_ids=ids, attention_mask=mask), model(input_ids=other, attention_mask=mask)
    torch.testing.assert_close(a[:, 2:], b[:, 2:])


def test_continuous_model_uses_arrow_embedding():
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_dims=3, n_layer=2, n_embd=32, n_head=2, block_size=16))
    values = torch.randn(2, 5, 3)
    is_arrow = torch.zeros(2, 5, dtype=torch.bool)
    is_arrow[:, 1] = True
    out = model(values=values, is_arrow=is_arrow)
    assert out.shape == (2, 5, 1)
    values2 = values.clone()
    values2[:, 1] += 5.0  # the value under an arrow is ignored
    torch.testing.assert_close(out, model(values=values2, is_arrow=is_arrow))
    embeds = model.embed(values=values, is_arrow=is_arrow)
    torch.testing.assert_close(out, model(inputs_embeds=embeds))


@pytest.mark.parametrize("kw, match", [
    ({"vocab_size": 0, "n_dims": 0}, "exactly one"),
    ({"vocab_size": 5, "n_dims": 2}, "exactly one"),
    ({"vocab_size": 5, "n_embd": 30, "n_head": 4}, "divisible"),
    ({"vocab_size": 5, "n_layer": 0}, "n_layer"),
])
def test_bad_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        GPTConfig(**kw)


def test_wrong_inputs_and_too_long_sequences_are_rejected():
    model = token_model()
    with pytest.raises(ValueError, match="input_ids"):
        model(values=torch.randn(1, 2, 3), is_arrow=torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="block_size 16"):
        model(input_ids=torch.zeros(1, 17, dtype=torch.long))


def test_init_schemes_differ_where_documented():
    torch.manual_seed(0)
    gpt2 = GPT(GPTConfig(n_dims=2, n_embd=64, n_head=2, init="gpt2"))
    torch.manual_seed(0)
    default = GPT(GPTConfig(n_dims=2, n_embd=64, n_head=2, init="torch"))
    qkv = default.blocks[0].attn.qkv.weight
    assert abs(gpt2.blocks[0].attn.qkv.weight.std().item() - 0.02) < 0.002
    assert abs(qkv.std().item() - 1 / math.sqrt(3 * 64)) < 0.01  # uniform, bound 1/sqrt(fan_in)
    assert default.blocks[0].attn.qkv.bias.abs().sum() > 0  # PyTorch's default bias is not zero
    for model in (gpt2, default):  # embeddings and the arrow are N(0, 0.02^2) under both
        assert abs(model.wpe.weight.std().item() - 0.02) < 0.003
        assert abs(model.arrow.std().item() - 0.02) < 0.006


def test_bad_init_names_the_valid_ones():
    with pytest.raises(ValueError, match="unknown init 'xavier'.*gpt2, torch"):
        GPTConfig(vocab_size=5, init="xavier")
