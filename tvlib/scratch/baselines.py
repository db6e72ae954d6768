"""Baselines for the from-scratch tasks: what a learner gets from the demonstrations without a transformer.

Garg et al.'s pattern (``LeastSquaresModel`` in their ``src/models.py``): a baseline is called
on the examples of a batch of prompts, ``baseline(xs, ys)``, and predicts every example from the
ones before it, so :func:`tvlib.scratch.evaluate.icl_errors` scores it on the same seeded prompts
as a GPT. Kept out of :mod:`tvlib.scratch.tasks`, whose source is part of the run cache's key: a
new baseline retrains nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import Tensor


class Baseline(Protocol):
    """Predictions ``[B, k]`` (continuous tasks) or label scores ``[B, k, V]`` (discrete tasks) of
    ``k`` examples, example i predicted from examples 0..i-1 only. ``xs``: ``[B, k, ...]``, ``ys``: ``[B, k]``."""

    def __call__(self, xs: Tensor, ys: Tensor) -> Tensor: ...


class LeastSquares:
    """Minimum-norm least squares on the earlier examples: the in-context baseline for linear regression.

    Example i is predicted by the least-squares fit to examples 0..i-1 (example 0 by 0), as in
    Garg et al. (2022); from d examples on it is exact. ``xs`` ``[B, k, d]``, ``ys`` ``[B, k]``.
    """

    def __call__(self, xs: Tensor, ys: Tensor) -> Tensor:
        preds = [torch.zeros_like(ys[:, 0])]
        for i in range(1, ys.shape[1]):
            w_hat = torch.linalg.pinv(xs[:, :i]) @ ys[:, :i, None]
            preds.append((xs[:, i, None] @ w_hat)[:, 0, 0])
        return torch.stack(preds, 1)


class MajorityVote:
    """The label seen most often in the earlier examples: uses the demonstrations without learning the task.

    Scores ``[B, k, max(labels) + 1]``: at example i the count of each of ``labels`` among
    examples 0..i-1 (so all labels tie at example 0), ``-inf`` for every other token id. The
    evaluation breaks ties uniformly at random (:func:`tvlib.scratch.evaluate.error`).
    """

    def __init__(self, labels: Sequence[int]):
        self.labels = torch.as_tensor(labels, dtype=torch.long)
        if self.labels.ndim != 1 or len(self.labels) == 0:
            raise ValueError(f"labels must be a non-empty list of token ids, got {labels!r}")

    def __call__(self, xs: Tensor, ys: Tensor) -> Tensor:
        counts = (ys[..., None] == self.labels).float()  # [B, k, n_labels]
        if not counts.any(-1).all():
            raise ValueError(f"ys holds ids {sorted(set(ys.unique().tolist()) - set(self.labels.tolist()))} "
                             f"that are not labels {self.labels.tolist()}")
        scores = torch.full((*ys.shape, int(self.labels.max()) + 1), float("-inf"))
        scores[..., self.labels] = counts.cumsum(1) - counts  # label counts of the earlier examples
        return scores
