"""Linear self-attention with residual and position terms (Dong et al., eqs. 1, 2, 5, 6).

Layer l:  Z_l = Z_{l-1} + (1/n) V Z M [Z^T P^T] Q [Z; P]  with V = diag(aI, bI) and
Q = diag(cI, 0, D), P = diag(signs).  With tokens as rows the score of source i for target j is
s_ij = c x_i.x_j + u_i u_j D[i, j]: D is read as D[source, target]. M zeroes the last token as
a source. As in the authors' code A, B, C are restricted to scalars times I (the sets S_I, S_Sigma
of Theorems 1-2 with Sigma = I). Every parameter has a leading seed dimension S, so many
independently initialised models run as one tensor program.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from tvlib.linear.data import n_tokens


@dataclass(frozen=True)
class ModelConfig:
    """Shape of a linear transformer; ``causal`` keeps only sources i <= target j."""

    layout: str
    n: int
    n_layers: int
    d: int = 4
    causal: bool = False

    @property
    def n_tokens(self) -> int:
        return n_tokens(self.layout, self.n)


class LinearTransformer(nn.Module):
    """S stacked models: a, b, c of shape [S, L] and position matrices D of shape [S, L, T, T]."""

    def __init__(self, cfg: ModelConfig, n_seeds: int, gen: torch.Generator, init_std: float = 0.1,
                 device: str = "cpu"):
        super().__init__()
        if cfg.n_layers < 1 or n_seeds < 1:
            raise ValueError(f"n_layers={cfg.n_layers} and n_seeds={n_seeds} must both be at least 1")
        self.cfg = cfg
        S, L, T = n_seeds, cfg.n_layers, cfg.n_tokens

        def init(*shape: int) -> nn.Parameter:
            return nn.Parameter(init_std * torch.randn(*shape, generator=gen, device=device))

        self.a, self.b, self.c = init(S, L), init(S, L), init(S, L)
        self.D = init(S, L, T, T)

    @property
    def n_seeds(self) -> int:
        return self.a.shape[0]

    def source_weights(self, keep: Tensor | None) -> Tensor:
        """Diagonal of M per layer, [S or 1, B or 1, L, T]: 0 for the last token, times a keep mask."""
        T = self.cfg.n_tokens
        m = torch.ones(1, 1, self.cfg.n_layers, T, device=self.D.device)
        m[..., -1] = 0.0
        return m if keep is None else m * keep

    def attention(self, l: int, Z: Tensor, signs: Tensor, m: Tensor, keep: Tensor | None) -> Tensor:
        """(1/n) V Z M [Z^T P^T] Q [Z; P] for layer l, computed without forming the [B, T, T] scores.

        Content part: sum_i m_i c (x_i . x_j) z_i = x_j^T (c sum_i m_i x_i z_i^T), a d x 2d statistic
        per prompt (a running sum over i <= j when causal). Position part: u_j sum_i D[i, j] u_i m_i z_i,
        one matrix product per seed with the batch folded into the columns. A dropped token
        (``keep`` 0, the authors' dropout masks the attention input) is no source and gets no content
        score as a target. Scalars are folded into the small factors so that the [S, B, T, 2d]
        tensors see few passes (this loop is the training's hot path).
        """
        d, T, n = self.cfg.d, self.cfg.n_tokens, self.cfg.n
        S, B = Z.shape[0], Z.shape[1]
        c = self.c[:, l, None, None, None]
        x = Z[..., :d] if keep is None else Z[..., :d] * keep[..., None]
        if self.cfg.causal:
            stat = ((Z[..., :d] * m[..., None])[..., None] * Z[..., None, :]).cumsum(dim=-3)
            content = torch.einsum("sbtk,sbtke->sbte", x, c[..., None] * stat)
        elif keep is None:  # m only drops the last token as a source
            content = x @ (c * (Z[..., :-1, :d].transpose(-1, -2) @ Z[..., :-1, :]))
        else:
            content = x @ (c * ((Z[..., :d] * m[..., None]).transpose(-1, -2) @ Z))
        D = torch.triu(self.D[:, l]) if self.cfg.causal else self.D[:, l]
        src = (Z * (signs * m)[..., None]).transpose(1, 2).reshape(S, T, -1)
        pos = (D.transpose(-1, -2) @ src).reshape(S, T, B, 2 * d).transpose(1, 2)
        out = torch.addcmul(content, pos, signs[..., None])
        ab = torch.cat([self.a[:, l, None].expand(S, d), self.b[:, l, None].expand(S, d)], -1) / n
        return out * ab[:, None, None, :]

    def forward(self, Z: Tensor, signs: Tensor, keep: Tensor | None = None, upto: int | None = None,
                start: int = 0) -> Tensor:
        """Run layers start+1..upto (default all) on prompts Z [S or 1, B, T, 2d]; returns [S, B, T, 2d].

        ``start`` > 0 takes Z as the output of layer ``start`` (to continue after an injection).
        ``signs`` [.., T] serve every layer; [.., L, T] give each layer its own (the authors'
        training). ``keep`` [S, B, L, T] drops tokens (token dropout, Prop. 5).
        """
        d, n, L = self.cfg.d, self.cfg.n, self.cfg.n_layers
        if Z.shape[-2:] != (self.cfg.n_tokens, 2 * d):
            raise ValueError(f"prompt shape {tuple(Z.shape)} does not end in (T, 2d) = "
                             f"({self.cfg.n_tokens}, {2 * d}) for layout {self.cfg.layout!r}, n={n}")
        S, B, T = self.n_seeds, Z.shape[1], self.cfg.n_tokens
        if signs.dim() == Z.dim() - 1:
            signs = signs.unsqueeze(-2)
        elif signs.dim() != Z.dim() or signs.shape[-2] != L:
            raise ValueError(f"signs of shape {tuple(signs.shape)} are neither per prompt [.., {T}] nor "
                             f"per layer [.., {L}, {T}]")
        Z, signs = Z.expand(S, B, T, 2 * d), signs.expand(S, B, L, T)
        m = self.source_weights(keep).expand(S, B, -1, -1)
        if not 0 <= start <= (L if upto is None else upto):
            raise ValueError(f"start={start} must lie in 0..{L if upto is None else upto}")
        for l in range(start, L if upto is None else upto):
            Z = Z + self.attention(l, Z, signs[:, :, l], m[:, :, l], None if keep is None else keep[:, :, l])
        return Z

    def predict(self, Z: Tensor, signs: Tensor, keep: Tensor | None = None) -> Tensor:
        """Prediction y_hat = -TF(Z_0): minus the lower half of the last token (eq. 2's sign)."""
        return -self.forward(Z, signs, keep)[..., -1, self.cfg.d:]

    def select(self, seed: int) -> "LinearTransformer":
        """The model of one seed as a stand-alone S = 1 model (a detached copy)."""
        if not 0 <= seed < self.n_seeds:
            raise ValueError(f"seed index {seed} is out of range 0..{self.n_seeds - 1}")
        one = LinearTransformer(self.cfg, 1, torch.Generator(device=self.D.device), device=str(self.D.device))
        with torch.no_grad():
            for name in ("a", "b", "c", "D"):
                getattr(one, name).copy_(getattr(self, name)[seed:seed + 1])
        return one
