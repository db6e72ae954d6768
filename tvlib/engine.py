"""The task-vector engine: read and write the residual stream of a decoder-only model.

Works on Hugging Face causal LMs and on tvlib's own models alike, through forward hooks on the
decoder blocks, which are found generically (:func:`find_blocks`). As in Hendel et al. (2023),
"layer l" is the OUTPUT of block l (l = 0..L-1), i.e. the residual stream after that block.

- :func:`extract` / :func:`capture`: the residual stream at chosen positions, every layer, one pass.
- :func:`inject`: replace (Hendel/Dong task vectors) or add to (function-vector style) the residual
  stream at (layer, position); one position per row, or many at once (TaskV-M). Each row may get
  its own layer, which is how :func:`layer_sweep` evaluates every layer in a few batched passes
  (in replace mode at the last position of a HF model, verified once per model, the injected
  vector instead enters a temporarily truncated decoder stack: :func:`supports_truncation`).
- :func:`pad_left` / :func:`encode`: left-padded batches with explicit position ids, so that a
  batched prompt computes exactly what it computes alone.

Hooks are always removed, also when the body of a context raises; an injection that never
happened, a layer or position out of range, or a vector of the wrong width is an error.
"""

from __future__ import annotations

import copy
import inspect
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor, nn

MODES = ("replace", "add")


# ----------------------------------------------------------------------------- blocks


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The decoder blocks: the longest nn.ModuleList whose children all share one class.

    Generic on purpose (no table of model names): HF models keep them in e.g. `model.layers` or
    `transformer.h`, tvlib's GPT in `blocks`. On a tie the outermost (first visited) list wins.
    """
    best: nn.ModuleList | None = None
    for module in model.modules():
        if isinstance(module, nn.ModuleList) and len(module) > 0:
            if len({type(child) for child in module}) == 1 and (best is None or len(module) > len(best)):
                best = module
    if best is None:
        raise ValueError(
            f"found no decoder blocks in {type(model).__name__}: expected an nn.ModuleList of "
            "identical block modules (e.g. `model.layers`, `transformer.h`, `blocks`)"
        )
    return best


def num_layers(model: nn.Module) -> int:
    """Number of decoder blocks, i.e. of residual-stream layers the engine can read or write."""
    return len(find_blocks(model))


def _hidden(output: Tensor | tuple) -> Tensor:
    """The residual stream in a block's output (a Tensor, or a tuple whose first item it is)."""
    hidden = output[0] if isinstance(output, tuple) else output
    if not isinstance(hidden, Tensor):
        raise TypeError(f"a decoder block returned {type(output).__name__}; expected a Tensor or a tuple")
    return hidden


def _with_hidden(output: Tensor | tuple, hidden: Tensor) -> Tensor | tuple:
    """The block output with its residual stream swapped for `hidden`, same structure."""
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def logits_of(model: nn.Module, inputs: dict) -> Tensor:
    """Run `model(**inputs)` and return its logits [B, T, V] (HF output objects or plain tensors)."""
    out = model(**inputs)
    return out.logits if hasattr(out, "logits") else out


# ----------------------------------------------------------------------------- positions


def _as_rows(positions: Tensor) -> Tensor:
    """Positions as a LongTensor [B, P]; [B] means one position per row."""
    if not isinstance(positions, Tensor) or positions.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"positions must be an integer Tensor of shape [B] or [B, P], got {positions!r}")
    if positions.dim() not in (1, 2):
        raise ValueError(f"positions must have shape [B] or [B, P], got {tuple(positions.shape)}")
    return (positions.unsqueeze(1) if positions.dim() == 1 else positions).long()


def _resolve(positions: Tensor, batch: int, seq_len: int, unique: bool = False) -> Tensor:
    """Non-negative positions [B, P] checked against the hidden state's batch and sequence sizes."""
    if positions.shape[0] != batch:
        raise ValueError(f"positions are given for {positions.shape[0]} rows but the forward pass has {batch}")
    bad = (positions < -seq_len) | (positions >= seq_len)
    if bad.any():
        value = positions[bad][0].item()
        raise IndexError(f"position {value} is out of range for sequence length {seq_len} "
                         f"(valid: {-seq_len}..{seq_len - 1})")
    resolved = positions % seq_len
    if unique and resolved.shape[1] > 1:
        ordered = resolved.sort(dim=1).values
        if (ordered[:, 1:] == ordered[:, :-1]).any():
            raise ValueError("the same position appears twice in one row; each injected position needs one vector")
    return resolved


# ----------------------------------------------------------------------------- capture


