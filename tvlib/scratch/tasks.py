"""Synthetic task families for in-context learning from scratch, and their prompt formats.

A *task family* samples per-prompt task parameters (a weight vector, a sinusoid, an offset,
a finite automaton, a token map), inputs, and labels, every draw from an explicit
``torch.Generator``. A *format* lays a prompt out as a token sequence:

* ``pairwise``: ``x1 y1 x2 y2 ... xk`` -- the answer to ``x_i`` is read at ``x_i``;
* ``triplet``:  ``x1 -> y1 ... xk ->`` -- the answer is read at the arrow, a learned embedding
  (continuous tasks) or the last token id of the vocabulary (discrete tasks).

A discrete x may be several tokens (a string ``x_1 .. x_m``); it then takes m positions and the
pairwise answer is read at its last token ``x_m``.

The last label is dropped, so every prompt ends with the position where the query's answer is
read; that last position is where task vectors are taken and injected. A zero-shot prompt is the
same with ``k = 1``. Which families, sizes and formats the book uses is our reconstruction of
Yang et al. (2025), whose exact settings are not available.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

LAYOUTS = ("pairwise", "triplet")


class Task(Protocol):
    """What a task family provides; ``discrete`` tasks have long labels, others float.

    ``sample_x`` gets the prompts' task parameters as ``tasks``; only a family whose inputs
    depend on the task uses them (:class:`TokenMap` keeps each query's inverse pair out of its
    demonstrations), the others ignore them and may be called without.
    """

    discrete: bool

    def model_kwargs(self) -> dict[str, int]: ...
    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor: ...
    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor: ...
    def label(self, tasks: Tensor, xs: Tensor) -> Tensor: ...


@dataclass(frozen=True)
class LinearRegression:
    """y = w.x / sqrt(d), w ~ N(0, I), x ~ x_scale * N(0, I) (Garg et al. 2022)."""

    n_dims: int = 4
    x_scale: float = 1.0
    discrete: bool = False

    def model_kwargs(self) -> dict[str, int]:
        return {"n_dims": self.n_dims, "n_out": 1}

    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor:
        return torch.randn(n, self.n_dims, generator=gen)

    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor:
        return self.x_scale * torch.randn(n, k, self.n_dims, generator=gen)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        return torch.einsum("nkd,nd->nk", xs, tasks) / math.sqrt(self.n_dims)


@dataclass(frozen=True)
class Sinusoid:
    """y = a sin(f x + phi), a ~ U[0.5, 1.5], f ~ U[0.5, 1.5], phi ~ U[0, 2 pi], x ~ x_scale U[-pi, pi].

    The ranges are our reconstruction (the paper's are not available).
    """

    x_scale: float = 1.0
    discrete: bool = False

    def model_kwargs(self) -> dict[str, int]:
        return {"n_dims": 1, "n_out": 1}

    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor:
        u = torch.rand(n, 3, generator=gen)
        return torch.stack([0.5 + u[:, 0], 0.5 + u[:, 1], 2 * math.pi * u[:, 2]], dim=1)

    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor:
        return self.x_scale * math.pi * (2 * torch.rand(n, k, 1, generator=gen) - 1)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        a, f, phi = (tasks[:, i, None] for i in range(3))
        return a * torch.sin(f * xs[..., 0] + phi)


@dataclass(frozen=True)
class TokenOffset:
    """y = (x + k) mod vocab with the offset k drawn from ``offsets`` (default 1..vocab-1)."""

    vocab: int = 16
    offsets: tuple[int, ...] = ()
    discrete: bool = True

    def __post_init__(self) -> None:
        if self.vocab < 2:
            raise ValueError(f"vocab must be >= 2, got {self.vocab}")
        bad = [k for k in self.offsets if not 0 <= k < self.vocab]
        if bad:
            raise ValueError(f"offsets {bad} are outside 0..{self.vocab - 1}")

    @property
    def offset_set(self) -> Tensor:
        return torch.tensor(self.offsets or range(1, self.vocab))

    def model_kwargs(self) -> dict[str, int]:
        return {"vocab_size": self.vocab + 1}  # + the arrow token, id = vocab

    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor:
        choices = self.offset_set
        return choices[torch.randint(len(choices), (n,), generator=gen)]

    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor:
        return torch.randint(self.vocab, (n, k), generator=gen)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        return (xs + tasks[:, None]) % self.vocab


MAP_KINDS = ("one_way", "inverse", "bijection", "copy", "involution")
EXCLUDES_INVERSE_PAIR = ("bijection", "involution")  # kinds whose query's inverse pair can be a demo


@dataclass(frozen=True)
class TokenMap:
    """A random token map per prompt: the token analogue of Dong et al.'s bijection tasks.

    Our reconstruction (the paper tests bijections on LLMs only). Tokens ``0 .. vocab-1`` split
    into X = ``0 .. m-1`` and Y = ``m .. 2m-1`` (m = vocab / 2); the arrow is token ``vocab``.
    A task is a partner table ``[vocab]`` with label(x) = partner[x]; it is always an involution
    (partner[partner[t]] = t). Each prompt draws its own table. Kinds (``MAP_KINDS``):

    * ``one_way``: x in X, y = s(x) for a uniformly random bijection s: X -> Y;
    * ``inverse``: x in Y, y = s^-1(x);
    * ``bijection``: x in X u Y, y = its partner under s or s^-1 (a map united with its inverse);
    * ``copy``: x in X u Y, y = x;
    * ``involution``: x in X u Y, y = p(x) for a uniformly random pairing p of all ``vocab``
      tokens, with no X/Y split and no fixed points (no word is its own antonym): the token
      analogue of antonym, an involution on one set.

    Inputs are drawn uniformly and independently from the kind's domain, so demonstrations may
    repeat and may include the query's own pair -- here the only way to know a fresh map's
    answer. Unlike Dong et al.'s sampler, a ``bijection`` or ``involution`` query's inverse pair
    (partner(q) -> q) never appears as a demonstration: it would hand ICL the answer by a
    backward look-up. Demonstrations are then uniform over the domain minus partner(q), which is
    why :meth:`sample_x` needs the prompts' tables. (For copy the inverse pair is the query's own.)
    """

    vocab: int = 16
    kind: str = "one_way"
    discrete: bool = True

    def __post_init__(self) -> None:
        if self.kind not in MAP_KINDS:
            raise ValueError(f"unknown map kind {self.kind!r}; valid kinds: {', '.join(MAP_KINDS)}")
        if self.vocab < 4 or self.vocab % 2:
            raise ValueError(f"vocab must be even and >= 4 (X and Y of vocab / 2 >= 2 tokens each), "
                             f"got {self.vocab}")

    @property
    def m(self) -> int:
        """Tokens in each of X and Y."""
        return self.vocab // 2

    @property
    def domain(self) -> Tensor:
        """The token ids inputs are drawn from."""
        lo, size = {"one_way": (0, self.m), "inverse": (self.m, self.m)}.get(self.kind, (0, self.vocab))
        return torch.arange(lo, lo + size)

    def model_kwargs(self) -> dict[str, int]:
        return {"vocab_size": self.vocab + 1}  # + the arrow token, id = vocab

    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor:
        rows = torch.arange(n)[:, None]
        if self.kind == "copy":
            return torch.arange(self.vocab).expand(n, -1).clone()
        if self.kind == "involution":  # shuffle all tokens, pair neighbours
            order = torch.rand(n, self.vocab, generator=gen).argsort(1)
            a, b = order[:, 0::2], order[:, 1::2]
        else:  # a random bijection X -> Y, stored with its inverse
            a = torch.arange(self.m).expand(n, -1)
            b = self.m + torch.rand(n, self.m, generator=gen).argsort(1)
        partner = torch.empty(n, self.vocab, dtype=torch.long)
        partner[rows, a], partner[rows, b] = b, a
        return partner

    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor:
        domain = self.domain
        if self.kind not in EXCLUDES_INVERSE_PAIR:
            return domain[torch.randint(len(domain), (n, k), generator=gen)]
        query = torch.randint(self.vocab, (n, 1), generator=gen)
        if k == 1:
            return query
        if tasks is None or len(tasks) != n:
            raise ValueError(f"{self.kind!r} keeps each query's inverse pair out of its demonstrations, so "
                             f"sample_x needs the {n} prompts' partner tables as tasks")
        banned = tasks.gather(1, query)  # the query's partner: its inverse pair's input
        demos = torch.randint(self.vocab - 1, (n, k - 1), generator=gen)
        return torch.cat([demos + (demos >= banned).long(), query], dim=1)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        return tasks.gather(1, xs)


ACCEPT_BAND = (0.25, 0.75)  # allowed fraction of accepted strings of a sampled DFA
MAX_STRINGS = 4096  # most strings n_symbols ** length that sampling may enumerate


@dataclass(frozen=True)
class RegularLanguage:
    """Is the string x in L? for a random regular language L per prompt (RegBench-style).

    Our reconstruction of the formal-language family of Yang et al. (2025), whose settings are
    not available. Each prompt draws a DFA: ``n_states`` states, start state 0, a uniformly
    random transition table over ``n_symbols`` symbols, each state accepting with probability
    1/2. DFAs are redrawn until the fraction of the ``n_symbols ** length`` strings of length
    ``length`` they accept (counted exactly) lies in ``ACCEPT_BAND`` = [0.25, 0.75], so that no
    language is (nearly) constant. The band is symmetric under complementing the accepting set,
    so every string is accepted with prior probability 1/2: without demonstrations the best
    guess is chance. x is a uniform string of ``length`` symbols.

    Token ids: symbols ``0 .. n_symbols-1``, labels ``n_symbols`` (reject) and ``n_symbols + 1``
    (accept), arrow ``n_symbols + 2``. A task is a ``[n_states, n_symbols + 1]`` table: row q
    holds the next state on each symbol, then 1 if q accepts.
    """

    n_states: int = 3
    n_symbols: int = 2
    length: int = 4
    discrete: bool = True

    def __post_init__(self) -> None:
        for name, lowest in (("n_states", 2), ("n_symbols", 2), ("length", 1)):
            if getattr(self, name) < lowest:
                raise ValueError(f"{name} must be >= {lowest}, got {getattr(self, name)}")
        if self.n_symbols ** self.length > MAX_STRINGS:
            raise ValueError(f"n_symbols ** length = {self.n_symbols}^{self.length} strings must be "
                             f"<= {MAX_STRINGS} (sampling enumerates them all)")

    def model_kwargs(self) -> dict[str, int]:
        return {"vocab_size": self.n_symbols + 3}  # symbols, reject, accept, arrow

    def strings(self) -> Tensor:
        """All strings of the input length in lexicographic order: ``[n_symbols ** length, length]``."""
        powers = self.n_symbols ** torch.arange(self.length - 1, -1, -1)
        return torch.arange(self.n_symbols ** self.length)[:, None] // powers % self.n_symbols

    def acceptance(self, tasks: Tensor) -> Tensor:
        """Fraction of all strings of the input length that each DFA accepts: ``[n]``."""
        labels = self.label(tasks, self.strings().expand(len(tasks), -1, -1))
        return (labels == self.n_symbols + 1).float().mean(1)

    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor:
        lo, hi = ACCEPT_BAND
        dfas = torch.empty(0, self.n_states, self.n_symbols + 1, dtype=torch.long)
        while len(dfas) < n:  # rejection sampling, 2n candidates a round
            step = torch.randint(self.n_states, (2 * n, self.n_states, self.n_symbols), generator=gen)
            accepting = torch.randint(2, (2 * n, self.n_states, 1), generator=gen)
            candidates = torch.cat([step, accepting], dim=2)
            rate = self.acceptance(candidates)
            dfas = torch.cat([dfas, candidates[(rate >= lo) & (rate <= hi)]])
        return dfas[:n]

    def sample_x(self, n: int, k: int, gen: torch.Generator, tasks: Tensor | None = None) -> Tensor:
        return torch.randint(self.n_symbols, (n, k, self.length), generator=gen)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        rows = torch.arange(len(tasks))[:, None]
        state = torch.zeros(xs.shape[:-1], dtype=torch.long)
        for t in range(xs.shape[-1]):
            state = tasks[rows, state, xs[..., t]]
        return self.n_symbols + tasks[rows, state, self.n_symbols]


TASKS = {"linear": LinearRegression, "sinusoid": Sinusoid, "offset": TokenOffset,
         "dfa": RegularLanguage, "map": TokenMap}


def make_task(name: str, **kwargs) -> Task:
    """Build a task family by name, e.g. ``make_task("offset", vocab=16)``."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    return TASKS[name](**kwargs)


