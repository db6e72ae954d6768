"""Hook sites on a decoder-only model's residual stream: find the blocks, capture, inject.

Works on Hugging Face causal LMs and on tvlib's own GPT alike, through forward hooks on the decoder
blocks, which are found generically (:func:`find_blocks`). As in Hendel et al. (2023), "layer l" is
the OUTPUT of block l (l = 0..L-1), i.e. the residual stream after that block. This is the only
hook site for the residual stream; :mod:`tvlib.engine.attention` is the one for attention weights.

- :func:`capture` / :func:`extract`: the residual stream at chosen positions, every layer, one pass.
- :func:`inject`: replace (Hendel/Dong task vectors) or add to (function-vector style) the residual
  stream at (layer, position); one position per row, or many at once (TaskV-M). Each row may get
  its own layer, which is how :mod:`tvlib.engine.sweep` evaluates every layer in a few passes.

Hooks are always removed, also when the body of a context raises; an injection that never
happened, a layer or position out of range, or a vector of the wrong width is an error.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

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


class _StopForward(Exception):
    """Raised by :func:`extract`'s hook to end a forward pass after the last block it needs."""


def extract(model: nn.Module, inputs: dict, positions: Tensor, up_to: int | None = None) -> Tensor:
    """Residual stream at `positions` for every layer, from one no-grad forward of model(**inputs).

    Returns [L, B, D] for positions [B] (negative allowed: -1 is the last token) or [L, B, P, D].
    ``up_to``: stop the forward after block ``up_to`` and return layers 0..up_to only; the later
    blocks and the LM head do not run (what a read at one layer costs, nothing more).
    """
    if up_to is None:
        with torch.no_grad(), capture(model, positions) as record:
            model(**inputs)
        return record.states
    blocks = find_blocks(model)
    if isinstance(up_to, bool) or not isinstance(up_to, int) or not 0 <= up_to < len(blocks):
        raise IndexError(f"up_to={up_to!r} is out of range: valid are 0..{len(blocks) - 1}")

    def stop(module: nn.Module, args: tuple, output) -> None:
        raise _StopForward

    with torch.no_grad(), capture(model, positions) as record:
        handle = blocks[up_to].register_forward_hook(stop)  # after capture's hook on the same block
        try:
            model(**inputs)
        except _StopForward:
            pass
        finally:
            handle.remove()
    states = torch.stack(record.layers[:up_to + 1])
    return states.squeeze(2) if record.single else states


def extract_continuations(model: nn.Module, prefix_ids: Tensor, continuations: list[Tensor], layer: int) -> Tensor:
    """States after block ``layer`` at the last token of ``prefix + continuation``, ``[C, B, D]``,
    with one forward over the shared prefix: its KV cache (Hugging Face ``DynamicCache``) is copied
    for each continuation, so a prompt read with several query lines costs one prompt, not several.

    prefix_ids: ``[B, T0]``, unpadded (rows of equal length); continuations: ``C`` tensors ``[B, T1]``.
    Equal to :func:`extract` on the concatenated ids, up to rounding (a test checks).
    """
    import copy

    from transformers import DynamicCache

    if any(c.dim() != 2 or c.shape[0] != prefix_ids.shape[0] for c in continuations) or prefix_ids.dim() != 2:
        raise ValueError(f"prefix_ids must be [B, T0] and every continuation [B, T1] with the same B; got "
                         f"{tuple(prefix_ids.shape)} and {[tuple(c.shape) for c in continuations]}")
    cache = DynamicCache()
    extract(model, {"input_ids": prefix_ids, "past_key_values": cache, "use_cache": True},
            torch.full((prefix_ids.shape[0],), -1), up_to=layer)
    last = torch.full((prefix_ids.shape[0],), -1)
    return torch.stack([extract(model, {"input_ids": c, "past_key_values": copy.deepcopy(cache), "use_cache": True},
                                last, up_to=layer)[layer] for c in continuations])


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


def _keep_last(model: nn.Module, inputs: dict) -> dict:
    """`inputs` plus logits_to_keep=1 where the model takes it (HF: no logits for earlier positions)."""
    if "logits_to_keep" in inspect.signature(model.forward).parameters:
        return {**inputs, "logits_to_keep": 1}
    return inputs


def last_logits(model: nn.Module, inputs: dict) -> Tensor:
    """Logits [B, V] at the final position of model(**inputs)."""
    return logits_of(model, _keep_last(model, inputs))[:, -1]
