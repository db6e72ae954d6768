"""Results shared by every model family: task-vector quality by layer, its guard, seed averaging.

The book states one rule for "the model learned ICL" (:func:`learned_icl`), and every verdict
that needs a task vector to exist asks it first, through :class:`LayerSweep`. Quantities are
*errors* (lower is better): 0/1 error rates, squared errors, or ``1 - accuracy`` for the LLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

ICL_GUARD = 0.5  # ICL must at least halve the zero-shot error
# How a claim's criterion names the rule: "... the model learned ICL (ICL_RULE); then ...".
ICL_RULE = f"the book's rule, ICL error <= {ICL_GUARD:g} x zero-shot error"


def learned_icl(zero_shot: float, icl: float) -> bool:
    """The book's one definition: ICL error at most half the zero-shot error (:data:`ICL_GUARD`).

    Relative, so it serves 0/1 errors and squared errors alike; without it a recovery or a
    best layer would grade noise.
    """
    return bool(icl <= ICL_GUARD * zero_shot)


# Dong et al.'s rank limit (eq. 10, Prop. 4) as a test on accuracy ratios r = TaskV / ICL, the
# book's criterion for every model family, fixed before any run.
RANK_MATCH = 0.8  # one-way maps: r at least this, the task vector matches ICL
RANK_DROP = 0.8  # the bijection: r at most this times the one-way r, the task vector fails
RANK_RULE = (f"reproduced if ICL is learned (the precondition), one-way TaskV/ICL >= {RANK_MATCH:g} and "
             f"bijection TaskV/ICL <= {RANK_DROP:g} x one-way; partly if ICL is learned and bijection "
             f"TaskV/ICL < one-way")


def rank_limit(one_way: float, bijection: float, learned: bool) -> tuple[bool, bool]:
    """(reproduced, partly) of :data:`RANK_RULE` on TaskV/ICL ratios.

    ``learned``: the precondition, ICL learned on the tasks compared (:func:`learned_icl`);
    without it neither holds, since a ratio of two failures says nothing. NaN ratios fail.
    """
    if not learned:
        return False, False
    return bool(one_way >= RANK_MATCH and bijection <= RANK_DROP * one_way), bool(bijection < one_way)


ICL_FLOOR = 0.6  # a bijection with ICL accuracy below this is too weak to compare TaskV with
RANK_EXCEPTIONS = ("copy", "antonym", "involution")  # x = +-y: predicted to work, reported, not graded


def rank_limit_summary(table: pd.DataFrame, icl_floor: float = ICL_FLOOR,
                       exceptions: Sequence[str] = RANK_EXCEPTIONS) -> dict:
    """The inputs of :data:`RANK_RULE` from a Table 1 layout (columns ``map``, ``direction``, ``ICL``,
    ``TaskV/ICL``, ``learned ICL``; one row per task): the mean TaskV/ICL of the kept one-way rows
    (X->Y, Y->X) and of the kept bijections (X<->Y), and every left-out row with its reason.

    A row is left out if its map is one of ``exceptions`` (Prop. 4 allows them), if ICL is not
    learned on it (:func:`learned_icl`), or, for a bijection, if its ICL accuracy is below ``icl_floor``.
    ``learned`` is True when at least one one-way row and one bijection are kept.
    """
    kept: dict[str, list[float]] = {"one-way": [], "bijection": []}
    left_out = {}
    for row in table.to_dict("records"):
        task = f"{row['map']} {row['direction']}"
        kind = "bijection" if row["direction"] == "X<->Y" else "one-way"
        if row["map"] in exceptions:
            left_out[task] = "a predicted exception (x = +-y)"
        elif not row["learned ICL"]:
            left_out[task] = f"ICL not learned (ICL {row['ICL']:.2f})"
        elif kind == "bijection" and row["ICL"] < icl_floor:
            left_out[task] = f"ICL {row['ICL']:.2f} < {icl_floor:g}"
        else:
            kept[kind].append(float(row["TaskV/ICL"]))
    return {"one-way": float(np.mean(kept["one-way"])) if kept["one-way"] else float("nan"),
            "bijection": float(np.mean(kept["bijection"])) if kept["bijection"] else float("nan"),
            "n one-way": len(kept["one-way"]), "n bijection": len(kept["bijection"]),
            "learned": bool(kept["one-way"] and kept["bijection"]), "left out": left_out}


def recovery(zero_shot: float, icl: float, tv: float) -> float:
    """Fraction of the zero-shot-to-ICL gap that a task vector closes: 1 = as good as ICL, 0 = no help."""
    gap = zero_shot - icl
    return float("nan") if gap == 0 else float((zero_shot - tv) / gap)


def mean_std(values: Sequence[float], digits: int = 2) -> str:
    """'mean ± std' over seeds (std only with more than one value)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("mean_std needs at least one value")
    text = f"{values.mean():.{digits}f}"
    return text + (f" ± {values.std():.{digits}f}" if values.size > 1 else "")


