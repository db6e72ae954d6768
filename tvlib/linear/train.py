"""Seed-vectorised training of linear transformers (protocol of Dong et al., App. B.1).

All seeds train as one tensor program: parameters carry a leading seed dimension, every seed
draws its own fresh batch each step, and the loss is the sum of the per-seed losses, so each
seed's gradient is its own. AdamW is elementwise, so one optimiser over the stacked parameters
equals one optimiser per seed; the authors' per-parameter gradient-norm clipping is applied per
seed (a joint norm would couple the seeds).

The protocol is the authors' code (``LinearTransformer/icl_regression.py``), checked side by side by
``benchmarks/linear_parity.py``: random position signs only in training (:func:`position_signs`),
their learning-rate schedule, the last checkpoints kept for the reported risks.

:func:`train` is cached on disk (:mod:`tvlib.runcache`: keyed by both configs and the source of
``data``, ``model`` and this module), so chapters that train the same configuration share one run.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from tvlib.linear import data as data_module
from tvlib.linear import model as model_module
from tvlib.linear.data import SIGN_MODES, Prompts, check_layout, position_signs, sample_prompts
from tvlib.linear.model import LinearTransformer, ModelConfig
from tvlib.runcache import cache_dir, content_key, save_atomic


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule; the defaults are the authors' (AdamW, lr 0.01, betas (0.9, 0.9))."""

    steps: int = 20_001
    batch: int = 1000
    n_seeds: int = 40
    lr: float = 0.01
    betas: tuple[float, float] = (0.9, 0.9)
    weight_decay: float = 0.05
    halve_every: int = 2500
    l1: float = 1e-8
    l1_from: int = 2000
    clip: float = 1000.0
    dropout: float = 0.0
    eval_every: int = 100
    eval_batch: int = 1000
    last_k: int = 5
    signs: str = "authors"
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.signs not in SIGN_MODES:
            raise ValueError(f"signs={self.signs!r} is not one of {', '.join(SIGN_MODES)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must lie in [0, 1)")
        for name in ("steps", "batch", "n_seeds", "halve_every", "eval_every", "eval_batch", "last_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be at least 1")

    def learning_rate(self, step: int | np.ndarray) -> float | np.ndarray:
        """The authors' schedule: step 0 runs at ``lr``, then the rate halves after every step t
        with t % halve_every == 0 (t = 0 included), so steps 1..h run at lr/2, h+1..2h at lr/4."""
        return self.lr * 0.5 ** -(-np.asarray(step) // self.halve_every)


def weight_decay_left(tcfg: TrainConfig) -> float:
    """The factor prod_t (1 - lr_t * weight_decay) to which AdamW's decoupled decay alone shrinks a
    weight over the run: what is left of an initial value that no gradient ever moves."""
    return float(np.prod(1 - tcfg.learning_rate(np.arange(tcfg.steps)) * tcfg.weight_decay))


@dataclass
class TrainResult:
    """A trained stack of models, its initial position matrices, its test-risk curve [checkpoints, S]
    (P = I) and the models of the last ``last_k`` checkpoints (oldest first; the last is ``model``)."""

    model: LinearTransformer
    D_init: Tensor
    steps: list[int]
    risk: Tensor
    last_k: int
    checkpoints: list[LinearTransformer]

    @property
    def final(self) -> Tensor:
        """The paper's per-seed risk: the mean over the last ``last_k`` checkpoints, [S]."""
        return self.risk[-self.last_k:].mean(0)

    @property
    def min_risk(self) -> float:
        """The paper's risk of a configuration: the best seed's :attr:`final` risk."""
        return self.final.min().item()


def dropout_keep(model: LinearTransformer, batch: int, p: float, gen: torch.Generator) -> Tensor | None:
    """Keep mask [S, B, L, T]: each demonstration token survives with prob 1-p, the query always
    (redrawn at every layer, as the authors' dropout)."""
    if p == 0.0:
        return None
    cfg = model.cfg
    T, k = cfg.n_tokens, check_layout(cfg.layout)
    keep = (torch.rand(model.n_seeds, batch, cfg.n_layers, T, generator=gen, device=model.D.device) >= p).float()
    keep[..., T - k:] = 1.0
    return keep


def snapshot(model: LinearTransformer) -> LinearTransformer:
    """A detached copy of a stack of models (a checkpoint)."""
    copy = LinearTransformer(model.cfg, model.n_seeds, torch.Generator(device=model.D.device),
                             device=str(model.D.device))
    copy.load_state_dict(model.state_dict())
    return copy.requires_grad_(False)


def risk(model: LinearTransformer, prompts: Prompts, keep: Tensor | None = None) -> Tensor:
    """Per-seed ICL risk: squared error averaged over batch and the d coordinates (authors' code)."""
    err = model.predict(prompts.Z, prompts.signs, keep) - prompts.y_test
    return err.pow(2).mean(dim=(1, 2))


def clip_per_seed(model: LinearTransformer, max_norm: float) -> None:
    """Scale each parameter's gradient so that its norm within every seed is at most max_norm."""
    for p in model.parameters():
        norm = p.grad.flatten(1).norm(dim=1)
        scale = (max_norm / (norm + 1e-12)).clamp(max=1.0)
        p.grad.mul_(scale.view(-1, *([1] * (p.dim() - 1))))


def run_key(mcfg: ModelConfig, tcfg: TrainConfig) -> str:
    """Content address of a run: both configs and the source of the code that trains it."""
    return content_key({"model": asdict(mcfg), "train": asdict(tcfg)},
                       (data_module, model_module, sys.modules[__name__]))


def train(mcfg: ModelConfig, tcfg: TrainConfig, cache: Path | None = None) -> TrainResult:
    """Train ``tcfg.n_seeds`` models of shape ``mcfg`` at once on fresh Gaussian regression batches
    with random position signs; the test curve uses one fixed batch with P = I.

    The result is cached at ``<cache>/linear-<run_key>.pt`` (default :func:`tvlib.runcache.cache_dir`)
    and loaded from there when it exists. Training uses the caller's CPU threads: unlike the GPTs'
    (:func:`tvlib.runcache.one_thread`), these runs come out bit-identical on one thread and on two
    (a test checks), and two threads train the cpu profile's batches faster."""
    path = (cache_dir() if cache is None else Path(cache)) / f"linear-{run_key(mcfg, tcfg)}.pt"
    if path.exists():
        return _load(path, mcfg, tcfg)
    result = fit(mcfg, tcfg)
    save_atomic({"model": result.model.state_dict(), "D_init": result.D_init, "steps": result.steps,
                 "risk": result.risk, "checkpoints": [m.state_dict() for m in result.checkpoints]}, path)
    return result


def _load(path: Path, mcfg: ModelConfig, tcfg: TrainConfig) -> TrainResult:
    """A cached run, rebuilt as the :class:`TrainResult` that :func:`fit` returned."""
    state = torch.load(path, weights_only=True, map_location=tcfg.device)

    def rebuild(weights: dict[str, Tensor]) -> LinearTransformer:
        m = LinearTransformer(mcfg, tcfg.n_seeds, torch.Generator(device=tcfg.device), device=tcfg.device)
        m.load_state_dict(weights)
        return m

    checkpoints = [rebuild(w).requires_grad_(False) for w in state["checkpoints"]]
    return TrainResult(model=rebuild(state["model"]), D_init=state["D_init"], steps=state["steps"],
                       risk=state["risk"], last_k=tcfg.last_k, checkpoints=checkpoints)


def fit(mcfg: ModelConfig, tcfg: TrainConfig) -> TrainResult:
    """:func:`train` without the cache: always trains (benchmarks time this)."""
    dev, S = tcfg.device, tcfg.n_seeds
    g_init, g_data, g_test = (torch.Generator(device=dev).manual_seed(tcfg.seed * 1000 + k) for k in range(3))
    model = LinearTransformer(mcfg, S, g_init, device=dev)
    D_init = model.D.detach().clone()
    test = sample_prompts((1, tcfg.eval_batch), mcfg.n, mcfg.d, mcfg.layout, g_test, device=dev)
    opt = torch.optim.AdamW(model.parameters(), lr=tcfg.lr, betas=tcfg.betas, weight_decay=tcfg.weight_decay)
    steps, curve, last = [], [], deque(maxlen=tcfg.last_k)
    for step in range(tcfg.steps):
        for group in opt.param_groups:
            group["lr"] = float(tcfg.learning_rate(step))
        batch = sample_prompts((S, tcfg.batch), mcfg.n, mcfg.d, mcfg.layout, g_data, device=dev)
        signs = position_signs((S, tcfg.batch), mcfg.n, mcfg.layout, mcfg.n_layers, g_data, tcfg.signs, dev)
        keep = dropout_keep(model, tcfg.batch, tcfg.dropout, g_data)
        loss = risk(model, replace(batch, signs=signs), keep).sum()
        if step >= tcfg.l1_from:
            loss = loss + tcfg.l1 * sum(p.abs().sum() for p in model.parameters())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_per_seed(model, tcfg.clip)
        opt.step()
        if step % tcfg.eval_every == 0 or step == tcfg.steps - 1:
            with torch.no_grad():
                curve.append(risk(model, test).cpu())
            steps.append(step)
            last.append(snapshot(model))
    return TrainResult(model=model, D_init=D_init, steps=steps, risk=torch.stack(curve), last_k=tcfg.last_k,
                       checkpoints=list(last))
