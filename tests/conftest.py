"""Shared fixtures: tiny randomly initialised decoders, built offline from configs.

Four Hugging Face architectures (Llama, GPT-2, GPT-NeoX, Qwen2; both tuple and tensor block
outputs, rotary and learned positions) and tvlib's own GPT, all with a 32-wide residual stream.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

VOCAB = 50
WIDTH = 32
HF_ARCHS = ("llama", "gpt2", "gpt_neox", "qwen2")

# Tiny models gain nothing from threads, and on a shared 2-core machine threads contend badly
# (a 3-layer forward took ~0.7 s with the default thread count under load, ~0.01 s with one).
torch.set_num_threads(1)
ARCHS = (*HF_ARCHS, "tvlib_gpt")
# A tiny from-scratch run (tvlib.scratch.train.TrainConfig fields) for the training and evaluation tests.
TINY_RUN = dict(n_layer=3, n_embd=16, n_head=2, block_size=32, n_examples=4, batch_size=8, warmup=2)


def build_tiny(arch: str, seed: int = 0) -> nn.Module:
    """A 3-layer model of width 32 and vocabulary 50, in eval mode, from a fixed seed."""
    import transformers as tf

    small = dict(vocab_size=VOCAB, hidden_size=WIDTH, intermediate_size=64, num_hidden_layers=3,
                 num_attention_heads=4, max_position_embeddings=64)
    configs = {
        "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(**small, num_key_value_heads=2)),
        "qwen2": lambda: tf.Qwen2ForCausalLM(tf.Qwen2Config(**small, num_key_value_heads=2)),
        "gpt_neox": lambda: tf.GPTNeoXForCausalLM(tf.GPTNeoXConfig(**small)),
        "gpt2": lambda: tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=VOCAB, n_embd=WIDTH, n_layer=3,
                                                          n_head=4, n_positions=64,
                                                          bos_token_id=0, eos_token_id=0)),
        "tvlib_gpt": lambda: _tvlib_gpt(),
    }
    if arch not in configs:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(configs)}")
    torch.manual_seed(seed)
    return configs[arch]().eval()


def _tvlib_gpt() -> nn.Module:
    from tvlib.scratch.gpt import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=VOCAB, n_layer=3, n_embd=WIDTH, n_head=2, block_size=64))


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, nn.Module]:
    """Every tiny architecture, built once per test session (tests must not change weights)."""
    return {arch: build_tiny(arch) for arch in ARCHS}
