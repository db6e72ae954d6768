"""The task-vector engine, shared by the small GPTs trained from scratch and the pretrained LLMs.

Four floors, each readable alone:

- :mod:`tvlib.engine.hooks`: the hook sites on the residual stream (find the blocks, capture,
  inject); every read or write of a model's state goes through them.
- :mod:`tvlib.engine.attention`: the hook site for attention weights (every head, every layer,
  with gradients) and the attention saliency built on it.
- :mod:`tvlib.engine.sweep`: layer sweeps (inject at every layer, read the final logits) in few
  batched passes, with the fast paths' self-check.
- :mod:`tvlib.engine.batching`: left-padded batches with explicit position ids.

The public names are re-exported here: ``from tvlib import engine; engine.inject(...)``.
"""

from tvlib.engine.attention import HEAD_SUMS, AttentionRecord, attention_weights, saliency, saliency_by_head_sum
from tvlib.engine.batching import accepts_position_ids, encode, pad_left
from tvlib.engine.hooks import (MODES, Capture, capture, extract, extract_continuations, find_blocks, inject, last_logits,
                                logits_of, num_layers)
from tvlib.engine.sweep import (METHODS, forget_truncation_check, layer_sweep, layer_sweep_loop, supports_truncation,
                                truncation_verdict)

__all__ = [
    "HEAD_SUMS",
    "METHODS",
    "MODES",
    "Capture",
    "AttentionRecord",
    "accepts_position_ids",
    "attention_weights",
    "capture",
    "encode",
    "extract",
    "extract_continuations",
    "find_blocks",
    "forget_truncation_check",
    "inject",
    "last_logits",
    "layer_sweep",
    "layer_sweep_loop",
    "logits_of",
    "num_layers",
    "pad_left",
    "saliency",
    "saliency_by_head_sum",
    "supports_truncation",
    "truncation_verdict",
]
