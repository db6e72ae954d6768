"""Layer sweeps: inject a vector at every layer and read the final logits, in few batched passes.

:func:`layer_sweep_loop` is the reference (one forward per layer, through
:func:`tvlib.engine.hooks.inject`); :func:`layer_sweep` computes the same in batched passes, by one
of three methods ("repeated", "cached", "truncated"; see its docstring). The "truncated" fast path
checks itself against the hook-based path on a model's first sweep (:func:`supports_truncation`).
Only the optimisation lives here: every injection still goes through the hook site of
:mod:`tvlib.engine.hooks`.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tvlib.engine.batching import accepts_position_ids, pad_left
from tvlib.engine.hooks import (MODES, _as_rows, _keep_last, _resolve, _vectors_rows, capture, find_blocks, inject,
                                last_logits, num_layers)

def _select(inputs: dict, index: Tensor) -> dict:
    """The rows `index` of every tensor in `inputs` (other values are passed through)."""
    return {k: v[index] if isinstance(v, Tensor) else v for k, v in inputs.items()}


def _shape(inputs: dict) -> tuple[int, int]:
    """(batch, sequence length) of a model's inputs, from input_ids or inputs_embeds."""
    key = "input_ids" if "input_ids" in inputs else "inputs_embeds"
    if key not in inputs:
        raise ValueError(f"inputs need input_ids or inputs_embeds, got keys {sorted(inputs)}")
    return inputs[key].shape[0], inputs[key].shape[1]


def _sweep_vectors(vectors: Tensor, rows: Tensor, n_layers: int, per_layer: bool) -> Tensor:
    """Vectors as [B, L, P, D]: entry [b, l] is injected into prompt b at layer l."""
    if not per_layer:
        return _vectors_rows(vectors, rows).unsqueeze(1).expand(-1, n_layers, -1, -1)
    if vectors.dim() < 2 or vectors.shape[0] != n_layers:
        raise ValueError(f"per_layer vectors need a leading axis of {n_layers} layers, got shape "
                         f"{tuple(vectors.shape)}")
    return torch.stack([_vectors_rows(v, rows) for v in vectors], dim=1)


def layer_sweep_loop(model: nn.Module, inputs: dict, positions: Tensor, vectors: Tensor,
                     mode: str = "replace", per_layer: bool = False) -> Tensor:
    """Reference sweep, one forward per layer: final-position logits [L, B, V] for injection at each.

    vectors as for :func:`inject`; with per_layer, an extra leading axis L gives layer l its own
    vectors (Hendel et al.: the layer-l task vector is injected at layer l).
    """
    n_layers, rows = num_layers(model), _as_rows(positions)
    vecs = _sweep_vectors(vectors, rows, n_layers, per_layer)
    out = []
    with torch.no_grad():
        for layer in range(n_layers):
            with inject(model, layer, rows, vecs[:, layer], mode):
                out.append(last_logits(model, inputs))
    return torch.stack(out)


def _supports_cache(model: nn.Module) -> bool:
    """Whether the model is a Hugging Face model that can return and consume a KV cache."""
    from transformers import PreTrainedModel

    return isinstance(model, PreTrainedModel) and hasattr(model.config, "use_cache")


METHODS = ("auto", "truncated", "cached", "repeated")


