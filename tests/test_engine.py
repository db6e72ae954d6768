"""The task-vector engine on tiny Llama, GPT-2, GPT-NeoX, Qwen2 and tvlib GPT models."""

from __future__ import annotations

import pytest
import torch
from conftest import ARCHS, HF_ARCHS, VOCAB, WIDTH
from torch import Tensor, nn

from tvlib import engine
from tvlib.engine import sweep as sweep_module


def ids(batch: int, length: int, seed: int = 0) -> Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def vectors(*shape: int, seed: int = 1) -> Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def padded_batch(model: nn.Module, lengths=(6, 3, 5)) -> tuple[dict, list[Tensor]]:
    """Left-padded inputs for prompts of different lengths, and the prompts themselves."""
    prompts = [ids(1, n, seed=n)[0] for n in lengths]
    inputs = engine.pad_left([p.tolist() for p in prompts], pad_id=0,
                             position_ids=engine.accepts_position_ids(model))
    return inputs, prompts


def hook_count(model: nn.Module) -> int:
    """Forward hooks on the blocks (transformers may keep its own, e.g. for output_hidden_states)."""
    return sum(len(block._forward_hooks) for block in engine.find_blocks(model))


def last_logits(model: nn.Module, inputs: dict) -> Tensor:
    with torch.no_grad():
        return engine.logits_of(model, inputs)[:, -1]


class TupleBlock(nn.Module):
    """A block that returns a tuple (hidden, extra), as older transformers blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(WIDTH, WIDTH)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x + torch.tanh(self.lin(x)), x.sum()


class TupleModel(nn.Module):
    """Embedding, three tuple-returning blocks (each with an inner 2-list as a decoy), a head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(VOCAB, WIDTH)
        self.decoy = nn.ModuleList([nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)])
        self.layers = nn.ModuleList([TupleBlock() for _ in range(3)])
        self.head = nn.Linear(WIDTH, VOCAB)

    def forward(self, input_ids: Tensor) -> Tensor:
        x = self.emb(input_ids)
        for layer in self.layers:
            x = layer(x)[0]
        return self.head(x)


# ----------------------------------------------------------------------------- blocks


@pytest.mark.parametrize("arch", ARCHS)
def test_find_blocks_returns_the_decoder_layers(tiny_models, arch):
    model = tiny_models[arch]
    blocks = engine.find_blocks(model)
    assert engine.num_layers(model) == 3
    assert "Attention" not in type(blocks[0]).__name__ and len({type(b) for b in blocks}) == 1


def test_find_blocks_prefers_the_longest_list_and_errors_without_one():
    model = TupleModel()
    assert engine.find_blocks(model) is model.layers
    with pytest.raises(ValueError, match="no decoder blocks in Linear"):
        engine.find_blocks(nn.Linear(2, 2))


