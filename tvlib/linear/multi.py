"""Several task vectors in the linear transformer (TaskV-M's motivation, Dong et al. Prop. 3, eq. 40).

After layer 1 the arrow of triplet i holds its own pseudo-demonstration z_tv^i = [a1 X b_i; a2 Y b_i];
layer 2 reads the sum over arrows of (Y b_i)(X b_i)^T, which over all n+1 arrows is the full-rank
W X M M^T X^T, over one arrow a rank-one term. The k vectors here are the layer-1 states at the last
k arrows of an n-shot prompt whose query is zeroed, read with P = I (TaskV-MS's reading; k = 1 is
the task vector of the chapter on emergence). They go into the same arrows of a prompt whose
demonstrations are zeroed, (x_test, arrow, slot) kept, at one of two sites:

- ``layer1``: they replace the arrows' states at the output of layer 1, where they were read (as
  TaskV-M replaces states at layer l in LLMs), and layer 2 runs on; the states keep the model's scale;
- ``input``: they are written into the input and every layer runs, as the authors inject their single
  vector; each is divided by the batch-mean norm of the query arrow's state (their scale, one factor
  for all arrows, so the arrows keep their relative weights).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from tvlib.linear.analysis import normalised_risk
from tvlib.linear.data import build_prompts, sample_tasks
from tvlib.linear.model import LinearTransformer

SITES = ("layer1", "input")


def check_site(site: str) -> None:
    """A clear error for an unknown injection site."""
    if site not in SITES:
        raise ValueError(f"injection site {site!r} is not one of {', '.join(SITES)}")


def arrow_states(model: LinearTransformer, Z: Tensor, normalise: bool = False) -> Tensor:
    """Layer-1 states [S, B, n+1, 2d] of every arrow, in order, the query triplet zeroed, P = I.

    With ``normalise`` all arrows are divided by one factor per seed: the batch-mean norm of the
    query arrow's state (the authors' scale of the single vector).
    """
    if model.cfg.layout != "triplet":
        raise ValueError(f"task vectors are read at arrow tokens; layout {model.cfg.layout!r} has none")
    Z = Z.clone()
    Z[..., -3:, :] = 0.0
    arrows = model(Z, Z.new_ones(Z.shape[:-1]), upto=1)[..., 1::3, :]
    if not normalise:
        return arrows
    return arrows / arrows[..., -1, :].norm(dim=-1).mean(1)[:, None, None, None]


def inject_arrows(model: LinearTransformer, vectors: Tensor, x_test: Tensor, site: str = "layer1") -> Tensor:
    """Predict from a prompt of zeroed demonstrations whose last k arrows hold ``vectors`` [S, B, k, 2d]
    at ``site`` (see the module's docstring)."""
    check_site(site)
    cfg = model.cfg
    S, B, k = vectors.shape[:3]
    if not 1 <= k <= cfg.n + 1:
        raise ValueError(f"k = {k} vectors do not fit the {cfg.n + 1} arrows of an n = {cfg.n} prompt")
    Z = vectors.new_zeros(S, B, cfg.n_tokens, 2 * cfg.d)
    Z[..., -3, :cfg.d] = x_test
    signs = Z.new_ones(S, B, cfg.n_tokens)
    start = 1 if site == "layer1" else 0
    if start:
        Z = model(Z, signs, upto=1)
    Z[..., torch.arange(1, cfg.n_tokens, 3)[-k:], :] = vectors
    return -model(Z, signs, start=start)[..., -1, cfg.d:]


def k_vector_risks(models: Sequence[LinearTransformer], family: str, batch: int, gen: torch.Generator,
                   site: str = "layer1") -> dict[str, Tensor]:
    """Normalised risks [S]: n-shot ICL, 0-shot, and k = 1..n+1 injected arrow vectors ("k=1", ...),
    on one batch of ``family`` tasks with P = I, averaged over the checkpoints ``models`` (as the
    authors average their last five)."""
    check_site(site)
    if not models:
        raise ValueError("need at least one checkpoint")
    cfg, S = models[0].cfg, models[0].n_seeds
    x, y = sample_tasks((S, batch), cfg.n, cfg.d, gen, family, models[0].D.device)
    prompts = build_prompts(x, y, "triplet")
    x_test, y_test = x[..., -1, :], y[..., -1, :]
    per_checkpoint = []
    with torch.no_grad():
        for model in models:
            states = arrow_states(model, prompts.Z, normalise=site == "input")
            zero = torch.zeros_like(states[:, :, -1:])
            out = {"n-shot": normalised_risk(model.predict(prompts.Z, prompts.signs), y_test),
                   "0-shot": normalised_risk(inject_arrows(model, zero, x_test, site), y_test)}
            for k in range(1, cfg.n + 2):
                out[f"k={k}"] = normalised_risk(inject_arrows(model, states[:, :, -k:], x_test, site), y_test)
            per_checkpoint.append(out)
    return {key: torch.stack([r[key] for r in per_checkpoint]).mean(0) for key in per_checkpoint[0]}
