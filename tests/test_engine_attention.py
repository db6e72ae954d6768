"""The attention-weights hook site and the saliency built on it, on tiny HF models and tvlib's GPT."""

from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from conftest import ARCHS, HF_ARCHS, VOCAB, WIDTH
from torch import Tensor, nn

from tvlib import engine

# Each architecture's attention output projection, inside a block: its input holds every head's
# A_h V_h side by side, so scaling head h's slice by (1 + eps) is the same as scaling A_h.
OUT_PROJ = {"llama": "self_attn.o_proj", "qwen2": "self_attn.o_proj", "gpt2": "attn.c_proj",
            "gpt_neox": "attention.dense", "tvlib_gpt": "attn.proj"}
ANSWER = 7  # the answer token whose cross-entropy is the loss


def ids(batch: int, length: int, seed: int = 0) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def loss_of(model: nn.Module, inputs: dict) -> Tensor:
    """Cross-entropy of ANSWER at the last position, summed over rows."""
    logits = engine.logits_of(model, inputs)[:, -1]
    return F.cross_entropy(logits, torch.full((logits.shape[0],), ANSWER), reduction="sum")


def implementation(model: nn.Module) -> str | None:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None)


def attention_hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def padded(model: nn.Module) -> dict:
    return engine.pad_left([[3, 4, 5, 6, 7, 8], [9, 10, 11]], pad_id=0,
                           position_ids=engine.accepts_position_ids(model))


# ----------------------------------------------------------------------------- weights


@pytest.mark.parametrize("arch", ARCHS)
def test_weights_are_causal_distributions(tiny_models, arch):
    model = tiny_models[arch]
    with torch.no_grad(), engine.attention_weights(model) as record:
        engine.logits_of(model, {"input_ids": ids(2, 6)})
    weights = record.weights
    heads = 2 if arch == "tvlib_gpt" else 4
    assert weights.shape == (3, 2, heads, 6, 6)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 2, heads, 6))
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    assert weights[..., ~causal].eq(0).all() and weights[..., causal].gt(0).all()


@pytest.mark.parametrize("arch", HF_ARCHS)
@pytest.mark.parametrize("pad", [False, True])
def test_weights_equal_hf_output_attentions(tiny_models, arch, pad):
    model = tiny_models[arch]
    inputs = padded(model) if pad else {"input_ids": ids(2, 6)}
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    with torch.no_grad():
        expected = torch.stack(eager(**inputs, output_attentions=True).attentions)
        with engine.attention_weights(model) as record:
            model(**inputs)
    assert torch.equal(record.weights, expected)


