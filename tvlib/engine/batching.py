"""Left-padded batches with explicit position ids, so that a batched prompt computes what it computes alone."""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import Tensor, nn

def accepts_position_ids(model: nn.Module) -> bool:
    """Whether model.forward takes position_ids (HF models do; they need them under left padding)."""
    return "position_ids" in inspect.signature(model.forward).parameters


def pad_left(sequences: Sequence[Sequence[int]], pad_id: int, position_ids: bool = True) -> dict[str, Tensor]:
    """Left-pad token sequences into input_ids, attention_mask and (optionally) position_ids.

    Position ids count real tokens only (0 at each row's first real token), so a padded row sees
    the same positions as when run alone: transformers 5 otherwise numbers padding positions too.
    The last position (-1) of every row is its last real token.
    """
    if len(sequences) == 0 or any(len(seq) == 0 for seq in sequences):
        raise ValueError("pad_left needs at least one sequence and no empty sequences")
    width = max(len(seq) for seq in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    out = {"input_ids": ids, "attention_mask": mask}
    if position_ids:
        out["position_ids"] = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return out


def encode(tokenizer, texts: Sequence[str], model: nn.Module | None = None) -> dict[str, Tensor]:
    """Tokenize `texts` (tokenizer's own special-token rule) and left-pad them with :func:`pad_left`.

    position_ids are included unless `model` is given and its forward does not take them.
    """
    if isinstance(texts, str):
        raise TypeError("encode takes a list of strings, got a single string")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_id is None:
        raise ValueError("the tokenizer has neither a pad_token_id nor an eos_token_id to pad with")
    sequences = [tokenizer(text)["input_ids"] for text in texts]
    return pad_left(sequences, pad_id, position_ids=model is None or accepts_position_ids(model))
