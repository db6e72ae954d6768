"""Measurements on trained linear transformers and the closed-form references of the chapter.

Closed forms: the one-layer single-token optimum, Proposition 4's rank-one residual and the
Proposition 5 weight objective. Measurements: how much of a learned D lies in the sets S_P of
Theorems 1-2, Lambda_4 and the Proposition 3 statistics, and task-vector extraction/injection.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from scipy.optimize import minimize
from torch import Tensor

from tvlib.linear.data import check_layout, sample_tasks, build_prompts
from tvlib.linear.model import LinearTransformer

if TYPE_CHECKING:  # for annotations only: analysis never runs training
    from tvlib.linear.train import TrainResult


def single_layer_optimum(n: int, d: int) -> tuple[float, float]:
    """Best one-layer single-token model for x, rows of W ~ N(0, I): (step gamma*, risk per coordinate).

    The model predicts y_hat = (gamma/n) W X X^T x. With S = X X^T ~ Wishart_d(n, I),
    E tr S = nd and E tr S^2 = nd(n+d+1), so the risk per coordinate is
    gamma^2 d (n+d+1)/n - 2 gamma d + d, minimised at gamma* = n/(n+d+1) with value d(d+1)/(n+d+1).
    """
    return n / (n + d + 1), d * (d + 1) / (n + d + 1)


def pattern_masks(layout: str, n: int) -> dict[str, Tensor]:
    """Entries of D[source, target] that the sets S_P of Theorem 1 (pairwise) and 2 (triplet) allow.

    pairwise: 'concat' = the 2x2 diagonal blocks diag(I_n kron Lambda_1, Lambda_2).  triplet: 'concat' =
    x/y entries of the 3x3 diagonal blocks, 'self' = each arrow to itself (Lambda_3), 'tv' = every
    x or y token to every arrow (Lambda_4 kron Lambda_5).
    """
    k = check_layout(layout)
    if layout == "single":
        raise ValueError("layout 'single' has no structured position set; use 'pairwise' or 'triplet'")
    T = k * (n + 1)
    block = torch.arange(T) // k
    same = block[:, None] == block[None, :]
    if layout == "pairwise":
        return {"concat": same}
    role = torch.arange(T) % k
    xy = role != 1
    arrow = role == 1
    return {"concat": same & xy[:, None] & xy[None, :],
            "self": torch.diag(arrow),
            "tv": xy[:, None] & arrow[None, :]}


def pattern_share(D: Tensor, mask: Tensor) -> Tensor:
    """Fraction of the squared Frobenius norm of D [..., T, T] that lies on the mask."""
    energy = D.pow(2)
    return (energy * mask).sum((-1, -2)) / energy.sum((-1, -2))


def lambda4(D: Tensor) -> Tensor:
    """Lambda_4 from a triplet layer's D [..., T, T]: weight of triplet a's x token on triplet b's arrow."""
    return D[..., 0::3, 1::3]


def final_arrow_weights(D: Tensor) -> Tensor:
    """|beta|: the weights [..., n] of the n demonstrations' x tokens on the query's arrow (Prop. 5),
    from a triplet layer's D [..., T, T]."""
    return lambda4(D)[..., :-1, -1].abs()


def prop3_stats(L4: Tensor) -> dict[str, Tensor]:
    """How far G = Lambda_4 Lambda_4^T is from lambda diag(I_n, 0) (Proposition 3), per model.

    offdiag: RMS of the off-diagonal entries among the first n rows over the mean diagonal;
    diag_cv: coefficient of variation of those n diagonal entries; last_row: RMS of G's last row
    over the mean diagonal. All three are 0 for an exact minimiser.
    """
    G = L4 @ L4.transpose(-1, -2)
    n = G.shape[-1] - 1
    top = G[..., :n, :n]
    diag = torch.diagonal(top, dim1=-2, dim2=-1)
    scale = diag.mean(-1)
    off = top - torch.diag_embed(diag)
    return {"offdiag": off.pow(2).sum((-1, -2)).div(n * (n - 1)).sqrt() / scale,
            "diag_cv": diag.std(-1) / scale,
            "last_row": G[..., n, :].pow(2).mean(-1).sqrt() / scale}


def fig4ab_passes(single_below: float, pairwise: float, triplet: float, single_above: float,
                  max_ratio: float = 1.5) -> bool:
    """One (L, n) cell of Fig. 4a/b: S(L-1) > max(P, T), min(P, T) > S(L) and max/min(P, T) <= max_ratio."""
    hi, lo = max(pairwise, triplet), min(pairwise, triplet)
    return single_below > hi and lo > single_above and hi / lo <= max_ratio