@dataclass
class Prompts:
    """A batch of prompts: model inputs, the labels and where each answer is read."""

    inputs: dict[str, Tensor]  # keyword arguments of GPT.forward
    targets: Tensor  # [B, k] labels of the k examples (the last is the query's)
    answer_pos: Tensor  # [k] positions whose output predicts each label


def check_layout(layout: str) -> None:
    """Raise a clear error for an unknown prompt layout."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown prompt layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")


def stride(layout: str, x_tokens: int = 1) -> int:
    """Positions per example: its x tokens, its label and, in the triplet format, the arrow."""
    check_layout(layout)
    return x_tokens + (1 if layout == "pairwise" else 2)


def prompt_length(layout: str, k: int, x_tokens: int = 1) -> int:
    """Positions of a k-example prompt (its last label is left out)."""
    return stride(layout, x_tokens) * k - 1


def build_prompts(task: Task, layout: str, xs: Tensor, ys: Tensor) -> Prompts:
    """Interleave k examples into one prompt per row; the last label is left out.

    Discrete ``xs`` are ``[B, k]`` (one token each) or ``[B, k, m]`` (m tokens each).
    """
    B, k = ys.shape
    m = xs.shape[2] if task.discrete and xs.dim() == 3 else 1
    s = stride(layout, m)
    T = prompt_length(layout, k, m)
    x_pos = torch.arange(k) * s  # where each example starts
    answer_pos = x_pos + (s - 2)  # pairwise: at x_m; triplet: at the arrow
    y_pos = x_pos[:-1] + s - 1
    if task.discrete:
        arrow_id = task.model_kwargs()["vocab_size"] - 1
        ids = torch.full((B, T), arrow_id, dtype=torch.long)
        ids[:, (x_pos[:, None] + torch.arange(m)).flatten()] = xs.reshape(B, k * m)
        ids[:, y_pos] = ys[:, :-1]
        inputs = {"input_ids": ids}
    else:
        d = xs.shape[-1]
        values = torch.zeros(B, T, d)
        values[:, x_pos] = xs
        values[:, y_pos, 0] = ys[:, :-1]
        is_arrow = torch.zeros(B, T, dtype=torch.bool)
        if layout == "triplet":
            is_arrow[:, answer_pos] = True
        inputs = {"values": values, "is_arrow": is_arrow}
    return Prompts(inputs=inputs, targets=ys, answer_pos=answer_pos)


def sample_prompts(task: Task, layout: str, n: int, k: int, gen: torch.Generator,
                   tasks: Tensor | None = None) -> Prompts:
    """Draw ``n`` prompts of ``k`` examples each (of the given per-row ``tasks`` if passed)."""
    if k < 1:
        raise ValueError(f"a prompt needs k >= 1 examples, got {k}")
    tasks = task.sample_tasks(n, gen) if tasks is None else tasks
    xs = task.sample_x(n, k, gen, tasks)
    return build_prompts(task, layout, xs, task.label(tasks, xs))


def answers(task: Task, outputs: Tensor, positions: Tensor) -> Tensor:
    """Model outputs at the answer positions: ``[B, P, V]`` logits or ``[B, P]`` predictions."""
    out = outputs[:, positions]
    return out if task.discrete else out[..., 0]


def loss(task: Task, pred: Tensor, targets: Tensor) -> Tensor:
    """Training loss: cross-entropy (discrete) or mean squared error."""
    if task.discrete:
        return F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1))
    return F.mse_loss(pred, targets)


def error(task: Task, pred: Tensor, targets: Tensor) -> Tensor:
    """Per-example error (same shape as ``targets``): squared error or 0/1 error."""
    if task.discrete:
        return (pred.argmax(-1) != targets).float()
    return (pred - targets) ** 2