@dataclass
class Capture:
    """Residual-stream states recorded by :func:`capture`, one slot per layer."""

    single: bool  # positions were [B]: drop the P axis
    layers: list[Tensor | None] = field(default_factory=list)

    @property
    def states(self) -> Tensor:
        """[L, B, D] for positions [B], [L, B, P, D] for positions [B, P]."""
        missing = [layer for layer, state in enumerate(self.layers) if state is None]
        if missing:
            raise RuntimeError(f"no forward pass through block(s) {missing} ran inside capture()")
        states = torch.stack(self.layers)
        return states.squeeze(2) if self.single else states


@contextmanager
def capture(model: nn.Module, positions: Tensor) -> Iterator[Capture]:
    """Record the output of every block at `positions` during the forward run inside the block.

    Autograd is kept if enabled. A later forward inside the same block overwrites the record.
    """
    rows = _as_rows(positions)
    blocks = find_blocks(model)
    record = Capture(single=positions.dim() == 1, layers=[None] * len(blocks))

    def make_hook(layer: int):
        def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> None:
            hidden = _hidden(output)
            pos = _resolve(rows.to(hidden.device), hidden.shape[0], hidden.shape[1])
            batch = torch.arange(hidden.shape[0], device=hidden.device).unsqueeze(1)
            record.layers[layer] = hidden[batch, pos]

        return hook

    handles = [block.register_forward_hook(make_hook(layer)) for layer, block in enumerate(blocks)]
    try:
        yield record
    finally:
        for handle in handles:
            handle.remove()


def extract(model: nn.Module, inputs: dict, positions: Tensor) -> Tensor:
    """Residual stream at `positions` for every layer, from one no-grad forward of model(**inputs).

    Returns [L, B, D] for positions [B] (negative allowed: -1 is the last token) or [L, B, P, D].
    """
    with torch.no_grad(), capture(model, positions) as record:
        model(**inputs)
    return record.states


# ----------------------------------------------------------------------------- inject


def _layer_rows(layers: int | Tensor, n_layers: int, batch: int) -> dict[int, Tensor | None]:
    """Map each injection layer to the rows it applies to (None: every row)."""
    if isinstance(layers, Tensor):
        if layers.dtype not in (torch.int32, torch.int64) or layers.shape != (batch,):
            raise ValueError(f"layers must be an int or an integer Tensor of shape [{batch}], "
                             f"got {layers.dtype} {tuple(layers.shape)}")
        bad = (layers < -1) | (layers >= n_layers)
        if bad.any():
            raise IndexError(f"layer {layers[bad][0].item()} is out of range: valid are 0..{n_layers - 1} "
                             "and -1 (no injection for that row)")
        return {int(l): (layers == l).nonzero().squeeze(1) for l in layers.unique().tolist() if l >= 0}
    if isinstance(layers, bool) or not isinstance(layers, int):
        raise TypeError(f"layers must be an int or a LongTensor [B], got {layers!r}")
    if not 0 <= layers < n_layers:
        raise IndexError(f"layer {layers} is out of range: valid are 0..{n_layers - 1}")
    return {layers: None}


def _vectors_rows(vectors: Tensor, rows: Tensor) -> Tensor:
    """Vectors as [B, P, D] matching positions [B, P]; [D] is broadcast, [B, D] needs P = 1."""
    batch, n_pos = rows.shape
    if vectors.dim() == 1:
        return vectors.expand(batch, n_pos, -1)
    if vectors.dim() == 2 and n_pos == 1:
        vectors = vectors.unsqueeze(1)
    if vectors.dim() != 3 or vectors.shape[:2] != (batch, n_pos):
        raise ValueError(f"vectors of shape {tuple(vectors.shape)} do not match positions of shape "
                         f"{tuple(rows.shape)}: give [D], [B, D] (one position per row) or [B, P, D]")
    return vectors