def gpt_reference(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None = None
                  ) -> tuple[Tensor, list[Tensor]]:
    """tvlib's GPT by hand: logits through the fused kernel as before the hook site existed, and
    each layer's attention probabilities from q k^T / sqrt(d) with an additive causal mask."""
    B, T = input_ids.shape
    x = model.wte(input_ids) + model.wpe(torch.arange(T))
    mask = None
    if attention_mask is not None:
        mask = torch.ones(T, T, dtype=torch.bool).tril() & attention_mask.bool()[:, None, None, :]
        mask = mask | torch.eye(T, dtype=torch.bool)
    bias = torch.zeros(T, T).masked_fill(~torch.ones(T, T, dtype=torch.bool).tril(), -math.inf) \
        if mask is None else torch.zeros(mask.shape).masked_fill(~mask, -math.inf)
    probabilities = []
    for block in model.blocks:
        attn, C, n_head = block.attn, x.shape[-1], block.attn.n_head
        q, k, v = attn.qkv(block.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, n_head, C // n_head).transpose(1, 2) for t in (q, k, v))
        probabilities.append(torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(C // n_head) + bias, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        x = x + attn.proj(y.transpose(1, 2).reshape(B, T, C))
        x = x + block.mlp(block.ln_2(x))
    return model.head(model.ln_f(x)), probabilities


@pytest.mark.parametrize("pad", [False, True])
def test_gpt_default_forward_is_bitwise_the_fused_one_and_weights_match_a_hand_computation(tiny_models, pad):
    model = tiny_models["tvlib_gpt"]
    inputs = padded(model) if pad else {"input_ids": ids(2, 6)}
    with torch.no_grad():
        expected_logits, expected_weights = gpt_reference(model, inputs["input_ids"], inputs.get("attention_mask"))
        default = model(**inputs)
        with engine.attention_weights(model) as record:
            explicit = model(**inputs)
    assert torch.equal(default, expected_logits)
    torch.testing.assert_close(record.weights, torch.stack(expected_weights))
    torch.testing.assert_close(explicit, default)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("arch", ARCHS)
def test_per_head_gradient_equals_finite_differences(tiny_models, arch):
    """sum_ij A_h * dL/dA_h = dL/d eps of A_h -> (1 + eps) A_h, checked through the output projection."""
    model = copy.deepcopy(tiny_models[arch]).double()
    inputs = {"input_ids": ids(2, 6)}
    with engine.attention_weights(model) as record:
        loss = loss_of(model, inputs)
    loss.backward()
    autograd = (record.weights * record.grads).detach().sum(dim=(1, 3, 4))  # [L, H]

    eps = 1e-2
    n_head = autograd.shape[1]
    numeric = torch.zeros_like(autograd)
    for layer, block in enumerate(engine.find_blocks(model)):
        proj = block.get_submodule(OUT_PROJ[arch])
        for head in range(n_head):
            values = []
            for factor in (1 + eps, 1 - eps):
                def scale(module, args, factor=factor, head=head):
                    y = args[0].clone()
                    width = y.shape[-1] // n_head
                    y[..., head * width:(head + 1) * width] *= factor
                    return (y,)

                handle = proj.register_forward_pre_hook(scale)
                try:
                    with torch.no_grad():
                        values.append(loss_of(model, inputs))
                finally:
                    handle.remove()
            numeric[layer, head] = (values[0] - values[1]) / (2 * eps)
    # Llama and Qwen2 run RMSNorm and softmax in float32 even in a float64 model, hence eps and atol.
    torch.testing.assert_close(autograd, numeric, rtol=0, atol=1e-4 * numeric.abs().max().item())
    assert autograd.abs().min() > 1e-6  # every head matters, so the check is not vacuous


def test_gpt_entrywise_gradient_equals_finite_differences_through_the_site(tiny_models):
    """dL/dA[l, b, h, i, j] against central differences of L with A + eps E injected at the site."""
    model = copy.deepcopy(tiny_models["tvlib_gpt"]).double()
    inputs = {"input_ids": ids(2, 6)}
    with engine.attention_weights(model) as record:
        loss = loss_of(model, inputs)
    loss.backward()
    grads = record.grads
    entries = [(0, 0, 0, 3, 1), (1, 1, 1, 5, 5), (2, 0, 1, 4, 0), (2, 1, 0, 5, 2), (1, 0, 1, 2, 4)]
    eps = 1e-5
    for layer, row, head, i, j in entries:
        values = []
        for sign in (1, -1):
            def nudge(module, args, output, sign=sign):
                output = output.clone()
                output[row, head, i, j] += sign * eps
                return output

            handle = model.blocks[layer].attn.pattern.register_forward_hook(nudge)
            try:
                with torch.no_grad(), engine.attention_weights(model):
                    values.append(loss_of(model, inputs))
            finally:
                handle.remove()
        numeric = (values[0] - values[1]) / (2 * eps)
        torch.testing.assert_close(grads[layer, row, head, i, j], numeric, rtol=1e-6, atol=1e-10)


def test_grads_without_backward_is_an_error(tiny_models):
    model = tiny_models["llama"]
    with torch.no_grad(), engine.attention_weights(model) as record:
        model(input_ids=ids(1, 4))
    with pytest.raises(RuntimeError, match=r"no gradient reached .* layer\(s\) \[0, 1, 2\] of LlamaForCausalLM"):
        record.grads


# ----------------------------------------------------------------------------- restoring the model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("fail", [False, True])
def test_model_restored_after_exit_and_after_an_error(tiny_models, arch, fail):
    model = tiny_models[arch]
    inputs = {"input_ids": ids(2, 5)}
    with torch.no_grad():
        before = engine.logits_of(model, inputs)
    implementation_before, hooks_before = implementation(model), attention_hooks(model)
    with pytest.raises(KeyError) if fail else contextlib.nullcontext():
        with torch.no_grad(), engine.attention_weights(model):
            model(**inputs)
            assert implementation(model) in (None, "eager")
            assert not any(m.fused for m in model.modules() if hasattr(m, "fused"))
            if fail:
                raise KeyError("boom")
    assert implementation(model) == implementation_before
    assert attention_hooks(model) == hooks_before
    assert all(m.fused for m in model.modules() if hasattr(m, "fused"))
    with torch.no_grad():
        assert torch.equal(engine.logits_of(model, inputs), before)


# ----------------------------------------------------------------------------- loud errors


class Plain(nn.Module):
    """A decoder-shaped model whose blocks have no attention site."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.layers = nn.ModuleList([nn.Linear(WIDTH, WIDTH) for _ in range(3)])

    def forward(self, input_ids: Tensor) -> Tensor:
        x = self.emb(input_ids)
        for layer in self.layers:
            x = layer(x)
        return x


def test_model_without_a_site_is_an_error():
    with pytest.raises(ValueError, match=r"Plain cannot provide attention weights.*_can_record_outputs"):
        with engine.attention_weights(Plain()):
            pass


def test_layers_without_weights_are_an_error(tiny_models):
    model = tiny_models["tvlib_gpt"]
    with pytest.raises(RuntimeError, match=r"no attention weights for layer\(s\) \[0, 1, 2\] of GPT"):
        with engine.attention_weights(model):
            pass
    x = torch.zeros(1, 4, WIDTH)
    with pytest.raises(RuntimeError, match=r"layer\(s\) \[1, 2\] of GPT"):
        with torch.no_grad(), engine.attention_weights(model):
            model.blocks[0](x)
    assert all(block.attn.fused for block in model.blocks)


def test_attention_that_returns_no_weights_is_an_error(tiny_models):
    model = tiny_models["llama"]
    with pytest.raises(RuntimeError, match=r"attention of block 0 of LlamaForCausalLM \(LlamaAttention\) "
                                           r"returned no weights"):
        with torch.no_grad(), engine.attention_weights(model):
            model.config._attn_implementation_internal = "sdpa"  # as a model ignoring the switch would
            model(input_ids=ids(1, 4))
    assert implementation(model) == "sdpa"


def test_model_that_cannot_switch_to_eager_is_an_error(tiny_models, monkeypatch):
    model = tiny_models["qwen2"]
    monkeypatch.setattr(model, "set_attn_implementation", lambda implementation: None)
    with pytest.raises(ValueError, match=r"Qwen2ForCausalLM cannot switch to eager attention \(it stays 'sdpa'\)"):
        with engine.attention_weights(model):
            pass


# ----------------------------------------------------------------------------- saliency


@pytest.mark.parametrize("arch", ["tvlib_gpt", "llama", "gpt2"])
@pytest.mark.parametrize("head_sum", engine.HEAD_SUMS)
def test_saliency_is_the_product_summed_over_heads(tiny_models, arch, head_sum):
    model = tiny_models[arch]
    inputs = {"input_ids": ids(3, 6)}
    answers = torch.tensor([ANSWER, 2, 11])
    positions = torch.tensor([-1, 4, -1])
    grads_before = [None if p.grad is None else p.grad.clone() for p in model.parameters()]
    maps = engine.saliency(model, inputs, answers, positions, head_sum=head_sum)
    assert maps.shape == (3, 3, 6, 6)
    for p, before in zip(model.parameters(), grads_before):  # the model's gradients are left alone
        assert (p.grad is None) if before is None else torch.equal(p.grad, before)

    with engine.attention_weights(model) as record:
        logits = engine.logits_of(model, inputs)
    picked = logits[torch.arange(3), positions]
    torch.autograd.backward(F.cross_entropy(picked, answers, reduction="sum"), inputs=record.layers)
    product = record.weights.detach() * record.grads
    expected = product.abs().sum(2) if head_sum == "abs_sum" else product.sum(2).abs()
    torch.testing.assert_close(maps, expected)
    assert maps.triu(1).eq(0).all() and maps.sum() > 0


@pytest.mark.parametrize("arch", ["tvlib_gpt", "qwen2"])
def test_saliency_one_row_at_a_time_equals_the_whole_batch(tiny_models, arch):
    model = tiny_models[arch]
    inputs = padded(model)
    answers = torch.tensor([ANSWER, 3])
    whole = engine.saliency(model, inputs, answers)
    torch.testing.assert_close(engine.saliency(model, inputs, answers, batch_size=1), whole)
    assert not torch.equal(whole[:, 0], whole[:, 1])


def test_both_head_sums_from_one_pass_equal_two_calls(tiny_models):
    model = tiny_models["llama"]
    inputs, answers = {"input_ids": ids(3, 6)}, torch.tensor([ANSWER, 2, 11])
    both = engine.saliency_by_head_sum(model, inputs, answers, batch_size=2)
    assert sorted(both) == sorted(engine.HEAD_SUMS)
    for how, maps in both.items():
        torch.testing.assert_close(maps, engine.saliency(model, inputs, answers, head_sum=how))
    assert not torch.allclose(both["abs_sum"], both["sum_abs"])  # two heads that disagree in sign somewhere
    with pytest.raises(ValueError, match=r"head_sum 'max' is not one of abs_sum, sum_abs"):
        engine.saliency_by_head_sum(model, inputs, answers, head_sums=("abs_sum", "max"))


def test_saliency_rejects_bad_input(tiny_models):
    model = tiny_models["tvlib_gpt"]
    inputs = {"input_ids": ids(2, 4)}
    with pytest.raises(ValueError, match=r"head_sum 'max' is not one of abs_sum, sum_abs"):
        engine.saliency(model, inputs, torch.tensor([1, 2]), head_sum="max")
    with pytest.raises(ValueError, match=r"positions must have shape \[2\]"):
        engine.saliency(model, inputs, torch.tensor([1, 2]), torch.tensor([-1]))
