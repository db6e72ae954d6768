"""The hook site for attention weights: every head's post-softmax attention, every layer, with gradients.

The site. In decoder block l (the blocks of :func:`tvlib.engine.hooks.find_blocks`) the attention
probabilities A_l, ``[B, H, T, T]`` (row: query, column: key; every row sums to 1, zeros above the
diagonal), are read right after the softmax (and after the attention dropout, a no-op in eval
mode): the very tensor that then multiplies the values. Two kinds of model provide it, found
without a table of model names:

- Hugging Face causal LMs: the output ``(attention output, weights)`` of the block's attention
  module, i.e. the module the model declares as the one ``output_attentions=True`` reads
  (``_can_record_outputs["attentions"]``). Fused kernels (sdpa, flash) return no weights, so inside
  :func:`attention_weights` the model runs its own eager attention; its previous implementation is
  restored on exit, also when the body raises.
- tvlib's GPT (:mod:`tvlib.scratch.gpt`), or any module with the same two attributes: the output of
  ``SelfAttention.pattern``, an identity the probabilities pass through when ``SelfAttention.fused``
  is False. Inside the context every such flag is False; it is restored on exit.

The captured tensors stay in the autograd graph and keep their gradient, so after
``loss.backward()`` the record holds dL/dA of every layer and head. :func:`saliency` builds on it
(Wang et al. 2023; Dong et al. 2025, Fig. 3 and 5). A model without such a site, or a forward pass
that leaves a layer without weights, is an error that says what was missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tvlib.engine.hooks import find_blocks, logits_of

HEAD_SUMS = ("abs_sum", "sum_abs")


@dataclass
class AttentionRecord:
    """Attention weights recorded by :func:`attention_weights`, one slot per layer (the last forward's)."""

    model: str  # the model's class name, for error messages
    layers: list[Tensor | None]

    def _complete(self) -> list[Tensor]:
        missing = [layer for layer, weights in enumerate(self.layers) if weights is None]
        if missing:
            raise RuntimeError(f"no attention weights for layer(s) {missing} of {self.model}: no forward pass "
                               "through those blocks ran inside attention_weights()")
        return self.layers

    @property
    def weights(self) -> Tensor:
        """``[L, B, H, T, T]``, in the autograd graph when the forward pass was."""
        return torch.stack(self._complete())

    @property
    def grads(self) -> Tensor:
        """dL/dA, ``[L, B, H, T, T]``, after ``loss.backward()`` (accumulated over backward calls)."""
        missing = [layer for layer, weights in enumerate(self._complete()) if weights.grad is None]
        if missing:
            raise RuntimeError(f"no gradient reached the attention weights of layer(s) {missing} of {self.model}: "
                               "run the forward pass with autograd enabled and call backward() on a loss computed "
                               "from its output")
        return torch.stack([weights.grad for weights in self.layers])


# ----------------------------------------------------------------------------- sites


@dataclass(frozen=True)
class _Site:
    """Where block l's attention weights are read: ``module``'s output, or its item ``index``."""

    module: nn.Module
    index: int | None


def _explicit_modules(block: nn.Module) -> list[nn.Module]:
    """Modules following tvlib's GPT protocol: a bool ``fused`` flag and a ``pattern`` submodule."""
    return [m for m in block.modules()
            if isinstance(getattr(m, "fused", None), bool) and isinstance(getattr(m, "pattern", None), nn.Module)]


def _hf_attention_specs(model: nn.Module) -> list:
    """HF's declaration of the modules ``output_attentions`` reads (classes, names or OutputRecorders)."""
    specs = (getattr(model, "_can_record_outputs", None) or {}).get("attentions")
    if specs is None:
        raise ValueError(f"{type(model).__name__} cannot provide attention weights: it is neither a Hugging Face "
                         "model declaring its attention modules (_can_record_outputs['attentions']) nor built of "
                         "blocks whose attention has tvlib's `fused` flag and `pattern` hook site")
    return specs if isinstance(specs, list) else [specs]


def _matches(spec, name: str, module: nn.Module) -> bool:
    """Whether the module at `name` (inside a block) is the one `spec` declares, as HF matches it."""
    target = spec if isinstance(spec, (type, str)) else getattr(spec, "target_class", None) or spec.class_name
    hit = isinstance(module, target) if isinstance(target, type) else name.endswith(target)
    layer_name = getattr(spec, "layer_name", None)
    return hit and (layer_name is None or f".{layer_name.strip('.')}." in f".{name}.")


def _sites(model: nn.Module, blocks: nn.ModuleList) -> tuple[list[_Site], bool]:
    """One site per block, and whether they are Hugging Face attention modules (else tvlib's protocol)."""
    explicit = [_explicit_modules(block) for block in blocks]
    if all(len(found) == 1 for found in explicit):
        return [_Site(found[0].pattern, None) for found in explicit], False
    specs = _hf_attention_specs(model)
    sites = []
    for layer, block in enumerate(blocks):
        found = [(module, spec) for name, module in block.named_modules() for spec in specs
                 if _matches(spec, name, module)]
        if len(found) != 1:
            raise ValueError(f"block {layer} of {type(model).__name__} ({type(block).__name__}) holds {len(found)} "
                             "attention modules of the declared kind; expected exactly one")
        module, spec = found[0]
        sites.append(_Site(module, 1 if isinstance(spec, (type, str)) else spec.index))
    return sites, True


# ----------------------------------------------------------------------------- switching to explicit attention


def _attn_configs(model: nn.Module) -> list:
    """Every HF config whose attention implementation the forward pass reads (model, sub-models, sub-configs)."""
    found: dict[int, object] = {}
    todo = [getattr(module, "config", None) for module in model.modules()]
    while todo:
        config = todo.pop()
        if config is None or id(config) in found or not hasattr(config, "_attn_implementation_internal"):
            continue
        found[id(config)] = config
        todo += [getattr(config, key, None) for key in getattr(config, "sub_configs", {})]
    return list(found.values())


@contextmanager
def _eager(model: nn.Module) -> Iterator[None]:
    """Run a Hugging Face model with its own eager attention; restore every config's previous choice."""
    saved = [(config, config._attn_implementation_internal) for config in _attn_configs(model)]
    try:
        model.set_attn_implementation("eager")
        if model.config._attn_implementation != "eager":
            raise ValueError(f"{type(model).__name__} cannot switch to eager attention (it stays "
                             f"{model.config._attn_implementation!r}), so it cannot provide attention weights")
        yield
    finally:
        for config, implementation in saved:
            config._attn_implementation_internal = implementation


@contextmanager
def _explicit(blocks: nn.ModuleList) -> Iterator[None]:
    """Set every ``fused`` flag of tvlib's attention to False; restore the previous values."""
    modules = [m for block in blocks for m in _explicit_modules(block)]
    saved = [m.fused for m in modules]
    try:
        for m in modules:
            m.fused = False
        yield
    finally:
        for m, fused in zip(modules, saved):
            m.fused = fused


# ----------------------------------------------------------------------------- the context


@contextmanager
def attention_weights(model: nn.Module) -> Iterator[AttentionRecord]:
    """Record the post-softmax attention of every layer and head during the forward run inside.

    Yields an :class:`AttentionRecord`: ``record.weights`` is ``[L, B, H, T, T]`` and, after
    ``loss.backward()``, ``record.grads`` is dL/dA. A later forward inside the block replaces the
    record. Raises on leaving the block if a layer produced no weights.
    """
    blocks = find_blocks(model)
    sites, hf = _sites(model, blocks)
    record = AttentionRecord(model=type(model).__name__, layers=[None] * len(blocks))

    def reset(module: nn.Module, args: tuple) -> None:  # a new forward pass starts at layer 0
        record.layers = [None] * len(blocks)

    def make_hook(layer: int, site: _Site):
        def hook(module: nn.Module, args: tuple, output) -> None:
            weights = output if site.index is None else output[site.index] if isinstance(output, tuple) else None
            if not isinstance(weights, Tensor) or weights.dim() != 4:
                raise RuntimeError(f"the attention of block {layer} of {record.model} ({type(module).__name__}) "
                                   f"returned no weights [B, H, T, T] but {type(weights).__name__}")
            if weights.requires_grad:
                weights.retain_grad()
            record.layers[layer] = weights

        return hook

    with _eager(model) if hf else _explicit(blocks):
        handles = [sites[0].module.register_forward_pre_hook(reset)]
        handles += [site.module.register_forward_hook(make_hook(layer, site)) for layer, site in enumerate(sites)]
        try:
            yield record
        finally:
            for handle in handles:
                handle.remove()
    record._complete()


# ----------------------------------------------------------------------------- saliency


def _rows(inputs: dict, start: int, stop: int) -> dict:
    """The rows start:stop of every tensor in `inputs` (other values unchanged)."""
    return {key: value[start:stop] if isinstance(value, Tensor) else value for key, value in inputs.items()}


def saliency(model: nn.Module, inputs: dict, answer_ids: Tensor, positions: Tensor | None = None,
             head_sum: str = "abs_sum", batch_size: int | None = None) -> Tensor:
    """Attention saliency per layer, ``[L, B, T, T]``: S_l = sum_h |A_{l,h} * dL/dA_{l,h}| (elementwise).

    L is the cross-entropy of ``answer_ids`` [B] predicted at ``positions`` [B] (default: the last
    token), summed over rows so that each row's map is its own, whatever the batch. ``head_sum``:
    ``"abs_sum"`` is the formula of Dong et al. (2025); ``"sum_abs"``, |sum_h A * dL/dA|, is what
    their released code and Wang et al.'s compute. Rows run ``batch_size`` at a time (all at once
    if None), so memory holds one chunk's attention and gradients. Model gradients are left as
    they were.
    """
    return saliency_by_head_sum(model, inputs, answer_ids, positions, (head_sum,), batch_size)[head_sum]


def saliency_by_head_sum(model: nn.Module, inputs: dict, answer_ids: Tensor, positions: Tensor | None = None,
                         head_sums: tuple[str, ...] = HEAD_SUMS, batch_size: int | None = None) -> dict[str, Tensor]:
    """:func:`saliency` for several head sums from one backward pass per chunk: ``{head_sum: [L, B, T, T]}``."""
    bad = [h for h in head_sums if h not in HEAD_SUMS]
    if bad or not head_sums:
        raise ValueError(f"head_sum {bad[0] if bad else head_sums!r} is not one of {', '.join(HEAD_SUMS)}")
    n_rows = answer_ids.shape[0]
    positions = torch.full((n_rows,), -1, dtype=torch.long) if positions is None else positions
    if positions.shape != (n_rows,):
        raise ValueError(f"positions must have shape [{n_rows}] like answer_ids, got {tuple(positions.shape)}")
    step = batch_size or n_rows
    maps: dict[str, list[Tensor]] = {h: [] for h in head_sums}
    for start in range(0, n_rows, step):
        stop = min(start + step, n_rows)
        with torch.enable_grad(), attention_weights(model) as record:
            logits = logits_of(model, _rows(inputs, start, stop))
        rows = torch.arange(stop - start, device=logits.device)
        loss = F.cross_entropy(logits[rows, positions[start:stop].to(logits.device)],
                               answer_ids[start:stop].to(logits.device), reduction="sum")
        if not record.layers[0].requires_grad:
            raise RuntimeError(f"the attention weights of {record.model} do not require grad (are all its "
                               "parameters frozen?); saliency needs a gradient path to them")
        grads = torch.autograd.grad(loss, record.layers)
        products = torch.stack([(a * g).detach() for a, g in zip(record.layers, grads)])  # [L, b, H, T, T]
        for h in head_sums:
            maps[h].append(products.abs().sum(2) if h == "abs_sum" else products.sum(2).abs())
    return {h: torch.cat(m, dim=1) for h, m in maps.items()}