def normalised_risk(pred: Tensor, y: Tensor) -> Tensor:
    """Per-seed mean of ||y_hat/||y_hat|| - y/||y|| ||^2 over the batch (App. B.1); 2 is chance."""
    unit = lambda v: v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)  # noqa: E731
    return (unit(pred) - unit(y)).pow(2).sum(-1).mean(-1)


def extract_task_vector(model: LinearTransformer, Z: Tensor, normalise: bool = True) -> Tensor:
    """Task vector of triplet prompts: layer 1's output at the query arrow with the query zeroed (P = I).

    With ``normalise`` it is divided by its batch-mean norm per seed, as the authors do to mimic
    layer normalisation; without, it keeps the scale the model itself produces.
    """
    if model.cfg.layout != "triplet":
        raise ValueError(f"task vectors are read at arrow tokens; layout {model.cfg.layout!r} has none")
    Z = Z.clone()
    Z[..., -3:, :] = 0.0
    tv = model(Z, Z.new_ones(Z.shape[:-1]), upto=1)[..., -2, :]
    return tv / tv.norm(dim=-1).mean(-1)[:, None, None] if normalise else tv


def inject_task_vector(model: LinearTransformer, tv: Tensor, x_test: Tensor) -> Tensor:
    """Predict from a zero-shot prompt of full length: demos zeroed, (x_test, tv, empty slot) last."""
    cfg = model.cfg
    S, B = tv.shape[:2]
    Z = tv.new_zeros(S, B, cfg.n_tokens, 2 * cfg.d)
    Z[..., -3, :cfg.d] = x_test
    Z[..., -2, :] = tv
    return model.predict(Z, Z.new_ones(S, B, cfg.n_tokens))


def task_vector_risks(models_n: Sequence[LinearTransformer], models_1: Sequence[LinearTransformer], family: str,
                      batch: int, gen: torch.Generator) -> dict[str, Tensor]:
    """Normalised risks [S] of n-shot ICL, 1-shot ICL (models trained with n = 1), the injected task
    vector (authors' normalised scale and the model's own scale) and the bare zero-shot prompt, on
    one batch of tasks of ``family`` with P = I (eq. 10, Fig. 4c).

    ``models_n`` and ``models_1`` are checkpoints (e.g. ``TrainResult.checkpoints``); each risk is
    averaged over them, as the authors average the last five checkpoints.
    """
    if not models_n or len(models_n) != len(models_1):
        raise ValueError(f"need as many n-shot as 1-shot checkpoints, at least one; got {len(models_n)} "
                         f"and {len(models_1)}")
    model_n = models_n[0]
    n, d, dev = model_n.cfg.n, model_n.cfg.d, model_n.D.device
    x, y = sample_tasks((model_n.n_seeds, batch), n, d, gen, family, dev)
    prompts = build_prompts(x, y, "triplet")
    one = build_prompts(torch.cat([x[..., :1, :], x[..., -1:, :]], -2),
                        torch.cat([y[..., :1, :], y[..., -1:, :]], -2), "triplet")
    x_test, y_test = x[..., -1, :], y[..., -1, :]
    per_checkpoint = []
    with torch.no_grad():
        for m_n, m_1 in zip(models_n, models_1):
            tv = extract_task_vector(m_n, prompts.Z)
            tv_raw = extract_task_vector(m_n, prompts.Z, normalise=False)
            per_checkpoint.append({
                "n-shot": normalised_risk(m_n.predict(prompts.Z, prompts.signs), y_test),
                "1-shot": normalised_risk(m_1.predict(one.Z, one.signs), y_test),
                "task vector": normalised_risk(inject_task_vector(m_n, tv, x_test), y_test),
                "task vector, raw scale": normalised_risk(inject_task_vector(m_n, tv_raw, x_test), y_test),
                "0-shot": normalised_risk(inject_task_vector(m_n, torch.zeros_like(tv), x_test), y_test)})
    return {k: torch.stack([r[k] for r in per_checkpoint]).mean(0) for k in per_checkpoint[0]}


def task_vector_table(triplet: Mapping[tuple[int, int], TrainResult], one_shot: Mapping[int, TrainResult],
                      families: Sequence[str], batch: int, gen: torch.Generator) -> pd.DataFrame:
    """Fig. 4c's table: per task family W and depth L, each prompt's :func:`task_vector_risks`,
    per n the minimum over seeds, then the mean over n (the authors' aggregation).

    ``triplet`` maps (L, n) to trained triplet models, ``one_shot`` maps L to the n = 1 model.
    Families, depths and n are visited in that order (family, then L, then n) on ``gen``.
    """
    rows = []
    depths = sorted(one_shot)
    for family in families:
        for L in depths:
            for n in sorted(n for d, n in triplet if d == L):
                risks = task_vector_risks(triplet[(L, n)].checkpoints, one_shot[L].checkpoints, family, batch, gen)
                rows += [{"W": family, "L": L, "n": n, "prompt": k, "risk": v.min().item()} for k, v in risks.items()]
    return pd.DataFrame(rows).pivot_table(index=["W", "L"], columns="prompt", values="risk", aggfunc="mean")


