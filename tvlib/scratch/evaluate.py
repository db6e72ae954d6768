"""Evaluating transformers trained from scratch: in-context learning and task-vector prompting.

* :func:`icl_errors`: the error at each answer position of fresh seeded prompts (i demonstrations
  in context at position i), of a GPT or of a baseline (:mod:`tvlib.scratch.baselines`) on the
  same prompts.
* :func:`tv_errors`: task-vector prompting by layer (Hendel et al.'s protocol, our adaptation to
  these tasks), against its zero-shot and ICL references, as a :class:`tvlib.analysis.LayerSweep`;
  extraction and injection go through ``tvlib.engine`` (:func:`inject_each_layer` is its batched
  layer sweep).

Kept apart from :mod:`tvlib.scratch.train`, whose source is part of the run cache's key.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
import torch
from torch import Tensor

from tvlib import engine
from tvlib.analysis import LayerSweep
from tvlib.scratch import tasks
from tvlib.scratch.baselines import Baseline
from tvlib.scratch.gpt import GPT, model_inputs, query_positions


def sample_examples(task: tasks.Task, n: int, k: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` rows of ``k`` examples ``(xs, ys)``, each row of a fresh task.

    Drawn in the order of :func:`tvlib.scratch.tasks.sample_prompts`, so laying them out with
    ``build_prompts`` gives the prompts that it would draw from the same generator.
    """
    params = task.sample_tasks(n, gen)
    xs = task.sample_x(n, k, gen)
    return xs, task.label(params, xs)


def error(task: tasks.Task, pred: Tensor, targets: Tensor) -> Tensor:
    """Per-example error (shape of ``targets``): squared error, or for discrete tasks the 0/1 error.

    A discrete prediction is a score per token; the answer is the top-scoring one, ties broken
    uniformly at random, and the error is its expectation. A GPT's logits do not tie, so for it
    this is ``tasks.error``; a majority vote ties often.
    """
    if not task.discrete:
        return tasks.error(task, pred, targets)
    top = pred == pred.amax(-1, keepdim=True)
    hit = top.gather(-1, targets.expand(pred.shape[:-1])[..., None])[..., 0]  # targets broadcast like tasks.error
    return 1 - hit.float() / top.sum(-1)


@torch.no_grad()
def predict(model: GPT | Baseline, task: tasks.Task, layout: str, xs: Tensor, ys: Tensor) -> Tensor:
    """What ``model`` predicts for each example of the rows ``(xs, ys)`` from the examples before it.

    A GPT reads the rows laid out as ``layout`` prompts (its outputs at the answer positions); a
    baseline is called on the examples themselves (Garg et al.'s interface).
    """
    if not isinstance(model, GPT):
        return model(xs, ys)
    prompts = tasks.build_prompts(task, layout, xs, ys)
    return tasks.answers(task, model(**model_inputs(model, prompts.inputs)), prompts.answer_pos)


@torch.no_grad()
def icl_errors(model: GPT | Baseline, task: tasks.Task, layout: str, k: int, n: int, seed: int) -> Tensor:
    """Mean error at each answer position of ``n`` fresh k-example prompts drawn from ``seed``: ``[k]``.

    Entry i is the error with i demonstrations in context (entry 0 is zero-shot). A GPT and a
    baseline given the same arguments see the same prompts.
    """
    if k < 1:
        raise ValueError(f"a prompt needs k >= 1 examples, got {k}")
    xs, ys = sample_examples(task, n, k, torch.Generator().manual_seed(seed))
    return error(task, predict(model, task, layout, xs, ys), ys).mean(0)


@torch.no_grad()
def inject_each_layer(model: GPT, task: tasks.Task, zero: tasks.Prompts, vectors: Tensor) -> Tensor:
    """Errors ``[L, B]`` of zero-shot prompts with ``vectors[l]`` ([L, B, D]) replacing layer l.

    The engine's batched layer sweep: the zero-shot prompts end at their answer position.
    """
    B = vectors.shape[1]
    out = engine.layer_sweep(model, model_inputs(model, zero.inputs), query_positions(B), vectors, per_layer=True)
    pred = tasks.answers(task, out.movedim(0, 1), slice(None))  # [B, L(, V)]: the layer axis as positions
    return error(task, pred, zero.targets[:, -1:]).T