def layer_sweep(model: nn.Module, inputs: dict, positions: Tensor, vectors: Tensor, mode: str = "replace",
                per_layer: bool = False, rows_per_pass: int = 256, method: str = "auto") -> Tensor:
    """Same result as :func:`layer_sweep_loop` (up to float rounding) in few batched passes.

    method picks how (all need no other change to the model than what they restore):

    - "repeated": each prompt is repeated once per layer, row l injecting at layer l (any model,
      any positions).
    - "cached": on a Hugging Face causal LM, the columns before the first injected position are the
      same for every layer, so that prefix runs once with a KV cache and only the rest of the prompt
      (the last token alone, for Hendel et al.'s task vector) runs, through all the blocks, for the
      L variants (hooks inject), consecutive layers sharing a forward.
    - "truncated": as "cached", but in replace mode blocks 0..l are wasted work for the rest of the
      prompt, so for each layer l it starts as the states after block l (for the last token alone:
      the vector itself; for several positions, as for TaskV-M: the clean states after block l,
      from one extra forward, with the vectors written in) and runs through blocks l+1..L-1 only,
      reading the prefix's cache; the other layers of a forward are hooked; the LM head runs once,
      on all the final states. Needs a model whose forward feeds inputs_embeds to its first block
      unchanged and ends with its LM head: the first truncated sweep of a model checks a sample of
      its own rows against the hook-based path and remembers the verdict, separately for the last
      position alone and for several positions (:func:`truncation_verdict`,
      :func:`supports_truncation`); a model that fails gets the "cached" result instead (or, for an
      explicit method="truncated", an error).
    - "auto": the first of "truncated", "cached", "repeated" that applies.

    rows_per_pass bounds the rows (prompts x layers) of one forward; a forward has at least one
    prompt's rows ("repeated") or all the prompts of a chunk ("cached", "truncated").
    An explicit method that does not apply is an error, with the reason.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    if rows_per_pass < 1:
        raise ValueError(f"rows_per_pass must be >= 1, got {rows_per_pass}")
    batch, seq_len = _shape(inputs)
    n_layers, rows = num_layers(model), _as_rows(positions)
    vecs = _sweep_vectors(vectors, rows, n_layers, per_layer)
    absolute = _resolve(rows, batch, seq_len, unique=True)
    cut = int(absolute.min())  # every column before the first injected position is the same for all layers
    kind = "last" if cut == seq_len - 1 else "span"
    chosen = _choose_method(model, method, mode, cut, kind)
    per_pass = max(1, rows_per_pass // n_layers) if chosen == "repeated" else rows_per_pass
    verdicts = _VERDICTS[kind]
    chunks = []
    with torch.no_grad():
        for start in range(0, batch, per_pass):
            index = torch.arange(start, min(start + per_pass, batch))
            part, part_vecs = _select(inputs, index), vecs[index]
            if chosen == "repeated":
                chunks.append(_sweep_repeated(model, part, rows[index], part_vecs, mode))
                continue
            step = _Step.of(model, part, absolute[index] - cut, cut)
            if chosen == "truncated" and model not in verdicts:
                chunks.append(_first_truncated(model, step, part_vecs, rows_per_pass, kind,
                                               explicit=method == "truncated"))
                chosen = "truncated" if verdicts[model][0] else "cached"
            else:
                chunks.append(_sweep_prefixed(model, step, part_vecs, mode, rows_per_pass, chosen == "truncated"))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def _choose_method(model: nn.Module, method: str, mode: str, cut: int, kind: str) -> str:
    """The sweep method to run: `method` itself if it applies (else an error), or for "auto" the best.

    cut: the first injected column (the prefix before it is shared by every layer); kind: "last"
    (injection at the last position only) or "span" (any positions from `cut` on). "truncated" for
    a model not yet checked for `kind` means: check on first use (:func:`_first_truncated`).
    """
    if method == "repeated":
        return method
    why_not_cached = None
    if cut < 1:
        why_not_cached = "at least one token before the first injected position"
    elif not _supports_cache(model):
        why_not_cached = "a Hugging Face model with a KV cache"
    if why_not_cached is not None:
        if method != "auto":
            raise ValueError(f"method={method!r} needs {why_not_cached}")
        return "repeated"
    if method == "cached":
        return method
    if mode != "replace":
        if method == "truncated":
            raise ValueError(f"method='truncated' needs mode='replace', got mode={mode!r}")
        return "cached"
    verdicts = _VERDICTS[kind]
    if model not in verdicts:
        reason = _truncation_precondition(model)
        if reason is None:
            return "truncated"
        verdicts[model] = (False, reason)
    ok, reason = verdicts[model]
    if not ok and method == "truncated":
        raise ValueError(f"method='truncated' does not apply to {type(model).__name__}: {reason}")
    return "truncated" if ok else "cached"


def _sweep_repeated(model: nn.Module, inputs: dict, rows: Tensor, vecs: Tensor, mode: str) -> Tensor:
    """Generic path: every prompt repeated across layers, one injection layer per row."""
    batch, n_layers = vecs.shape[:2]
    layers = torch.arange(n_layers).repeat(batch)  # row b * L + l injects at layer l
    big = {k: v.repeat_interleave(n_layers, dim=0) if isinstance(v, Tensor) else v for k, v in inputs.items()}
    with inject(model, layers, rows.repeat_interleave(n_layers, dim=0), vecs.flatten(0, 1), mode):
        logits = last_logits(model, big)
    return logits.view(batch, n_layers, -1).transpose(0, 1)


@dataclass
class _Step:
    """A chunk's shared prefix and the step that every layer's variant runs from there.

    cache: KV cache of columns 0..cut-1 (computed once); rest: the inputs of columns cut.. (the
    whole attention mask); rows: injected positions [B, P] relative to column cut.
    """

    cache: object
    rest: dict
    rows: Tensor

    @classmethod
    def of(cls, model: nn.Module, inputs: dict, rows: Tensor, cut: int) -> _Step:
        prefix = {k: v[:, :cut] if isinstance(v, Tensor) else v for k, v in inputs.items()}
        cache = model(**_keep_last(model, prefix), use_cache=True).past_key_values
        rest = {k: v if k == "attention_mask" or not isinstance(v, Tensor) else v[:, cut:] for k, v in inputs.items()}
        return cls(cache, rest, rows)

    @property
    def length(self) -> int:
        return _shape(self.rest)[1]

    def select(self, prompts: Tensor, device: torch.device) -> _Step:
        """The same step for a subset of the prompts (the cache is copied, not changed)."""
        cache = _fork(self.cache)
        cache.batch_select_indices(prompts.to(device))
        return _Step(cache, _select(self.rest, prompts), self.rows[prompts])

    def clean_states(self, model: nn.Module) -> Tensor | None:
        """The residual stream after every block at the step's columns, no injection: [L, B, S, D].

        None for a one-token step (the vector replaces the whole step there).
        """
        if self.length == 1:
            return None
        columns = torch.arange(self.length).expand(self.rows.shape[0], -1)
        work = {**self.rest, "past_key_values": _fork(self.cache), "use_cache": True}
        with capture(model, columns) as record:
            last_logits(model, work)
        return record.states


def _layer_groups(n_layers: int, size: int) -> list[list[int]]:
    """Consecutive layers in groups of at most `size`: as few groups as that allows, sizes balanced."""
    size = -(-n_layers // -(-n_layers // size))
    return [list(range(start, min(start + size, n_layers))) for start in range(0, n_layers, size)]


def _sweep_prefixed(model: nn.Module, step: _Step, vecs: Tensor, mode: str, rows_per_pass: int,
                    truncate: bool, verify: bool = False) -> Tensor:
    """HF paths: the prefix once with a KV cache, then the step's columns for groups of consecutive layers.

    truncate: the "truncated" method, through the model's decoder (group a.. runs blocks a+1..
    only; a little wasted work for the group's later layers, bought back by larger matrix
    products and fewer forwards), then the LM head once on every final state; else the "cached"
    one: the whole model, every block, hooks inject. verify: check a sample of the truncated rows
    against the hook-based path (:func:`_check_sample`).
    """
    batch, n_layers = vecs.shape[:2]
    # A truncated group runs every row from the group's first layer: for a span of columns that
    # wastes (G-1)/(L-1) of the work, so there each layer gets its own forward (all prompts of the
    # chunk, rest columns each: matrix products large enough).
    size = 1 if truncate and step.length > 1 else max(1, rows_per_pass // batch)
    groups = _layer_groups(n_layers, size)
    if not truncate:
        return torch.cat([_hooked_group(model, step, layers, vecs, mode) for layers in groups])
    clean = step.clean_states(model)
    states = torch.cat([_truncated_group(model, step, layers, vecs, clean) for layers in groups])
    out = model.get_output_embeddings()(states)  # [L, B, V], one matrix product for all rows
    if verify:
        _check_sample(model, step, groups, vecs, out)
    return out


def _group_step(step: _Step, layers: list[int], vecs: Tensor) -> tuple[dict, Tensor, Tensor, Tensor]:
    """The step's inputs for a group of layers: (inputs, row layers, row positions, row vectors).

    Row b * G + g is prompt b with the states after block layers[g] replaced by vecs[b, layers[g]].
    The prefix cache is not changed: the group gets a copy, since a forward appends its tokens to
    the cache layers it passes through. vecs: [B, L, P, D].
    """
    batch, size = vecs.shape[0], len(layers)
    work = _fork(step.cache)
    if size > 1:
        work.batch_repeat_interleave(size)
    inputs = {k: v.repeat_interleave(size, dim=0) if isinstance(v, Tensor) else v for k, v in step.rest.items()}
    inputs.update(past_key_values=work, use_cache=True)
    return (inputs, torch.tensor(layers).repeat(batch), step.rows.repeat_interleave(size, dim=0),
            vecs[:, layers].flatten(0, 1))


def _hooked_group(model: nn.Module, step: _Step, layers: list[int], vecs: Tensor, mode: str) -> Tensor:
    """Final logits [G, B, V] of the whole model, hooks injecting in `mode` (the "cached" method)."""
    batch, size = vecs.shape[0], len(layers)
    inputs, row_layers, row_positions, embeds = _group_step(step, layers, vecs)
    with inject(model, row_layers, row_positions, embeds, mode):
        return last_logits(model, inputs).view(batch, size, -1).transpose(0, 1)


def _truncated_group(model: nn.Module, step: _Step, layers: list[int], vecs: Tensor,
                     clean: Tensor | None) -> Tensor:
    """Final states [G, B, D] of the decoder (after its final norm), the states after block layers[g] replaced.

    The decoder list holds blocks layers[0]+1.. only: the step enters as inputs_embeds, the clean
    states after block layers[0] (`clean`, [L, B, S, D]; None for a one-token step, which the vector
    replaces whole) with the layers[0] rows' vectors written in; attention modules index the cache
    by their own layer_idx. The other rows are hooked at their layer. The last layer alone would
    leave an empty list: there, the full list, every row hooked.
    """
    batch, size, n_layers = vecs.shape[0], len(layers), vecs.shape[1]
    start = layers[0]
    if min(layers) != start:
        raise ValueError(f"a truncated group must start with its lowest layer, got {layers}")
    inputs, row_layers, row_positions, embeds = _group_step(step, layers, vecs)
    blocks = find_blocks(model)
    kept = blocks
    if start < n_layers - 1:
        embedding = model.get_input_embeddings().weight
        entering = embeds if clean is None else _written(clean[start], row_layers == start, row_positions, embeds, size)
        inputs = {k: v for k, v in inputs.items() if k not in ("input_ids", "inputs_embeds")}
        inputs["inputs_embeds"] = entering.to(device=embedding.device, dtype=embedding.dtype)
        row_layers = torch.where(row_layers == start, -1, row_layers)
        kept = nn.ModuleList(list(blocks)[start + 1:])
    # Hooks first: inject finds the blocks in the full list; they stay on the same block objects.
    with inject(model, row_layers, row_positions, embeds, "replace"), _swapped(model, blocks, kept):
        states = model.get_decoder()(**inputs).last_hidden_state[:, -1]
    return states.view(batch, size, -1).transpose(0, 1)


def _written(clean: Tensor, rows: Tensor, positions: Tensor, embeds: Tensor, size: int) -> Tensor:
    """Clean states [B, S, D] repeated per group row, with `embeds` [B*G, P, D] written at `positions` of `rows`."""
    states = clean.repeat_interleave(size, dim=0).clone()
    which = rows.nonzero().squeeze(1)
    states[which.unsqueeze(1), positions[which]] = embeds[which].to(states.dtype)
    return states


def _fork(cache):
    """A copy of a KV cache that a forward can extend without changing the original."""
    layers = getattr(cache, "layers", None)
    if isinstance(layers, list):  # transformers' Cache: layers grow by concatenation, a shallow copy will do
        fork = copy.copy(cache)
        fork.layers = [copy.copy(layer) for layer in layers]
        return fork
    return copy.deepcopy(cache)


@contextmanager
def _swapped(model: nn.Module, old: nn.Module, new: nn.Module) -> Iterator[None]:
    """Temporarily put `new` where the submodule `old` sits in `model`; `old` is always put back."""
    slot = next(((parent, name) for parent in model.modules() for name, child in parent.named_children()
                 if child is old), None)
    if slot is None:
        raise ValueError(f"{type(old).__name__} is not a submodule of {type(model).__name__}")
    setattr(*slot, new)
    try:
        yield
    finally:
        setattr(*slot, old)


# ----------------------------------------------------------------------------- truncation check

# model -> (ok, reason if not), for injection at the last position only ("last") and at any
# positions ("span": the step then has several tokens, which enter the truncated stack as states)
_VERDICTS: dict[str, weakref.WeakKeyDictionary] = {"last": weakref.WeakKeyDictionary(),
                                                   "span": weakref.WeakKeyDictionary()}
_TRUNCATION_VERDICTS = _VERDICTS["last"]


class _Mismatch(Exception):
    """The truncated path differs from the hook-based path (the message says where and by how much)."""


def _tolerance(dtype: torch.dtype) -> float:
    """Allowed |logit difference| relative to the largest logit: rounding noise of the dtype.

    The same values go through the same operations, only in batches of other sizes; a model that
    does not support truncation is off by O(1) (e.g. position embeddings added twice).
    """
    return max(1e-5, 4 * torch.finfo(dtype).eps)


CHECK_DEPTHS = 6  # truncation depths a first sweep checks at most, where every layer is its own group


def _check_sample(model: nn.Module, step: _Step, groups: list[list[int]], vecs: Tensor, got: Tensor) -> None:
    """Raise _Mismatch unless the truncated logits `got` [L, B, V] equal the hook-based path on a sample.

    The sample, in one forward on the same prefix cache: the most and the least left-padded prompts,
    at each group's first layer (it enters as inputs_embeds; every truncation depth used, or
    :data:`CHECK_DEPTHS` of them evenly spaced where every layer is its own group), its second
    (hooked in a truncated stack) and the last layer (as the model's own last layer).
    """
    mask = step.rest.get("attention_mask")
    lengths = mask.sum(1) if mask is not None else torch.zeros(vecs.shape[0])
    prompts = torch.tensor(sorted({int(lengths.argmin()), int(lengths.argmax())}))
    firsts = [g[0] for g in groups]
    if len(firsts) > CHECK_DEPTHS:
        firsts = [firsts[round(i * (len(firsts) - 1) / (CHECK_DEPTHS - 1))] for i in range(CHECK_DEPTHS)]
    layers = sorted(set(firsts) | {g[1] for g in groups if len(g) > 1} | {vecs.shape[1] - 1})
    sample = step.select(prompts, model.get_input_embeddings().weight.device)
    want = _hooked_group(model, sample, layers, vecs[prompts], "replace")
    have = got.index_select(1, prompts.to(got.device)).index_select(0, torch.tensor(layers, device=got.device))
    scale = want.abs().max().item()
    tol = _tolerance(want.dtype)
    if not torch.allclose(have, want, rtol=tol, atol=tol * scale):
        diff = (have - want).abs().max().item()
        raise _Mismatch(f"at layers {layers} of prompts {prompts.tolist()} it differs from the hook-based path "
                        f"(max |logit difference| {diff:.2e}, logits up to {scale:.2e}): its forward does not "
                        "feed inputs_embeds to the first block unchanged, depends on a block's index in the list, "
                        "or does more than its LM head after the decoder")


def _first_truncated(model: nn.Module, step: _Step, vecs: Tensor, rows_per_pass: int, kind: str,
                     explicit: bool) -> Tensor:
    """The truncated sweep of a model not checked yet for `kind`, checked on a sample of its own rows.

    Passes: the model is remembered as supported. Differs or raises: remembered as not, with the
    reason, and the chunk is computed by the cached path, or for an explicit method="truncated" an
    error. If the cached path raises too, the fault is the input's: nothing is remembered.
    """
    try:
        out = _sweep_prefixed(model, step, vecs, "replace", rows_per_pass, truncate=True, verify=True)
    except Exception as error:  # noqa: BLE001 - any failure of the truncated path means: use hooks
        out = _sweep_prefixed(model, step, vecs, "replace", rows_per_pass, truncate=False)
        reason = str(error) if isinstance(error, _Mismatch) else f"the check raised {type(error).__name__}: {error}"
        _VERDICTS[kind][model] = (False, reason)
        if explicit:
            raise ValueError(f"method='truncated' does not apply to {type(model).__name__}: {reason}") from error
        return out
    _VERDICTS[kind][model] = (True, "")
    return out


def _truncation_precondition(model: nn.Module) -> str | None:
    """Why the truncated method cannot apply to `model` without running it, or None."""
    if not _supports_cache(model):
        return "not a Hugging Face model with a KV cache"
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        return "its forward takes no inputs_embeds"
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None and len(set(layer_types[:num_layers(model)])) > 1:
        return f"its layers are of different types ({sorted(set(layer_types))})"
    decoder = model.get_decoder()
    if decoder is model or not any(module is find_blocks(model) for module in decoder.modules()):
        return "it has no decoder submodule (get_decoder) holding its blocks"
    if not isinstance(model.get_output_embeddings(), nn.Module):
        return "it has no LM head module (get_output_embeddings)"
    return None


def supports_truncation(model: nn.Module) -> bool:
    """Whether layer_sweep's "truncated" method is exact for `model` (checked once, then remembered).

    A Hugging Face model with a KV cache, the same kind of layer at every index (the forward may
    pick a mask by a block's index in the list), and a truncated sweep that equals the hook-based
    path on a sample of its rows, up to rounding (:func:`_tolerance`); this fails e.g. where the
    forward adds position embeddings to inputs_embeds (GPT-2). An error in the check also means no.
    A model's first truncated layer_sweep runs this check on its own prompts; called before that,
    this function runs it on a small random left-padded probe, every layer in its own forward (so
    every truncation depth is checked).
    """
    if model not in _TRUNCATION_VERDICTS:
        reason = _truncation_precondition(model)
        if reason is not None:
            _TRUNCATION_VERDICTS[model] = (False, reason)
        else:
            _probe_truncation(model)
    return _TRUNCATION_VERDICTS[model][0]


def _probe_truncation(model: nn.Module) -> None:
    """Run the first truncated sweep of `model` on random prompts and vectors (it records the verdict)."""
    n_layers, embedding = num_layers(model), model.get_input_embeddings().weight
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(0, embedding.shape[0], (2, 5), generator=gen).tolist()
    probe = pad_left([sequences[0][1:], sequences[1]], pad_id=0, position_ids=accepts_position_ids(model))
    probe = {k: v.to(embedding.device) for k, v in probe.items()}
    vecs = torch.randn(n_layers, 2, embedding.shape[1], generator=gen)
    try:
        layer_sweep(model, probe, torch.tensor([-1, -1]), vecs, per_layer=True, rows_per_pass=2)
    except Exception as error:  # noqa: BLE001 - the model cannot even run the hook-based path
        _TRUNCATION_VERDICTS[model] = (False, f"the check raised {type(error).__name__}: {error}")


def truncation_verdict(model: nn.Module, kind: str = "last") -> tuple[bool, str] | None:
    """(ok, reason if not) of the truncation check for `model`, or None if it has not run yet.

    kind: "last" (injection at the last position only) or "span" (several positions: the states of
    the tokens from the first injected one on enter the truncated stack).
    """
    if kind not in _VERDICTS:
        raise ValueError(f"kind {kind!r} is not one of {', '.join(_VERDICTS)}")
    return _VERDICTS[kind].get(model)


def forget_truncation_check(model: nn.Module) -> None:
    """Make the next truncated sweep of `model` check again (for benchmarks timing a first use)."""
    for verdicts in _VERDICTS.values():
        verdicts.pop(model, None)