def task_vector_map_rank(model: LinearTransformer, n_vectors: int, n_queries: int,
                         gen: torch.Generator) -> Tensor:
    """sigma_2/sigma_1 of the affine map x_test -> y_hat that one injected task vector induces.

    For each seed and each of ``n_vectors`` Gaussian tasks, fit y_hat = A x + b by least squares over
    ``n_queries`` random queries; eq. 10 predicts rank(A) = 1, i.e. a ratio near 0. Returns [S].
    """
    cfg, dev = model.cfg, model.D.device
    S = model.n_seeds
    x, y = sample_tasks((S, n_vectors), cfg.n, cfg.d, gen, "gaussian", dev)
    prompts = build_prompts(x, y, "triplet")
    with torch.no_grad():
        tv = extract_task_vector(model, prompts.Z)
        q = torch.randn(S, n_vectors, n_queries, cfg.d, generator=gen, device=dev)
        tv_rep = tv[:, :, None, :].expand(-1, -1, n_queries, -1).reshape(S, -1, 2 * cfg.d)
        pred = inject_task_vector(model, tv_rep, q.reshape(S, -1, cfg.d)).reshape(S, n_vectors, n_queries, cfg.d)
    design = torch.cat([q, torch.ones_like(q[..., :1])], -1)
    coef = torch.linalg.lstsq(design, pred).solution[..., :cfg.d, :]
    sv = torch.linalg.svdvals(coef)
    return (sv[..., 1] / sv[..., 0]).median(-1).values


def rank_one_residual(x: np.ndarray, y: np.ndarray, iters: int = 200) -> float:
    """min over rank-one W = u v^T of ||W x - y||^2 + ||W y - x||^2, by alternating least squares.

    Proposition 4: the minimum is 0 only if x = y or x = -y. Deterministic start u = y + x, v = x.
    """
    A, B = np.stack([x, y], 1), np.stack([y, x], 1)
    u, v = x + y if np.linalg.norm(x + y) > 1e-9 else x - y, x.copy()
    for _ in range(iters):
        r = A.T @ v
        u = B @ r / max(r @ r, 1e-300)
        v = np.linalg.lstsq(A.T, B.T @ u / max(u @ u, 1e-300), rcond=None)[0]
    return float(np.sum((np.outer(u, v) @ A - B) ** 2))


def tv_weight_objective(M: np.ndarray, p: float) -> float:
    """Proposition 5's dropout objective for weights M [sources, arrows], at unit Frobenius norm.

    p^2(1-p)^2 sum M^4 + p^3(1-p)(sum of squared row norms^2 + column norms^2) + p^4 tr((M^T M)^2),
    the form in the authors' weight_sum.py.
    """
    M = M / np.linalg.norm(M)
    sq = M ** 2
    MtM = M.T @ M
    return (p ** 2 * (1 - p) ** 2 * np.sum(sq ** 2)
            + p ** 3 * (1 - p) * (np.sum(sq.sum(1) ** 2) + np.sum(sq.sum(0) ** 2))
            + p ** 4 * np.trace(MtM @ MtM))


def tv_weight_profile(n: int, p: float, causal: bool, seed: int) -> np.ndarray:
    """|weights| of the last arrow over the n demonstrations at the optimum of the Prop. 5 objective.

    Causal: M is upper triangular (source a <= arrow b). Minimised with BFGS from a seeded random
    start; returned with unit norm.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"dropout probability p={p} must lie in (0, 1)")
    free = np.triu(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
    start = np.random.default_rng(seed).standard_normal(int(free.sum()))

    def unpack(theta: np.ndarray) -> np.ndarray:
        M = np.zeros((n, n))
        M[free] = theta
        return M

    best = minimize(lambda t: tv_weight_objective(unpack(t), p), start, method="BFGS")
    M = unpack(best.x)
    w = np.abs(M[:, -1])
    return w / np.linalg.norm(w)


def participation(w: Tensor) -> Tensor:
    """Participation ratio (sum w^2)^2 / sum w^4 / len(w): 1 for equal weights, 1/len for one spike."""
    sq = w.pow(2)
    return sq.sum(-1).pow(2) / sq.pow(2).sum(-1) / w.shape[-1]