@torch.no_grad()
def tv_errors(model: GPT, task: tasks.Task, layout: str, k: int, n: int, seed: int,
              average_positions: bool = False) -> LayerSweep:
    """Task-vector prompting by layer (the protocol of Hendel et al., our adaptation): one seed.

    The task vector at layer l is the residual stream after block l at the last position of a
    k-example prompt (k-1 demonstrations and a dummy query x'); it replaces layer l at the last
    position of a zero-shot prompt of the same task with a different query x. The ICL reference
    is the (k-1)-shot error at x' in the same prompts. ``average_positions``: the vector is each
    layer's state averaged over all answer positions of the prompt instead (the same prompts, so
    the references are the same), a test of whether the task is spread over positions.
    """
    gen = torch.Generator().manual_seed(seed)
    params = task.sample_tasks(n, gen)
    icl = tasks.sample_prompts(task, layout, n, k, gen, tasks=params)
    zero = tasks.sample_prompts(task, layout, n, 1, gen, tasks=params)
    positions = icl.answer_pos.expand(n, -1)
    with engine.capture(model, positions) as cap:
        out = model(**model_inputs(model, icl.inputs))
    states = cap.states  # [L, n, k, D]
    icl_err = error(task, tasks.answers(task, out, icl.answer_pos[-1:]), icl.targets[:, -1:]).mean()
    zero_out = model(**model_inputs(model, zero.inputs))
    zero_err = error(task, tasks.answers(task, zero_out, zero.answer_pos), zero.targets).mean()
    vectors = states.mean(2) if average_positions else states[:, :, -1]
    return LayerSweep(by_layer=inject_each_layer(model, task, zero, vectors).mean(1).numpy(),
                      zero_shot=float(zero_err), icl=float(icl_err))


def tv_errors_dev_test(model: GPT, task: tasks.Task, layout: str, k: int, n: int, seed: int) -> LayerSweep:
    """:func:`tv_errors` with the layer chosen on dev prompts (``seed``) and the errors reported on
    separate test prompts (``seed + 1``): Hendel et al.'s and Dong et al.'s protocol."""
    dev = tv_errors(model, task, layout, k, n, seed)
    test = tv_errors(model, task, layout, k, n, seed + 1)
    return LayerSweep(test.by_layer, test.zero_shot, test.icl, dev_by_layer=dev.by_layer)


# Token-map kinds (tasks.MAP_KINDS) as rows of Dong et al.'s Table 1: (map, direction).
MAP_ROWS = {"one_way": ("token map", "X->Y"), "inverse": ("token map", "Y->X"), "bijection": ("token map", "X<->Y"),
            "copy": ("copy", "X<->Y"), "involution": ("involution", "X<->Y")}


def map_table(sweeps: Mapping[str, LayerSweep]) -> pd.DataFrame:
    """Token-map sweeps, keyed by kind, in Table 1's layout: accuracies (1 - error) of zero-shot, ICL
    and TaskV at the (dev-chosen) best layer, TaskV/ICL, the layer, and the book's learned-ICL guard."""
    unknown = sorted(set(sweeps) - set(MAP_ROWS))
    if unknown:
        raise ValueError(f"kinds {unknown} are not token-map kinds; valid: {', '.join(MAP_ROWS)}")
    rows = []
    for kind, s in sweeps.items():
        icl, tv = 1 - s.icl_mean, 1 - s.best
        rows.append({"map": MAP_ROWS[kind][0], "direction": MAP_ROWS[kind][1], "kind": kind,
                     "zero-shot": 1 - s.zero_shot_mean, "ICL": icl, "TaskV": tv,
                     "TaskV/ICL": tv / icl if icl > 0 else float("nan"), "layer": s.best_layer,
                     "learned ICL": s.learned_icl})
    return pd.DataFrame(rows)