def _per_seed(name: str, values, n_seeds: int) -> np.ndarray:
    """``values`` as a float array ``[S]`` (a scalar is one seed), or a clear error."""
    values = np.atleast_1d(np.asarray(values, dtype=float))
    if values.shape != (n_seeds,):
        raise ValueError(f"{name} must have one value per seed, shape ({n_seeds},); got {values.shape}")
    return values


def _by_layer(name: str, values) -> np.ndarray:
    """``values`` as a float array ``[S, L]`` (one curve ``[L]`` is one seed), or a clear error."""
    values = np.asarray(values, dtype=float)
    values = values[None] if values.ndim == 1 else values
    if values.ndim != 2 or 0 in values.shape:
        raise ValueError(f"{name} must be [S, L] (seed x layer) or [L], non-empty; got shape {values.shape}")
    return values


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
        by_layer = _by_layer("by_layer", self.by_layer)
        object.__setattr__(self, "by_layer", by_layer)
        object.__setattr__(self, "zero_shot", _per_seed("zero_shot", self.zero_shot, by_layer.shape[0]))
        object.__setattr__(self, "icl", _per_seed("icl", self.icl, by_layer.shape[0]))
        if self.dev_by_layer is not None:
            dev = _by_layer("dev_by_layer", self.dev_by_layer)
            if dev.shape != by_layer.shape:
                raise ValueError(f"dev_by_layer must have the shape of by_layer {by_layer.shape}, got {dev.shape}")
            object.__setattr__(self, "dev_by_layer", dev)

    @classmethod
    def over_seeds(cls, runs: Sequence[LayerSweep]) -> LayerSweep:
        """Stack single runs (one per seed) into one result."""
        if not runs:
            raise ValueError("over_seeds needs at least one run")
        depths = sorted({r.n_layers for r in runs})
        if len(depths) > 1:
            raise ValueError(f"over_seeds needs runs of one depth, got layer counts {depths}")
        devs = [r.dev_by_layer for r in runs]
        if any(d is None for d in devs) and not all(d is None for d in devs):
            raise ValueError("over_seeds needs dev errors for every run or for none")
        return cls(np.concatenate([r.by_layer for r in runs]), np.concatenate([r.zero_shot for r in runs]),
                   np.concatenate([r.icl for r in runs]), None if devs[0] is None else np.concatenate(devs))

    @property
    def n_seeds(self) -> int:
        return self.by_layer.shape[0]

    @property
    def n_layers(self) -> int:
        return self.by_layer.shape[1]

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

    def describe(self, digits: int = 3) -> str:
        """One line of the seed means: zero-shot, ICL, TaskV error by layer and the best layer."""
        layers = " ".join(f"{e:.{digits}f}" for e in self.curve)
        return (f"zero-shot {self.zero_shot_mean:.{digits}f}  ICL {self.icl_mean:.{digits}f}  "
                f"TaskV by layer {layers}  best layer {self.best_layer}")


# A metric of a budget study has stopped moving if its value at a budget is within REL_TOL of the
# value at the largest budget (relative to the larger magnitude) or within ABS_TOL of it.
REL_TOL, ABS_TOL = 0.1, 0.02


def settled(table: pd.DataFrame, budget: str) -> pd.DataFrame:
    """The budget-study rule (``tvlib.book.budget``), per (claim, metric) of a study: the value at
    ``budget``, at the largest budget (the highest ``order``), and whether it has stopped moving
    (within REL_TOL relative or ABS_TOL absolute of the largest budget's value)."""
    if budget not in set(table["budget"]):
        raise ValueError(f"budget {budget!r} is not in the study; valid: {', '.join(dict.fromkeys(table['budget']))}")
    largest = table["order"].max()
    out = []
    for (claim, metric), g in table.groupby(["claim", "metric"], sort=False):
        at = g.loc[g["budget"] == budget, "value"].iloc[0]
        top = g.loc[g["order"] == largest, "value"].iloc[0]
        gap = abs(at - top)
        out.append({"claim": claim, "metric": metric, "here": at, "largest": top,
                    "settled": bool(gap <= ABS_TOL or gap <= REL_TOL * max(abs(at), abs(top)))})
    return pd.DataFrame(out)
