"""A small GPT-style decoder for in-context learning from scratch (one readable file).

Pre-LayerNorm blocks, learned absolute positions, GELU MLP, no dropout. Two kinds of input:

* token model (``vocab_size > 0``): ``model(input_ids=ids)`` returns logits ``[B, T, vocab_size]``;
* continuous model (``n_dims > 0``, Garg et al. style): ``model(values=v, is_arrow=a)`` where
  ``v`` is ``[B, T, n_dims]`` (a y-token is its scalar zero-padded to ``n_dims``) and the bool
  mask ``a`` marks the positions that take the learned arrow embedding instead of the linear
  read-in; returns predictions ``[B, T, n_out]`` from a linear read-out.

Initialisation (``init``): ``"gpt2"`` draws every weight from N(0, 0.02^2) and scales the residual
projections by depth, as GPT-2 does; ``"torch"`` keeps PyTorch's default for the linear layers
(uniform with bound 1/sqrt(fan_in)) and draws only the embeddings and the arrow from N(0, 0.02^2).
At width 32, the GPT-2 scale is small for 2-dimensional regression inputs: such models sit for
thousands of steps on the plateau where they predict 0 (see the emergence chapter).

Either model also accepts ``inputs_embeds`` ``[B, T, n_embd]`` directly. The decoder blocks live
in ``self.blocks`` and each returns the residual stream ``[B, T, n_embd]``, so the task-vector
engine (``tvlib.engine``) can read and overwrite it at any layer; each block's attention can also
form its probabilities explicitly (``SelfAttention.fused``), where ``tvlib.engine.attention`` reads them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


INITS = ("gpt2", "torch")


@dataclass
class GPTConfig:
    """Shape of the decoder. Exactly one of ``vocab_size`` and ``n_dims`` is positive."""

    vocab_size: int = 0  # > 0: token embeddings and a language-model head
    n_dims: int = 0  # > 0: continuous read-in from n_dims and read-out to n_out
    n_out: int = 1
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    block_size: int = 64  # longest sequence (learned positions)
    init: str = "gpt2"  # weight initialisation, one of INITS (module docstring)

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(INITS)}")
        if (self.vocab_size > 0) == (self.n_dims > 0):
            raise ValueError(f"exactly one of vocab_size ({self.vocab_size}) and n_dims "
                             f"({self.n_dims}) must be positive")
        for name in ("n_layer", "n_embd", "n_head", "block_size", "n_out"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


class SelfAttention(nn.Module):
    """Causal multi-head self-attention.

    ``fused`` (the default) runs PyTorch's fused scaled-dot-product kernel, which never forms the
    attention probabilities. ``fused = False`` computes them explicitly and passes them, ``[B, H,
    T, T]``, through ``self.pattern`` (an identity): the hook site where
    :mod:`tvlib.engine.attention` reads them. Both paths compute the same function.
    """

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.fused = True
        self.pattern = nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if self.fused:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None)
        else:
            keep = mask if mask is not None else torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])
            y = self.pattern(att.masked_fill(~keep, float("-inf")).softmax(dim=-1)) @ v
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LN transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = nn.Sequential(nn.Linear(cfg.n_embd, 4 * cfg.n_embd), nn.GELU(),
                                 nn.Linear(4 * cfg.n_embd, cfg.n_embd))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), mask)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Decoder-only transformer; see the module docstring for its two input kinds."""

    def __init__(self, cfg: GPTConfig):
        super().__init__()
        self.cfg = cfg
        if cfg.vocab_size > 0:
            self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        else:
            self.read_in = nn.Linear(cfg.n_dims, cfg.n_embd)
            self.arrow = nn.Parameter(torch.zeros(cfg.n_embd))
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size or cfg.n_out, bias=cfg.vocab_size == 0)
        for m in self.modules():
            if isinstance(m, nn.Embedding) or (isinstance(m, nn.Linear) and cfg.init == "gpt2"):
                nn.init.normal_(m.weight, std=0.02)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)
        if cfg.n_dims > 0:
            nn.init.normal_(self.arrow, std=0.02)
        if cfg.init == "gpt2":
            for name, p in self.named_parameters():  # GPT-2: scale residual projections by depth
                if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                    nn.init.normal_(p, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def embed(self, input_ids: Tensor | None = None, values: Tensor | None = None,
              is_arrow: Tensor | None = None) -> Tensor:
        """Token or continuous inputs to embeddings ``[B, T, n_embd]`` (positions not added)."""
        if self.cfg.vocab_size > 0:
            if input_ids is None:
                raise ValueError("this is a token model (vocab_size > 0): pass input_ids")
            return self.wte(input_ids)
        if values is None or is_arrow is None:
            raise ValueError("this is a continuous model (n_dims > 0): pass values and is_arrow")
        if values.shape[-1] != self.cfg.n_dims:
            raise ValueError(f"values have {values.shape[-1]} dims, the model reads {self.cfg.n_dims}")
        return torch.where(is_arrow[..., None], self.arrow, self.read_in(values))

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                inputs_embeds: Tensor | None = None, values: Tensor | None = None,
                is_arrow: Tensor | None = None) -> Tensor:
        """Logits ``[B, T, vocab_size]`` (token model) or predictions ``[B, T, n_out]``.

        ``attention_mask`` ``[B, T]`` (1 = attend, 0 = padding) is combined with the causal mask;
        every position still attends to itself so padded rows stay finite.
        """
        x = inputs_embeds if inputs_embeds is not None else self.embed(input_ids, values, is_arrow)
        T = x.shape[1]
        if T > self.cfg.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.cfg.block_size}")
        x = x + self.wpe(torch.arange(T, device=x.device))
        mask = None
        if attention_mask is not None:
            causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
            keep = causal & attention_mask.bool()[:, None, None, :]
            mask = keep | torch.eye(T, dtype=torch.bool, device=x.device)
        for block in self.blocks:
            x = block(x, mask)
        return self.head(self.ln_f(x))


# ----------------------------------------------------------------------------- inputs for the engine


def model_inputs(model: GPT, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
    """Prompt inputs as engine-friendly model kwargs: continuous prompts become inputs_embeds.

    The embedding is computed in the autograd graph, so the read-in and the arrow still train.
    """
    if "values" in inputs:
        return {"inputs_embeds": model.embed(values=inputs["values"], is_arrow=inputs["is_arrow"])}
    return inputs


def query_positions(n: int) -> Tensor:
    """Position -1 (the query's answer position) for ``n`` rows."""
    return torch.full((n,), -1, dtype=torch.long)
