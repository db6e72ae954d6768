"""Random linear-regression tasks and the three prompt layouts of Dong et al. (eqs. 3, 7, 9).

Tensors carry leading dimensions ``[S, B]`` (seeds, batch). A prompt is a token matrix
``Z [S, B, T, 2d]`` (one token per row; the paper writes tokens as columns), the per-token signs
that multiply the position terms, and the held-out answer ``y_test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

LAYOUTS = ("single", "pairwise", "triplet")
FAMILIES = ("gaussian", "rank_one", "bijection")
TOKENS_PER_DEMO = {"single": 1, "pairwise": 2, "triplet": 3}


def check_layout(layout: str) -> int:
    """Tokens per demonstration of ``layout``; a clear error for an unknown one."""
    if layout not in TOKENS_PER_DEMO:
        raise ValueError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    return TOKENS_PER_DEMO[layout]


def n_tokens(layout: str, n: int) -> int:
    """Prompt length d_p: n+1 (single), 2n+2 (pairwise), 3n+3 (triplet)."""
    if n < 1:
        raise ValueError(f"number of demonstrations n={n} must be at least 1")
    return check_layout(layout) * (n + 1)


@dataclass
class Prompts:
    """A batch of prompts: tokens ``Z [.., T, 2d]``, position signs ``[.., T]``, answers ``[.., d]``."""

    Z: Tensor
    signs: Tensor
    y_test: Tensor


def sample_tasks(shape: tuple[int, ...], n: int, d: int, gen: torch.Generator, family: str = "gaussian",
                 device: str = "cpu") -> tuple[Tensor, Tensor]:
    """Draw W per prompt and n+1 pairs (x_i, y_i = W x_i); returns x, y of shape [*shape, n+1, d].

    gaussian: rows of W and x ~ N(0, I) (the training distribution, Sec. 6.1).
    rank_one: W = u v^T and x_i = g_i v, as in the authors' task-vector evaluation (B.1).
    bijection: W = I - 2 v v^T, a reflection, so W^2 = I and W != +-I (x -> y and y -> x).
    """
    if family not in FAMILIES:
        raise ValueError(f"task family {family!r} is not one of {', '.join(FAMILIES)}")

    def normal(*s: int) -> Tensor:
        return torch.randn(*shape, *s, generator=gen, device=device)

    if family == "gaussian":
        W, x = normal(d, d), normal(n + 1, d)
    elif family == "rank_one":
        u, v = normal(d), normal(d)
        W = u[..., :, None] * v[..., None, :]
        x = normal(n + 1)[..., None] * v[..., None, :]
    else:
        v = normal(d)
        v = v / v.norm(dim=-1, keepdim=True)
        W = torch.eye(d, device=device) - 2 * v[..., :, None] * v[..., None, :]
        x = normal(n + 1, d)
    y = torch.einsum("...ij,...nj->...ni", W, x)
    return x, y


def build_prompts(x: Tensor, y: Tensor, layout: str, gen: torch.Generator | None) -> Prompts:
    """Lay out n demonstrations and the query (the last pair) as in eqs. 3, 7 and 9.

    single: [x_i; y_i] per demo, query [x_test; 0].  pairwise: [x_i; 0], [0; y_i], query ends in an
    empty answer slot.  triplet: [x_i; 0], arrow [0; 0], [0; y_i], query (x_test, arrow, slot).
    Following the authors' code, each demonstration's position terms get a random sign u_i = +-1
    (arrow tokens and the query keep +1); ``gen=None`` keeps every sign +1.
    """
    k = check_layout(layout)
    *lead, n1, d = x.shape
    n = n1 - 1
    Z = x.new_zeros(*lead, k * n1, 2 * d)
    Z[..., 0::k, :d] = x
    Z[..., k - 1:k * n:k, d:] = y[..., :n, :]
    demo_sign = x.new_ones(*lead, n1)
    if gen is not None:
        flips = torch.randint(0, 2, (*lead, n), generator=gen, device=x.device)
        demo_sign[..., :n] = 2.0 * flips - 1.0
    signs = demo_sign.repeat_interleave(k, dim=-1)
    if layout == "triplet":
        signs[..., 1::3] = 1.0
    return Prompts(Z=Z, signs=signs, y_test=y[..., n, :])


def sample_prompts(shape: tuple[int, ...], n: int, d: int, layout: str, gen: torch.Generator,
                   family: str = "gaussian", device: str = "cpu") -> Prompts:
    """Fresh tasks laid out as prompts with random position signs."""
    x, y = sample_tasks(shape, n, d, gen, family, device)
    return build_prompts(x, y, layout, gen)
