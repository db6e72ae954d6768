"""Results shared by every model family: task-vector quality by layer, its guard, seed averaging.

The book states one rule for "the model learned ICL" (:func:`learned_icl`), and every verdict
that needs a task vector to exist asks it first, through :class:`LayerSweep`. Quantities are
*errors* (lower is better): 0/1 error rates, squared errors, or ``1 - accuracy`` for the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

ICL_GUARD = 0.5  # ICL must at least halve the zero-shot error


def learned_icl(zero_shot: float, icl: float) -> bool:
    """The book's one definition: ICL error at most half the zero-shot error (:data:`ICL_GUARD`).

    Relative, so it serves 0/1 errors and squared errors alike; without it a recovery or a
    best layer would grade noise.
    """
    return bool(icl <= ICL_GUARD * zero_shot)


def recovery(zero_shot: float, icl: float, tv: float) -> float:
    """Fraction of the zero-shot-to-ICL gap that a task vector closes: 1 = as good as ICL, 0 = no help."""
    gap = zero_shot - icl
    return float("nan") if gap == 0 else float((zero_shot - tv) / gap)


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'mean ± std' over seeds (std only with more than one value)."""
    values = np.asarray(values, dtype=float)
    text = f"{values.mean():.{digits}f}"
    return text + (f" ± {values.std():.{digits}f}" if values.size > 1 else "")


@dataclass(frozen=True)
class LayerSweep:
    """Task-vector error by injection layer with its zero-shot and ICL references, per seed.

    by_layer: ``[S, L]`` (seed x layer); zero_shot, icl: ``[S]``. A single run has S = 1. Every
    summary is taken on the seed means, so one rule serves one seed and many. dev_by_layer
    (``[S, L]``, optional): errors on separate dev prompts; then the best layer is chosen on them
    (Hendel et al.'s protocol) and ``best`` is the test error there.
    """

    by_layer: np.ndarray
    zero_shot: np.ndarray
    icl: np.ndarray
    dev_by_layer: np.ndarray | None = None

    def __post_init__(self) -> None:
        by_layer, zero_shot, icl = (np.atleast_1d(np.asarray(a, dtype=float))
                                    for a in (self.by_layer, self.zero_shot, self.icl))
        by_layer = by_layer[None] if by_layer.ndim == 1 else by_layer
        if by_layer.ndim != 2 or zero_shot.shape != (by_layer.shape[0],) or icl.shape != zero_shot.shape:
            raise ValueError(f"by_layer must be [S, L] and zero_shot, icl [S]; got {by_layer.shape}, "
                             f"{zero_shot.shape}, {icl.shape}")
        object.__setattr__(self, "by_layer", by_layer)
        object.__setattr__(self, "zero_shot", zero_shot)
        object.__setattr__(self, "icl", icl)
        if self.dev_by_layer is not None:
            dev = np.asarray(self.dev_by_layer, dtype=float)
            dev = dev[None] if dev.ndim == 1 else dev
            if dev.shape != by_layer.shape:
                raise ValueError(f"dev_by_layer must have the shape of by_layer {by_layer.shape}, got {dev.shape}")
            object.__setattr__(self, "dev_by_layer", dev)

    @classmethod
    def over_seeds(cls, runs: Sequence[LayerSweep]) -> LayerSweep:
        """Stack single runs (one per seed) into one result."""
        if not runs:
            raise ValueError("over_seeds needs at least one run")
        devs = [r.dev_by_layer for r in runs]
        if any(d is None for d in devs) and not all(d is None for d in devs):
            raise ValueError("over_seeds needs dev errors for every run or for none")
        return cls(np.concatenate([r.by_layer for r in runs]), np.concatenate([r.zero_shot for r in runs]),
                   np.concatenate([r.icl for r in runs]), None if devs[0] is None else np.concatenate(devs))

    @property
    def n_seeds(self) -> int:
        return self.by_layer.shape[0]

    @property
    def curve(self) -> np.ndarray:
        """Mean error by layer over seeds: ``[L]``."""
        return self.by_layer.mean(0)

    @property
    def zero_shot_mean(self) -> float:
        return float(self.zero_shot.mean())

    @property
    def icl_mean(self) -> float:
        return float(self.icl.mean())

    @property
    def best_layer(self) -> int:
        """The layer of lowest mean error, on dev prompts if given (the first on ties)."""
        chooser = self.curve if self.dev_by_layer is None else self.dev_by_layer.mean(0)
        return int(chooser.argmin())

    @property
    def best(self) -> float:
        """The mean (test) error at the best layer."""
        return float(self.curve[self.best_layer])

    @property
    def learned_icl(self) -> bool:
        """:func:`learned_icl` on the seed means."""
        return learned_icl(self.zero_shot_mean, self.icl_mean)

    def recovery(self, tv: float | None = None) -> float:
        """:func:`recovery` of ``tv`` (default: the best layer's error) on the seed means."""
        return recovery(self.zero_shot_mean, self.icl_mean, self.best if tv is None else tv)

    def recovery_if_learned(self, tv: float | None = None) -> float:
        """The recovery, or NaN where the model has not learned ICL (there is nothing to recover)."""
        return self.recovery(tv) if self.learned_icl else float("nan")
