"""Baselines for the from-scratch tasks: what a learner gets from the demonstrations without a transformer.

Kept out of :mod:`tvlib.scratch.tasks`, whose source is part of the run cache's key: a new baseline
retrains nothing.
"""

from __future__ import annotations

import torch
from torch import Tensor


def majority_vote_error(targets: Tensor, labels: Tensor) -> Tensor:
    """Expected 0/1 error at each example of guessing the most frequent earlier label: ``[k]``.

    A baseline that uses the demonstrations without learning the task: at example i it predicts
    the label among ``labels`` seen most often in examples 0..i-1, uniformly at random among ties
    (at example 0 among all of ``labels``). ``targets`` ``[B, k]`` are label ids.
    """
    counts = (targets[..., None] == labels).float()  # [B, k, n_labels]
    before = counts.cumsum(1) - counts  # label counts of the earlier examples
    modes = before == before.max(-1, keepdim=True).values
    hit = (modes & counts.bool()).any(-1).float() / modes.sum(-1)
    return (1 - hit).mean(0)


def least_squares_error(xs: Tensor, ys: Tensor) -> Tensor:
    """Mean squared error at each example of minimum-norm least squares on the earlier ones: ``[k]``.

    The in-context baseline for linear regression (Garg et al. 2022): example i is predicted by
    the least-squares fit to examples 0..i-1 (at example 0, by 0). ``xs`` ``[B, k, d]``, ``ys`` ``[B, k]``.
    """
    errs = [(ys[:, 0] ** 2).mean()]
    for i in range(1, ys.shape[1]):
        w_hat = torch.linalg.pinv(xs[:, :i]) @ ys[:, :i, None]
        errs.append((((xs[:, i, None] @ w_hat)[:, 0, 0] - ys[:, i]) ** 2).mean())
    return torch.stack(errs)
