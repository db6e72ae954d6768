"""Random linear-regression tasks and the three prompt layouts of Dong et al. (eqs. 3, 7, 9).

Tensors carry leading dimensions ``[S, B]`` (seeds, batch). A prompt is a token matrix
``Z [S, B, T, 2d]`` (one token per row; the paper writes tokens as columns), the per-token signs
that multiply the position terms (+1 everywhere, P = I, unless training replaces them by
:func:`position_signs`), and the held-out answer ``y_test``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

LAYOUTS = ("single", "pairwise", "triplet")
FAMILIES = ("gaussian", "rank_one", "bijection")
SIGN_MODES = ("authors", "demos")
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
    """A batch of prompts: tokens ``Z [.., T, 2d]``, position signs ``[.., T]`` (or ``[.., L, T]``,
    one row per layer), answers ``[.., d]``."""

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


def build_prompts(x: Tensor, y: Tensor, layout: str) -> Prompts:
    """Lay out n demonstrations and the query (the last pair) as in eqs. 3, 7 and 9, with P = I.

    single: [x_i; y_i] per demo, query [x_test; 0].  pairwise: [x_i; 0], [0; y_i], query ends in an
    empty answer slot.  triplet: [x_i; 0], arrow [0; 0], [0; y_i], query (x_test, arrow, slot).
    Every position sign is +1 (P = I), as in the theorems and the authors' evaluation; training
    draws random signs with :func:`position_signs`.
    """
    k = check_layout(layout)
    *lead, n1, d = x.shape
    n = n1 - 1
    Z = x.new_zeros(*lead, k * n1, 2 * d)
    Z[..., 0::k, :d] = x
    Z[..., k - 1:k * n:k, d:] = y[..., :n, :]
    return Prompts(Z=Z, signs=x.new_ones(*lead, k * n1), y_test=y[..., n, :])


def position_signs(lead: tuple[int, ...], n: int, layout: str, n_layers: int, gen: torch.Generator,
                   mode: str = "authors", device: str = "cpu") -> Tensor:
    """Random position signs u [*lead, n_layers, T] for training ("randomly flip P to simulate symmetry").

    authors: as the authors' training code, one sign per demonstration *and* per query, drawn
    afresh at every layer; a demonstration's tokens share it, arrow tokens keep +1.
    demos: our earlier reading, one sign per demonstration shared by all layers, the query +1.
    """
    if mode not in SIGN_MODES:
        raise ValueError(f"sign mode {mode!r} is not one of {', '.join(SIGN_MODES)}")
    k = check_layout(layout)
    if mode == "authors":
        u = 2.0 * torch.randint(0, 2, (*lead, n_layers, n + 1), generator=gen, device=device) - 1.0
    else:
        u = torch.ones(*lead, 1, n + 1, device=device)
        u[..., :n] = 2.0 * torch.randint(0, 2, (*lead, 1, n), generator=gen, device=device) - 1.0
        u = u.expand(*lead, n_layers, n + 1)
    signs = u.repeat_interleave(k, dim=-1)
    if layout == "triplet":
        signs[..., 1::3] = 1.0
    return signs


def sample_prompts(shape: tuple[int, ...], n: int, d: int, layout: str, gen: torch.Generator,
                   family: str = "gaussian", device: str = "cpu") -> Prompts:
    """Fresh tasks laid out as prompts (P = I)."""
    x, y = sample_tasks(shape, n, d, gen, family, device)
    return build_prompts(x, y, layout)
