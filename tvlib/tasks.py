"""Synthetic task families for in-context learning from scratch, and their prompt formats.

A *task family* samples per-prompt task parameters (a weight vector, a sinusoid, an offset),
inputs, and labels, every draw from an explicit ``torch.Generator``. A *format* lays a prompt
out as a token sequence:

* ``pairwise``: ``x1 y1 x2 y2 ... xk`` -- the answer to ``x_i`` is read at ``x_i``;
* ``triplet``:  ``x1 -> y1 ... xk ->`` -- the answer is read at the arrow, a learned embedding
  (continuous tasks) or an extra token id ``vocab`` (discrete tasks).

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

FORMATS = ("pairwise", "triplet")


class Task(Protocol):
    """What a task family provides; ``discrete`` tasks have long labels, others float."""

    discrete: bool

    def model_kwargs(self) -> dict[str, int]: ...
    def sample_tasks(self, n: int, gen: torch.Generator) -> Tensor: ...
    def sample_x(self, n: int, k: int, gen: torch.Generator) -> Tensor: ...
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

    def sample_x(self, n: int, k: int, gen: torch.Generator) -> Tensor:
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

    def sample_x(self, n: int, k: int, gen: torch.Generator) -> Tensor:
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

    def sample_x(self, n: int, k: int, gen: torch.Generator) -> Tensor:
        return torch.randint(self.vocab, (n, k), generator=gen)

    def label(self, tasks: Tensor, xs: Tensor) -> Tensor:
        return (xs + tasks[:, None]) % self.vocab


TASKS = {"linear": LinearRegression, "sinusoid": Sinusoid, "offset": TokenOffset}


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


def check_format(fmt: str) -> None:
    """Raise a clear error for an unknown prompt format."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; valid formats: {', '.join(FORMATS)}")


def layout(task: Task, fmt: str, xs: Tensor, ys: Tensor) -> Prompts:
    """Interleave k examples into one prompt per row; the last label is left out."""
    check_format(fmt)
    B, k = ys.shape
    stride = 2 if fmt == "pairwise" else 3
    T = stride * k - 1
    x_pos = torch.arange(k) * stride
    answer_pos = x_pos + (stride - 2)  # pairwise: at x; triplet: at the arrow
    y_pos = x_pos[:-1] + stride - 1
    if task.discrete:
        arrow_id = task.model_kwargs()["vocab_size"] - 1
        ids = torch.full((B, T), arrow_id, dtype=torch.long)
        ids[:, x_pos] = xs
        ids[:, y_pos] = ys[:, :-1]
        inputs = {"input_ids": ids}
    else:
        d = xs.shape[-1]
        values = torch.zeros(B, T, d)
        values[:, x_pos] = xs
        values[:, y_pos, 0] = ys[:, :-1]
        is_arrow = torch.zeros(B, T, dtype=torch.bool)
        if fmt == "triplet":
            is_arrow[:, answer_pos] = True
        inputs = {"values": values, "is_arrow": is_arrow}
    return Prompts(inputs=inputs, targets=ys, answer_pos=answer_pos)


def sample_prompts(task: Task, fmt: str, n: int, k: int, gen: torch.Generator,
                   tasks: Tensor | None = None) -> Prompts:
    """Draw ``n`` prompts of ``k`` examples each (of the given per-row ``tasks`` if passed)."""
    if k < 1:
        raise ValueError(f"a prompt needs k >= 1 examples, got {k}")
    tasks = task.sample_tasks(n, gen) if tasks is None else tasks
    xs = task.sample_x(n, k, gen)
    return layout(task, fmt, xs, task.label(tasks, xs))


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