# ----------------------------------------------------------------------------- extract / capture


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_extract_equals_hf_hidden_states(tiny_models, arch):
    model, x = tiny_models[arch], ids(2, 6)
    states = engine.extract(model, {"input_ids": x}, torch.tensor([-1, 2]))
    with torch.no_grad():
        hidden = model(input_ids=x, output_hidden_states=True).hidden_states
    assert states.shape == (3, 2, WIDTH)
    # hidden_states[l + 1] is block l's output, except the last one, which HF normalises.
    for layer in range(2):
        torch.testing.assert_close(states[layer, 0], hidden[layer + 1][0, -1], rtol=0, atol=0)
        torch.testing.assert_close(states[layer, 1], hidden[layer + 1][1, 2], rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
def test_extract_many_positions_matches_single(tiny_models, arch):
    model, inputs = tiny_models[arch], {"input_ids": ids(3, 5)}
    many = engine.extract(model, inputs, torch.tensor([[0, -1], [1, 4], [3, 2]]))
    assert many.shape == (engine.num_layers(model), 3, 2, WIDTH)
    for p, column in enumerate(([0, 1, 3], [-1, 4, 2])):
        torch.testing.assert_close(many[:, :, p], engine.extract(model, inputs, torch.tensor(column)))


@pytest.mark.parametrize("arch", ARCHS)
def test_extract_up_to_a_layer_equals_the_full_extract_and_skips_the_rest(tiny_models, arch):
    model, inputs = tiny_models[arch], {"input_ids": ids(3, 5)}
    full = engine.extract(model, inputs, torch.tensor([-1, 2, 0]))
    ran = []
    blocks = engine.find_blocks(model)
    hooks_before = [dict(b._forward_hooks) for b in blocks]
    handles = [b.register_forward_hook(lambda m, a, o, i=i: ran.append(i)) for i, b in enumerate(blocks)]
    try:
        part = engine.extract(model, inputs, torch.tensor([-1, 2, 0]), up_to=1)
    finally:
        for h in handles:
            h.remove()
    assert ran == [0, 1]  # the blocks after up_to never ran
    torch.testing.assert_close(part, full[:2], rtol=0, atol=0)
    assert [dict(b._forward_hooks) for b in blocks] == hooks_before  # the stop hook is gone
    torch.testing.assert_close(engine.extract(model, inputs, torch.tensor([-1, 2, 0])), full)
    with pytest.raises(IndexError, match=r"up_to=3 is out of range: valid are 0..2"):
        engine.extract(model, inputs, torch.tensor([-1, 2, 0]), up_to=3)


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_extract_continuations_equals_extract_on_the_whole_ids(tiny_models, arch):
    model, prefix = tiny_models[arch], ids(3, 5)
    continuations = [ids(3, 2, seed=1), ids(3, 2, seed=2), ids(3, 3, seed=3)]
    got = engine.extract_continuations(model, prefix, continuations, layer=1)
    assert got.shape == (3, 3, WIDTH)
    for c, cont in enumerate(continuations):
        whole = engine.extract(model, {"input_ids": torch.cat([prefix, cont], 1)}, torch.full((3,), -1))
        torch.testing.assert_close(got[c], whole[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="the same B"):
        engine.extract_continuations(model, prefix, [ids(2, 2)], layer=1)


def test_capture_keeps_autograd_and_tuple_outputs():
    model = TupleModel()
    emb = model.emb(ids(2, 4)).detach().requires_grad_()

    def forward(input_ids: Tensor | None = None, inputs_embeds: Tensor | None = None) -> Tensor:
        x = inputs_embeds
        for layer in model.layers:
            x = layer(x)[0]
        return model.head(x)

    with engine.capture(model, torch.tensor([-1, -1])) as record:
        forward(inputs_embeds=emb)
    assert record.states.shape == (3, 2, WIDTH)
    record.states[1].sum().backward()
    assert emb.grad is not None and emb.grad.abs().sum() > 0


def test_capture_without_forward_is_an_error(tiny_models):
    with engine.capture(tiny_models["llama"], torch.tensor([-1])) as record:
        pass
    with pytest.raises(RuntimeError, match="no forward pass"):
        record.states


# ----------------------------------------------------------------------------- inject


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("mode", engine.MODES)
def test_inject_writes_exactly_the_chosen_site(tiny_models, arch, mode):
    model, inputs = tiny_models[arch], {"input_ids": ids(2, 5)}
    layer, where = 1, torch.tensor([3, -1])
    v = vectors(2, WIDTH)
    everywhere = torch.arange(5).repeat(2, 1)
    clean = engine.extract(model, inputs, everywhere)
    with engine.inject(model, layer, where, v, mode=mode):
        hit = engine.extract(model, inputs, everywhere)
    expected = v if mode == "replace" else clean[layer, [0, 1], [3, 4]] + v
    torch.testing.assert_close(hit[layer, [0, 1], [3, 4]], expected)
    torch.testing.assert_close(hit[:layer], clean[:layer], rtol=0, atol=0)  # earlier layers untouched
    torch.testing.assert_close(hit[layer, 0, :3], clean[layer, 0, :3], rtol=0, atol=0)  # causal
    assert not torch.allclose(hit[layer + 1:], clean[layer + 1:])  # and it propagates


@pytest.mark.parametrize("arch", ARCHS)
def test_inject_many_positions_one_vector_each(tiny_models, arch):
    """TaskV-M: several positions per row, one vector each."""
    model, inputs = tiny_models[arch], {"input_ids": ids(2, 6)}
    where = torch.tensor([[1, 3, -1], [0, 2, 4]])
    v = vectors(2, 3, WIDTH)
    with engine.inject(model, 0, where, v):
        hit = engine.extract(model, inputs, where)
    torch.testing.assert_close(hit[0], v)


@pytest.mark.parametrize("arch", ARCHS)
def test_inject_per_row_layers(tiny_models, arch):
    model, inputs = tiny_models[arch], {"input_ids": ids(3, 5)}
    v, last = vectors(3, WIDTH), torch.tensor([-1, -1, -1])
    with engine.inject(model, torch.tensor([0, -1, 1]), last, v):
        mixed = last_logits(model, inputs)
    torch.testing.assert_close(mixed[1], last_logits(model, inputs)[1])  # -1: no injection
    for row, layer in ((0, 0), (2, 1)):
        with engine.inject(model, layer, last, v):
            torch.testing.assert_close(mixed[row], last_logits(model, inputs)[row])


@pytest.mark.parametrize("arch", ["llama", "tvlib_gpt"])
def test_inject_gradient_flows_into_the_vector(tiny_models, arch):
    model = tiny_models[arch]
    v = vectors(WIDTH).requires_grad_()
    with engine.inject(model, 0, torch.tensor([-1, -1]), v, mode="add"):
        engine.logits_of(model, {"input_ids": ids(2, 4)})[:, -1].logsumexp(-1).sum().backward()
    assert v.grad is not None and torch.isfinite(v.grad).all() and v.grad.abs().sum() > 0


def test_inject_rejects_bad_requests(tiny_models):
    model, inputs, last = tiny_models["llama"], {"input_ids": ids(2, 4)}, torch.tensor([-1, -1])
    hooks = hook_count(model)
    cases = [
        (dict(layers=3), IndexError, r"layer 3 is out of range: valid are 0..2"),
        (dict(layers=torch.tensor([0, -2])), IndexError, r"layer -2 is out of range"),
        (dict(positions=torch.tensor([4, 0])), IndexError, r"position 4 is out of range for sequence length 4"),
        (dict(positions=torch.tensor([-5, 0])), IndexError, r"position -5"),
        (dict(vectors=vectors(2, WIDTH + 1)), ValueError, r"width 33 but the residual stream .* width 32"),
        (dict(vectors=vectors(3, WIDTH)), ValueError, r"do not match positions"),
        (dict(positions=torch.tensor([-1, 0, 1]), vectors=vectors(WIDTH)), ValueError, r"positions are given for 3 rows .* has 2"),
        (dict(positions=torch.tensor([[3, -1], [0, 1]]), vectors=vectors(2, 2, WIDTH)), ValueError, "twice"),
        (dict(mode="scale"), ValueError, r"mode 'scale' is not one of replace, add"),
    ]
    for change, error, message in cases:
        request = dict(layers=0, positions=last, vectors=vectors(2, WIDTH), mode="replace") | change
        with pytest.raises(error, match=message):
            with engine.inject(model, **request):
                last_logits(model, inputs)
        assert hook_count(model) == hooks


def test_inject_that_never_fires_is_an_error(tiny_models):
    with pytest.raises(RuntimeError, match=r"injection at layer\(s\) \[2\] never happened"):
        with engine.inject(tiny_models["qwen2"], 2, torch.tensor([-1]), vectors(WIDTH)):
            pass


@pytest.mark.parametrize("arch", ARCHS)
def test_hooks_are_removed_and_outputs_bitwise_unchanged(tiny_models, arch):
    model, inputs = tiny_models[arch], {"input_ids": ids(2, 5)}
    before, hooks = last_logits(model, inputs), hook_count(model)
    with pytest.raises(KeyError):
        with engine.inject(model, 0, torch.tensor([-1, -1]), vectors(WIDTH)), \
                engine.capture(model, torch.tensor([0, 1])):
            last_logits(model, inputs)
            raise KeyError("boom")
    assert hook_count(model) == hooks
    assert torch.equal(last_logits(model, inputs), before)


# ----------------------------------------------------------------------------- padding


def test_pad_left_counts_real_tokens_only():
    out = engine.pad_left([[5, 6, 7], [8]], pad_id=0)
    assert out["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert out["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert out["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert "position_ids" not in engine.pad_left([[1]], pad_id=0, position_ids=False)
    with pytest.raises(ValueError, match="no empty sequences"):
        engine.pad_left([[1], []], pad_id=0)


def test_encode_pads_a_real_tokenizer_left(tiny_models):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = Tokenizer(models.WordLevel({"<pad>": 0, "<unk>": 1, "a": 2, "b": 3, "->": 4}, unk_token="<unk>"))
    words.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=words, pad_token="<pad>")
    out = engine.encode(tokenizer, ["a -> b", "b ->"], model=tiny_models["gpt2"])
    assert out["input_ids"].tolist() == [[2, 4, 3], [0, 3, 4]]
    assert out["position_ids"].tolist() == [[0, 1, 2], [0, 0, 1]]
    assert "position_ids" not in engine.encode(tokenizer, ["a"], model=tiny_models["tvlib_gpt"])
    with pytest.raises(TypeError, match="single string"):
        engine.encode(tokenizer, "a b")


@pytest.mark.parametrize("arch", HF_ARCHS)
def test_left_padded_batch_equals_prompts_alone(tiny_models, arch):
    model = tiny_models[arch]
    inputs, prompts = padded_batch(model)
    batched = last_logits(model, inputs)
    states = engine.extract(model, inputs, torch.tensor([-1, -1, -1]))
    v = vectors(3, WIDTH)
    with engine.inject(model, 1, torch.tensor([-1, -1, -1]), v):
        injected = last_logits(model, inputs)
    for row, prompt in enumerate(prompts):
        alone = {"input_ids": prompt[None]}
        torch.testing.assert_close(batched[row], last_logits(model, alone)[0], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(states[:, row], engine.extract(model, alone, torch.tensor([-1]))[:, 0],
                                   rtol=1e-5, atol=1e-5)
        with engine.inject(model, 1, torch.tensor([-1]), v[row:row + 1]):
            torch.testing.assert_close(injected[row], last_logits(model, alone)[0], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- layer sweep


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize(("mode", "per_layer"), [("replace", True), ("add", False)])
def test_layer_sweep_equals_the_per_layer_loop(tiny_models, arch, mode, per_layer):
    model = tiny_models[arch]
    inputs, _ = padded_batch(model, lengths=(6, 3, 5, 4, 6))
    last, v = torch.full((5,), -1), vectors(*((3,) if per_layer else ()), 5, WIDTH)
    loop = engine.layer_sweep_loop(model, inputs, last, v, mode=mode, per_layer=per_layer)
    assert loop.shape == (engine.num_layers(model), 5, VOCAB)
    with engine.inject(model, 2, last, v[2] if per_layer else v, mode):
        torch.testing.assert_close(loop[2], last_logits(model, inputs))  # layer l gets its own vectors
    paths = [dict(method="repeated", rows_per_pass=4)]  # chunks of 2 prompts (3 layers): uneven split
    if arch in HF_ARCHS:
        paths += [dict(method="cached", rows_per_pass=4), dict(method="auto", rows_per_pass=4)]
    for path in paths:
        sweep = engine.layer_sweep(model, inputs, last, v, mode=mode, per_layer=per_layer, **path)
        torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
        assert torch.equal(sweep.argmax(-1), loop.argmax(-1))


def test_layer_sweep_many_positions_on_a_non_hf_model_repeats(tiny_models):
    model, inputs = tiny_models["tvlib_gpt"], {"input_ids": ids(2, 5)}
    where, v = torch.tensor([[1, -1], [2, 3]]), vectors(2, 2, WIDTH)
    loop = engine.layer_sweep_loop(model, inputs, where, v)
    torch.testing.assert_close(engine.layer_sweep(model, inputs, where, v), loop, rtol=1e-5, atol=1e-5)
    for method in ("cached", "truncated"):
        with pytest.raises(ValueError, match=f"method='{method}' needs a Hugging Face model"):
            engine.layer_sweep(model, inputs, where, v, method=method)
    with pytest.raises(ValueError, match="leading axis of 3 layers"):
        engine.layer_sweep(model, inputs, where, v, per_layer=True)


def test_layer_sweep_injecting_at_the_first_token_repeats(tiny_models):
    model, inputs = tiny_models["llama"], {"input_ids": ids(2, 5)}
    where, v = torch.tensor([[0, -1], [2, 3]]), vectors(2, 2, WIDTH)
    loop = engine.layer_sweep_loop(model, inputs, where, v)
    torch.testing.assert_close(engine.layer_sweep(model, inputs, where, v), loop, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="needs at least one token before the first injected position"):
        engine.layer_sweep(model, inputs, where, v, method="cached")


# ----------------------------------------------------------------------------- truncated sweep

TRUNCATABLE = ("llama", "qwen2", "gpt_neox")


def decoder_parent(model: nn.Module) -> tuple[nn.Module, str]:
    """The module and attribute name holding the decoder ModuleList."""
    blocks = engine.find_blocks(model)
    return next((parent, name) for parent in model.modules() for name, child in parent.named_children()
                if child is blocks)


@pytest.mark.parametrize("arch", TRUNCATABLE)
@pytest.mark.parametrize("per_layer", [True, False])
def test_truncated_sweep_equals_the_loop(tiny_models, arch, per_layer, monkeypatch):
    model = tiny_models[arch]
    assert engine.supports_truncation(model)
    inputs, _ = padded_batch(model, lengths=(6, 3, 5, 4, 6))  # left padding
    last, v = torch.full((5,), -1), vectors(*((3,) if per_layer else ()), 5, WIDTH, seed=7) * 3
    loop = engine.layer_sweep_loop(model, inputs, last, v, per_layer=per_layer)
    # rows_per_pass 2: chunks 2+2+1, one layer per forward (the last layer alone is hooked, not an
    # empty stack); 4: chunks 4+1, the lone prompt's three layers in one group (truncated at layer 0,
    # layers 1 and 2 hooked); 256: one chunk, one group.
    for rows_per_pass in (2, 4, 256):
        sweep = engine.layer_sweep(model, inputs, last, v, per_layer=per_layer, rows_per_pass=rows_per_pass,
                                   method="truncated")
        torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
        assert torch.equal(sweep.argmax(-1), loop.argmax(-1))
    # "auto" takes the truncated path here, and the model is checked already: no hook-based group.
    calls = record_groups(monkeypatch)
    torch.testing.assert_close(engine.layer_sweep(model, inputs, last, v, per_layer=per_layer), loop,
                               rtol=1e-5, atol=1e-5)
    assert calls == [("truncated", 5, [0, 1, 2])]


def record_groups(monkeypatch) -> list[tuple[str, int, list[int]]]:
    """Record ("truncated" or "hooked", prompts, layers) of every group forward the sweep runs."""
    calls, truncated, hooked = [], sweep_module._truncated_group, sweep_module._hooked_group

    def recording_truncated(model, step, layers, vecs, clean):
        calls.append(("truncated", vecs.shape[0], list(layers)))
        return truncated(model, step, layers, vecs, clean)

    def recording_hooked(model, step, layers, vecs, mode):
        calls.append(("hooked", vecs.shape[0], list(layers)))
        return hooked(model, step, layers, vecs, mode)

    monkeypatch.setattr(sweep_module, "_truncated_group", recording_truncated)
    monkeypatch.setattr(sweep_module, "_hooked_group", recording_hooked)
    return calls


@pytest.mark.parametrize("arch", TRUNCATABLE + ("gpt2",))
@pytest.mark.parametrize("per_layer", [False, True])
def test_sweep_at_several_positions_equals_the_loop(arch, per_layer):
    """TaskV-M: vectors at several positions per row; the prefix before the first is shared."""
    from conftest import build_tiny

    model = build_tiny(arch)  # fresh: the "span" check runs on this sweep's own rows
    inputs, _ = padded_batch(model, lengths=(6, 3, 5, 4, 6))
    where = torch.tensor([[-3, -2, -1], [-3, -2, -1], [-4, -3, -1], [-3, -2, -1], [-5, -3, -1]])
    v = vectors(*((3,) if per_layer else ()), 5, 3, WIDTH, seed=9) * 3
    loop = engine.layer_sweep_loop(model, inputs, where, v, per_layer=per_layer)
    for method, rows_per_pass in (("auto", 4), ("auto", 256), ("cached", 4), ("repeated", 256)):
        sweep = engine.layer_sweep(model, inputs, where, v, per_layer=per_layer, rows_per_pass=rows_per_pass,
                                   method=method)
        torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
        assert torch.equal(sweep.argmax(-1), loop.argmax(-1))
    ok, reason = engine.truncation_verdict(model, kind="span")
    assert ok == (arch != "gpt2"), reason
    assert engine.truncation_verdict(model) is None  # the last-position check is a separate verdict


def test_truncated_span_sweep_runs_each_layer_from_its_own_block(monkeypatch):
    """Several positions (TaskV-M): a group would run its later layers' rows from its first block,
    so every layer gets its own truncated forward, whatever rows_per_pass allows."""
    from conftest import build_tiny

    model = build_tiny(TRUNCATABLE[0])
    inputs, _ = padded_batch(model, lengths=(6, 5))
    where = torch.tensor([[-3, -1], [-3, -1]])
    v = vectors(3, 2, 2, WIDTH, seed=4)
    engine.layer_sweep(model, inputs, where, v, per_layer=True)  # first use: checks itself
    calls = record_groups(monkeypatch)
    out = engine.layer_sweep(model, inputs, where, v, per_layer=True, rows_per_pass=256)
    assert calls == [("truncated", 2, [0]), ("truncated", 2, [1]), ("truncated", 2, [2])]
    torch.testing.assert_close(out, engine.layer_sweep_loop(model, inputs, where, v, per_layer=True),
                               rtol=1e-5, atol=1e-5)


def test_first_truncated_sweep_checks_a_sample_of_its_own_rows(monkeypatch):
    from conftest import build_tiny

    model = build_tiny("llama")  # a fresh model: verdicts are remembered per model object
    inputs, _ = padded_batch(model, lengths=(6, 3, 5, 4, 6))
    last, v = torch.full((5,), -1), vectors(3, 5, WIDTH, seed=3) * 3
    loop = engine.layer_sweep_loop(model, inputs, last, v, per_layer=True)
    calls = record_groups(monkeypatch)
    sweep = engine.layer_sweep(model, inputs, last, v, per_layer=True, rows_per_pass=10)  # groups [0, 1], [2]
    torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
    assert engine.truncation_verdict(model) == (True, "")
    # The sample: the most and least padded prompts (2), at both group starts, layer 1 and the last.
    assert calls == [("truncated", 5, [0, 1]), ("truncated", 5, [2]), ("hooked", 2, [0, 1, 2])]
    calls.clear()
    engine.layer_sweep(model, inputs, last, v, per_layer=True, rows_per_pass=10)
    assert calls == [("truncated", 5, [0, 1]), ("truncated", 5, [2])]  # remembered: no second check
    engine.forget_truncation_check(model)
    assert engine.truncation_verdict(model) is None


def test_first_sweep_of_a_model_that_fails_the_check_uses_hooks():
    """GPT-2 adds position embeddings to inputs_embeds: the first sweep's own check catches it."""
    from conftest import build_tiny

    model = build_tiny("gpt2")
    inputs, _ = padded_batch(model, lengths=(6, 3, 5, 4, 6))
    last, v = torch.full((5,), -1), vectors(3, 5, WIDTH)
    loop = engine.layer_sweep_loop(model, inputs, last, v, per_layer=True)
    sweep = engine.layer_sweep(model, inputs, last, v, per_layer=True, rows_per_pass=4)  # two chunks
    torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
    ok, reason = engine.truncation_verdict(model)
    assert not ok and "differs from the hook-based path" in reason
    engine.forget_truncation_check(model)
    with pytest.raises(ValueError, match="method='truncated' does not apply to GPT2LMHeadModel: .*differs"):
        engine.layer_sweep(model, inputs, last, v, per_layer=True, method="truncated")
    assert not engine.truncation_verdict(model)[0]


def test_bad_input_to_a_first_truncated_sweep_is_not_held_against_the_model():
    from conftest import build_tiny

    model = build_tiny("qwen2")
    with pytest.raises(ValueError, match="vectors have width 31 but the residual stream of block 0 has width 32"):
        engine.layer_sweep(model, {"input_ids": ids(2, 4)}, torch.tensor([-1, -1]), vectors(31))
    assert engine.truncation_verdict(model) is None


def test_truncation_is_rejected_where_it_would_be_wrong(tiny_models):
    """GPT-2 adds position embeddings to inputs_embeds: the check fails, auto uses the cached path."""
    model = tiny_models["gpt2"]
    assert not engine.supports_truncation(model)
    inputs, _ = padded_batch(model)
    last, v = torch.full((3,), -1), vectors(3, 3, WIDTH)
    loop = engine.layer_sweep_loop(model, inputs, last, v, per_layer=True)
    sweep = engine.layer_sweep(model, inputs, last, v, per_layer=True)
    torch.testing.assert_close(sweep, loop, rtol=1e-5, atol=1e-5)
    assert torch.equal(sweep.argmax(-1), loop.argmax(-1))
    with pytest.raises(ValueError, match="method='truncated' does not apply to GPT2LMHeadModel: .*differs"):
        engine.layer_sweep(model, inputs, last, v, per_layer=True, method="truncated")
    assert not engine.supports_truncation(tiny_models["tvlib_gpt"])


def test_truncation_check_that_raises_means_no(monkeypatch):
    from conftest import build_tiny

    model = build_tiny("llama")  # a fresh model: verdicts are remembered per model object
    monkeypatch.setattr(sweep_module, "_hooked_group", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    assert not engine.supports_truncation(model)
    assert "raised RuntimeError: boom" in engine.truncation_verdict(model)[1]
    monkeypatch.undo()
    assert not engine.supports_truncation(model)  # remembered
    inputs, v = {"input_ids": ids(2, 4)}, vectors(2, WIDTH)
    torch.testing.assert_close(engine.layer_sweep(model, inputs, torch.tensor([-1, -1]), v),
                               engine.layer_sweep_loop(model, inputs, torch.tensor([-1, -1]), v),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("arch", TRUNCATABLE)
def test_truncated_sweep_restores_the_model(tiny_models, arch):
    model = tiny_models[arch]
    parent, name = decoder_parent(model)
    blocks, hooks, slots = getattr(parent, name), hook_count(model), list(parent._modules)
    inputs, last, v = {"input_ids": ids(2, 5)}, torch.tensor([-1, -1]), vectors(2, WIDTH)
    before = last_logits(model, inputs)
    engine.layer_sweep(model, inputs, last, v, method="truncated")
    assert getattr(parent, name) is blocks and engine.find_blocks(model) is blocks

    def boom(module, args, output):
        raise KeyError("boom")

    handle = blocks[2].register_forward_hook(boom)
    try:
        with pytest.raises(KeyError, match="boom"):
            engine.layer_sweep(model, inputs, last, v, method="truncated")
    finally:
        handle.remove()
    assert getattr(parent, name) is blocks and list(parent._modules) == slots  # same object, same slot
    assert hook_count(model) == hooks
    assert torch.equal(last_logits(model, inputs), before)


def test_truncation_verdict_names_the_valid_kinds(tiny_models):
    with pytest.raises(ValueError, match="kind 'all' is not one of last, span"):
        engine.truncation_verdict(tiny_models["llama"], kind="all")


def test_layer_sweep_rejects_bad_methods(tiny_models):
    model, inputs, last, v = tiny_models["llama"], {"input_ids": ids(2, 4)}, torch.tensor([-1, -1]), vectors(WIDTH)
    with pytest.raises(ValueError, match="method 'fast' is not one of auto, truncated, cached, repeated"):
        engine.layer_sweep(model, inputs, last, v, method="fast")
    with pytest.raises(ValueError, match="method='truncated' needs mode='replace', got mode='add'"):
        engine.layer_sweep(model, inputs, last, v, mode="add", method="truncated")
    with pytest.raises(ValueError, match="method='cached' needs a Hugging Face model"):
        engine.layer_sweep(tiny_models["tvlib_gpt"], inputs, last, v, method="cached")
    with pytest.raises(ValueError, match="mode 'scale' is not one of replace, add"):
        engine.layer_sweep(model, inputs, last, v, mode="scale")
