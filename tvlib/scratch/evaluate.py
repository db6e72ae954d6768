"""Evaluating transformers trained from scratch: in-context learning and task-vector prompting.

* :func:`icl_errors`: the error at each answer position of fresh prompts (i demonstrations in
  context at position i).
* :func:`tv_errors`: task-vector prompting by layer (Hendel et al.'s protocol, our adaptation to
  these tasks), against its zero-shot and ICL baselines; extraction and injection go through
  ``tvlib.engine`` (:func:`inject_each_layer` is its batched layer sweep).

Kept apart from :mod:`tvlib.scratch.train`, whose source is part of the run cache's key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from tvlib import engine
from tvlib.scratch import tasks
from tvlib.scratch.gpt import GPT
from tvlib.scratch.gpt import model_inputs, query_positions


@torch.no_grad()
def icl_errors(model: GPT, task: tasks.Task, layout: str, k: int, n: int, seed: int) -> Tensor:
    """Mean error at each answer position of ``n`` fresh k-example prompts: ``[k]``.

    Entry i is the error with i demonstrations in context (entry 0 is zero-shot).
    """
    prompts = tasks.sample_prompts(task, layout, n, k, torch.Generator().manual_seed(seed))
    out = model(**model_inputs(model, prompts.inputs))
    return tasks.error(task, tasks.answers(task, out, prompts.answer_pos), prompts.targets).mean(0)


@torch.no_grad()
def inject_each_layer(model: GPT, task: tasks.Task, zero: tasks.Prompts, vectors: Tensor) -> Tensor:
    """Errors ``[L, B]`` of zero-shot prompts with ``vectors[l]`` ([L, B, D]) replacing layer l.

    The engine's batched layer sweep: the zero-shot prompts end at their answer position.
    """
    B = vectors.shape[1]
    out = engine.layer_sweep(model, model_inputs(model, zero.inputs), query_positions(B), vectors, per_layer=True)
    pred = tasks.answers(task, out.movedim(0, 1), slice(None))  # [B, L(, V)]: the layer axis as positions
    return tasks.error(task, pred, zero.targets[:, -1:]).T


@dataclass
class TVResult:
    """Task-vector prompting against its baselines, all on the same queries (mean errors)."""

    zero_shot: float  # the zero-shot prompt alone
    icl: float  # (k-1)-shot ICL
    layers: Tensor  # [L] zero-shot prompt with the layer-l task vector injected at layer l
    layers_avg: Tensor  # [L] same with the vector averaged over all answer positions of the prompt

    @property
    def best(self) -> float:
        return float(self.layers.min())

    @property
    def best_layer(self) -> int:
        return int(self.layers.argmin())

    def recovery(self, errors: Tensor | float) -> Tensor:
        """Fraction of the zero-shot-to-ICL error gap closed: 0 = no help, 1 = as good as ICL."""
        return (self.zero_shot - torch.as_tensor(errors)) / (self.zero_shot - self.icl)


@torch.no_grad()
def tv_errors(model: GPT, task: tasks.Task, layout: str, k: int, n: int, seed: int) -> TVResult:
    """Task-vector prompting by layer (the protocol of Hendel et al., our adaptation).

    The task vector at layer l is the residual stream after block l at the last position of a
    k-example prompt (k-1 demonstrations and a dummy query x'); it replaces layer l at the last
    position of a zero-shot prompt of the same task with a different query x. The ICL baseline
    is the (k-1)-shot error at x' in the same prompts.
    """
    gen = torch.Generator().manual_seed(seed)
    params = task.sample_tasks(n, gen)
    icl = tasks.sample_prompts(task, layout, n, k, gen, tasks=params)
    zero = tasks.sample_prompts(task, layout, n, 1, gen, tasks=params)
    positions = icl.answer_pos.expand(n, -1)
    with engine.capture(model, positions) as cap:
        out = model(**model_inputs(model, icl.inputs))
    states = cap.states  # [L, n, k, D]
    icl_err = tasks.error(task, tasks.answers(task, out, icl.answer_pos[-1:]), icl.targets[:, -1:]).mean()
    zero_out = model(**model_inputs(model, zero.inputs))
    zero_err = tasks.error(task, tasks.answers(task, zero_out, zero.answer_pos), zero.targets).mean()
    return TVResult(zero_shot=float(zero_err), icl=float(icl_err),
                    layers=inject_each_layer(model, task, zero, states[:, :, -1]).mean(1),
                    layers_avg=inject_each_layer(model, task, zero, states.mean(2)).mean(1))
