"""Several task vectors in the linear transformer (TaskV-M's motivation, Dong et al. Prop. 3, eq. 40).

After layer 1 the arrow of triplet i holds its own pseudo-demonstration z_tv^i = [a1 X b_i; a2 Y b_i];
together the n+1 arrows carry the full-rank statistic W X X^T, any one of them a rank-one term. Here
the k vectors are the layer-1 states at the last k arrows of an n-shot prompt whose query is zeroed
(TaskV-MS's reading; k = 1 is the chapter on emergence's task vector), written into the same arrows
of a prompt whose demonstrations are zeroed, (x_test, arrow, slot) kept, then all layers run.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tvlib.linear.analysis import normalised_risk
from tvlib.linear.data import build_prompts, sample_tasks
from tvlib.linear.model import LinearTransformer


def arrow_states(model: LinearTransformer, Z: Tensor, signs: Tensor, normalise: bool = True) -> Tensor:
    """Layer-1 states [S, B, n+1, 2d] of every arrow, in order, the query triplet zeroed.

    With ``normalise`` each arrow is divided by its batch-mean norm per seed (the authors' scale).
    """
    if model.cfg.layout != "triplet":
        raise ValueError(f"task vectors are read at arrow tokens; layout {model.cfg.layout!r} has none")
    Z = Z.clone()
    Z[..., -3:, :] = 0.0
    arrows = model(Z, signs, upto=1)[..., 1::3, :]
    return arrows / arrows.norm(dim=-1).mean(1, keepdim=True)[..., None] if normalise else arrows


def inject_arrows(model: LinearTransformer, vectors: Tensor, x_test: Tensor) -> Tensor:
    """Predict from a prompt of zeroed demonstrations whose last k arrows hold ``vectors`` [S, B, k, 2d]."""
    cfg = model.cfg
    S, B, k = vectors.shape[:3]
    if not 1 <= k <= cfg.n + 1:
        raise ValueError(f"k = {k} vectors do not fit the {cfg.n + 1} arrows of an n = {cfg.n} prompt")
    Z = vectors.new_zeros(S, B, cfg.n_tokens, 2 * cfg.d)
    Z[..., -3, :cfg.d] = x_test
    arrows = torch.arange(1, cfg.n_tokens, 3)[-k:]
    Z[..., arrows, :] = vectors
    return model.predict(Z, Z.new_ones(S, B, cfg.n_tokens))


def k_vector_risks(model: LinearTransformer, family: str, batch: int, gen: torch.Generator,
                   normalise: bool = True) -> dict[str, Tensor]:
    """Normalised risks [S]: n-shot ICL, 0-shot, and k = 1..n+1 injected arrow vectors ("k=1", ...)."""
    cfg, S = model.cfg, model.n_seeds
    x, y = sample_tasks((S, batch), cfg.n, cfg.d, gen, family, model.D.device)
    prompts = build_prompts(x, y, "triplet", gen)
    x_test, y_test = x[..., -1, :], y[..., -1, :]
    with torch.no_grad():
        states = arrow_states(model, prompts.Z, prompts.signs, normalise)
        out = {"n-shot": normalised_risk(model.predict(prompts.Z, prompts.signs), y_test),
               "0-shot": normalised_risk(inject_arrows(model, torch.zeros_like(states[:, :, -1:]), x_test), y_test)}
        for k in range(1, cfg.n + 2):
            out[f"k={k}"] = normalised_risk(inject_arrows(model, states[:, :, -k:], x_test), y_test)
    return out