@contextmanager
def inject(model: nn.Module, layers: int | Tensor, positions: Tensor, vectors: Tensor,
           mode: str = "replace") -> Iterator[None]:
    """Replace or add `vectors` in the residual stream at (layer, position) in every forward inside.

    layers: one int for all rows, or a LongTensor [B] giving each row its own layer (-1: none).
    positions: [B] or [B, P]; vectors: [D], [B, D] or [B, P, D]. Gradients flow into `vectors`.
    Raises on leaving the block if a requested layer's hook never fired.
    """
    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is not one of {', '.join(MODES)}")
    rows = _as_rows(positions)
    vecs = _vectors_rows(vectors, rows)
    blocks = find_blocks(model)
    targets = _layer_rows(layers, len(blocks), rows.shape[0])
    fired: set[int] = set()

    def make_hook(layer: int, which: Tensor | None):
        def hook(module: nn.Module, args: tuple, output: Tensor | tuple) -> Tensor | tuple:
            hidden = _hidden(output)
            if vecs.shape[-1] != hidden.shape[-1]:
                raise ValueError(f"vectors have width {vecs.shape[-1]} but the residual stream of "
                                 f"block {layer} has width {hidden.shape[-1]}")
            pos = _resolve(rows.to(hidden.device), hidden.shape[0], hidden.shape[1], unique=True)
            sel = torch.arange(hidden.shape[0], device=hidden.device) if which is None else which.to(hidden.device)
            idx_row = sel.unsqueeze(1).expand(-1, pos.shape[1])
            idx_pos = pos[sel]
            new = vecs.to(hidden.device)[sel].to(hidden.dtype)
            hidden = hidden.clone()
            hidden[idx_row, idx_pos] = new if mode == "replace" else hidden[idx_row, idx_pos] + new
            fired.add(layer)
            return _with_hidden(output, hidden)

        return hook

    handles = [blocks[layer].register_forward_hook(make_hook(layer, which)) for layer, which in targets.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
    missing = sorted(set(targets) - fired)
    if missing:
        raise RuntimeError(f"injection at layer(s) {missing} never happened: no forward pass through "
                           "those blocks ran inside inject()")


# ----------------------------------------------------------------------------- layer sweep


def _select(inputs: dict, index: Tensor) -> dict:
    """The rows `index` of every tensor in `inputs` (other values are passed through)."""
    return {k: v[index] if isinstance(v, Tensor) else v for k, v in inputs.items()}


def _shape(inputs: dict) -> tuple[int, int]:
    """(batch, sequence length) of a model's inputs, from input_ids or inputs_embeds."""
    key = "input_ids" if "input_ids" in inputs else "inputs_embeds"
    if key not in inputs:
        raise ValueError(f"inputs need input_ids or inputs_embeds, got keys {sorted(inputs)}")
    return inputs[key].shape[0], inputs[key].shape[1]


def _keep_last(model: nn.Module, inputs: dict) -> dict:
    """`inputs` plus logits_to_keep=1 where the model takes it (HF: no logits for earlier positions)."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return {**inputs, "logits_to_keep": 1}
    return inputs


def last_logits(model: nn.Module, inputs: dict) -> Tensor:
    """Logits [B, V] at the final position of model(**inputs)."""
    return logits_of(model, _keep_last(model, inputs))[:, -1]


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


def _only_last(rows: Tensor, seq_len: int) -> bool:
    """Whether every row injects at the last position only (so earlier positions are untouched)."""
    return rows.shape[1] == 1 and bool(((rows == -1) | (rows == seq_len - 1)).all())


METHODS = ("auto", "truncated", "cached", "repeated")


def layer_sweep(model: nn.Module, inputs: dict, positions: Tensor, vectors: Tensor, mode: str = "replace",
                per_layer: bool = False, rows_per_pass: int = 256, method: str = "auto") -> Tensor:
    """Same result as :func:`layer_sweep_loop` (up to float rounding) in few batched passes.

    method picks how (all need no other change to the model than what they restore):

    - "repeated": each prompt is repeated once per layer, row l injecting at layer l (any model,
      any positions). rows_per_pass bounds the rows of one forward (prompts x layers).
    - "cached": with injection at the last position of a Hugging Face causal LM, the prefix is
      unaffected, so it runs once with a KV cache and only the last token is run, through all the
      blocks, for the L variants. rows_per_pass bounds the rows of one forward (prompts x layers).
    - "truncated": as "cached", but in replace mode blocks 0..l are wasted work for the last
      token, so for each layer l the last token starts as the vector itself (inputs_embeds) and runs
      through blocks l+1..L-1 only, reading the prefix's cache. Needs a model whose forward feeds
      inputs_embeds to its first block unchanged; this is checked once per model against hooks
      (:func:`supports_truncation`). Consecutive layers share a forward where rows_per_pass allows
      (rows: prompts x layers in it); a forward has at least all the prompts of a chunk.
    - "auto": the first of "truncated", "cached", "repeated" that applies.

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
    chosen = _choose_method(model, method, mode, rows, seq_len)
    if chosen == "truncated":
        sweep, per_pass = partial(_sweep_truncated, rows_per_pass=rows_per_pass), rows_per_pass
    else:
        sweep = _sweep_cached if chosen == "cached" else _sweep_repeated
        per_pass = max(1, rows_per_pass // n_layers)
    chunks = []
    with torch.no_grad():
        for start in range(0, batch, per_pass):
            index = torch.arange(start, min(start + per_pass, batch))
            chunks.append(sweep(model, _select(inputs, index), rows[index], vecs[index], mode))
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)


def _choose_method(model: nn.Module, method: str, mode: str, rows: Tensor, seq_len: int) -> str:
    """The sweep method to run: `method` itself if it applies (else an error), or for "auto" the best."""
    if method == "repeated":
        return method
    why_not_cached = None
    if seq_len < 2 or not _only_last(rows, seq_len):
        why_not_cached = "prompts of >= 2 tokens and injection at the last position only"
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
    ok, reason = _truncation_verdict(model)
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


def _prefix_and_last(model: nn.Module, inputs: dict) -> tuple:
    """The KV cache of every token but the last, and the last step's inputs (whole attention mask)."""
    prefix = {k: v[:, :-1] if isinstance(v, Tensor) else v for k, v in inputs.items()}
    cache = model(**_keep_last(model, prefix), use_cache=True).past_key_values
    last = {k: v if k == "attention_mask" or not isinstance(v, Tensor) else v[:, -1:] for k, v in inputs.items()}
    return cache, last


def _sweep_cached(model: nn.Module, inputs: dict, rows: Tensor, vecs: Tensor, mode: str) -> Tensor:
    """HF path: prefix once with a KV cache, then the last token for every layer at once."""
    batch, n_layers = vecs.shape[:2]
    cache, last = _prefix_and_last(model, inputs)
    cache.batch_repeat_interleave(n_layers)
    last = {k: v.repeat_interleave(n_layers, dim=0) if isinstance(v, Tensor) else v for k, v in last.items()}
    layers = torch.arange(n_layers).repeat(batch)  # row b * L + l injects at layer l
    at_last = torch.full((batch * n_layers,), -1, dtype=torch.long)
    with inject(model, layers, at_last, vecs.flatten(0, 1), mode):
        logits = last_logits(model, {**last, "past_key_values": cache, "use_cache": True})
    return logits.view(batch, n_layers, -1).transpose(0, 1)


def _sweep_truncated(model: nn.Module, inputs: dict, rows: Tensor, vecs: Tensor, mode: str,
                     rows_per_pass: int = 256) -> Tensor:
    """HF replace path: prefix once with a KV cache; for layer l, the vector through blocks l+1.. only.

    Layers go in groups of consecutive layers, as many as fit rows_per_pass rows: group a.. runs
    blocks a+1.. for all its rows, and hooks replace the state of layer a+j's rows after block a+j
    (a little wasted work bought back by larger matrix products and fewer forwards).
    """
    if mode != "replace":
        raise ValueError(f"the truncated sweep needs mode='replace', got {mode!r}")
    batch, n_layers = vecs.shape[:2]
    group = min(n_layers, max(1, rows_per_pass // batch))
    group = -(-n_layers // -(-n_layers // group))  # same number of groups, sizes balanced
    cache, last = _prefix_and_last(model, inputs)
    return torch.cat([_run_group(model, cache, last, list(range(start, min(start + group, n_layers))), vecs)
                      for start in range(0, n_layers, group)])


def _run_group(model: nn.Module, cache, last: dict, layers: list[int], vecs: Tensor, truncate: bool = True) -> Tensor:
    """Final logits [G, B, V] with the last token's state after block layers[g] replaced by vecs[:, layers[g]].

    truncate: the decoder list holds blocks layers[0]+1.. only, the layers[0] rows' vectors enter as
    inputs_embeds (attention modules index the cache by their own layer_idx) and the other rows are
    hooked. Without truncate, the reference: the full stack, every row hooked.
    cache: the prefix's KV cache (not changed: each run gets a copy, since a forward appends the new
    token to the cache layers it passes through); last: the last step's inputs; vecs [B, L, 1, D].
    """
    batch, size = vecs.shape[0], len(layers)
    row_layers = torch.tensor(layers).repeat(batch)  # row b * G + g injects at layers[g]
    embeds = vecs[:, layers].flatten(0, 1)  # [B * G, 1, D]
    work = _fork(cache)
    if size > 1:
        work.batch_repeat_interleave(size)
    step = {k: v.repeat_interleave(size, dim=0) if isinstance(v, Tensor) else v for k, v in last.items()}
    step.update(past_key_values=work, use_cache=True)
    at_last = torch.full((batch * size,), -1, dtype=torch.long)
    if not truncate:
        with inject(model, row_layers, at_last, embeds, "replace"):
            return last_logits(model, step).view(batch, size, -1).transpose(0, 1)
    start = layers[0]
    if min(layers) != start:
        raise ValueError(f"a truncated group must start with its lowest layer, got {layers}")
    embedding = model.get_input_embeddings().weight
    step = {k: v for k, v in step.items() if k not in ("input_ids", "inputs_embeds")}
    step["inputs_embeds"] = embeds.to(device=embedding.device, dtype=embedding.dtype)
    hooked = torch.where(row_layers == start, -1, row_layers)
    blocks = find_blocks(model)
    # Hooks first: inject finds the blocks in the full list; they stay on the same block objects.
    with inject(model, hooked, at_last, embeds, "replace"), \
            _swapped(model, blocks, nn.ModuleList(list(blocks)[start + 1:])):
        return last_logits(model, step).view(batch, size, -1).transpose(0, 1)


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


_TRUNCATION_VERDICTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VERIFY_TOL = 1e-5  # relative to the largest reference logit


def supports_truncation(model: nn.Module) -> bool:
    """Whether layer_sweep's "truncated" method is exact for `model` (checked once, then remembered).

    The check: a Hugging Face model with a KV cache, the same kind of layer at every index (the
    forward may pick a mask by a block's index in the list), and on a small random left-padded
    prompt with random vectors, the truncated path equals the hook-based path (same prompts, same
    cache; the reference for all three checks in one forward) at the first, middle and last
    layers, up to 1e-5 of the largest logit; this fails e.g.
    where the forward adds position embeddings to inputs_embeds (GPT-2). An error in the check also
    means no.
    """
    return _truncation_verdict(model)[0]


def _truncation_verdict(model: nn.Module) -> tuple[bool, str]:
    """(ok, reason if not) for :func:`supports_truncation`, cached per model object."""
    if model not in _TRUNCATION_VERDICTS:
        try:
            verdict = _verify_truncation(model)
        except Exception as error:  # noqa: BLE001 - any failure means: use the hook-based path
            verdict = (False, f"the check raised {type(error).__name__}: {error}")
        _TRUNCATION_VERDICTS[model] = verdict
    return _TRUNCATION_VERDICTS[model]


def _verify_truncation(model: nn.Module) -> tuple[bool, str]:
    """The check behind :func:`supports_truncation`, uncached; (ok, reason if not)."""
    if not _supports_cache(model):
        return False, "not a Hugging Face model with a KV cache"
    if "inputs_embeds" not in inspect.signature(model.forward).parameters:
        return False, "its forward takes no inputs_embeds"
    n_layers = num_layers(model)
    layer_types = getattr(model.config, "layer_types", None)
    if layer_types is not None and len(set(layer_types[:n_layers])) > 1:
        return False, f"its layers are of different types ({sorted(set(layer_types))})"
    embedding = model.get_input_embeddings()
    vocab, width = embedding.weight.shape
    gen = torch.Generator().manual_seed(0)
    sequences = torch.randint(0, vocab, (2, 5), generator=gen).tolist()
    probe = pad_left([sequences[0][1:], sequences[1]], pad_id=0, position_ids=accepts_position_ids(model))
    probe = {k: v.to(embedding.weight.device) for k, v in probe.items()}
    vecs = torch.randn(2, n_layers, 1, width, generator=gen)
    groups = [[0, 1] if n_layers > 1 else [0], [n_layers // 2], [n_layers - 1]]
    flat = [layer for layers in groups for layer in layers]
    with torch.no_grad():
        cache, last = _prefix_and_last(model, probe)
        # The reference for every group in one forward (its rows are independent of each other).
        reference = _run_group(model, cache, last, flat, vecs, truncate=False)
        for i, layers in enumerate(groups):
            start = sum(len(g) for g in groups[:i])
            want = reference[start:start + len(layers)]
            got = _run_group(model, cache, last, layers, vecs, truncate=True)
            # Same shapes and the same operations on the same values: equal up to rounding noise.
            scale = want.abs().max().item()
            if got.shape != want.shape or not torch.allclose(got, want, rtol=_VERIFY_TOL, atol=_VERIFY_TOL * scale):
                diff = (got - want).abs().max().item() if got.shape == want.shape else float("nan")
                return False, (f"at layer(s) {layers} of a random probe it differs from the hook-based path "
                               f"(max |logit difference| {diff:.2e}, logits up to {scale:.2e}): its forward does "
                               "not feed inputs_embeds to the first block unchanged, or depends on a block's "
                               "index in the list")
    return True, ""


# ----------------------------------------------------------------------------- padding


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
