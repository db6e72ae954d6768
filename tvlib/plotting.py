"""The book's standard figures, one seaborn theme (colour-blind palette).

Each function draws on an ``ax`` it is given and returns it, so a chapter composes panels with
``plt.subplots`` and a test can read back what was drawn. Reference lines (ICL, zero-shot) are
dashed and dotted in every figure.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes

from tvlib.analysis import LayerSweep

PALETTE = "colorblind"
ICL_STYLE = {"ls": "--"}
ZERO_SHOT_STYLE = {"ls": ":"}


def set_theme() -> None:
    """Set the book-wide matplotlib/seaborn theme; chapters call it via ``tvlib.book.start``."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "axes.titlesize": "medium"})


def _color(ax: Axes, index: int) -> str:
    """The index-th colour of the theme's cycle."""
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return colors[index % len(colors)]


def quality_by_layer(ax: Axes, sweeps: Mapping[str, LayerSweep], *, normalise_depth: bool = False,
                     references: str = "each", accuracy: bool = False, ylabel: str = "error",
                     title: str = "Task vector by injection layer") -> Axes:
    """Task-vector quality by injection layer, one line per sweep, with ICL and zero-shot lines.

    references: "each" (dashed ICL, dotted zero-shot in each sweep's colour), "first" (those of
    the first sweep only, in black and grey) or "none". normalise_depth: x = layer / (L - 1), to
    compare models of different depth. accuracy: plot 1 - error (the LLM chapters' unit).
    """
    if references not in ("each", "first", "none"):
        raise ValueError(f"references {references!r} is not one of each, first, none")
    value = (lambda e: 1 - np.asarray(e)) if accuracy else np.asarray
    for i, (name, sweep) in enumerate(sweeps.items()):
        n = sweep.curve.shape[0]
        x = np.arange(n) / max(1, n - 1) if normalise_depth else np.arange(n)
        color = _color(ax, i)
        ax.plot(x, value(sweep.curve), marker="o", color=color, label=f"TaskV, {name}")
        if references == "each" or (references == "first" and i == 0):
            ref = color if references == "each" else "k"
            suffix = f", {name}" if references == "each" else ""
            ax.axhline(value(sweep.icl_mean), color=ref, **ICL_STYLE, label=f"ICL{suffix}")
            ax.axhline(value(sweep.zero_shot_mean), color=ref if references == "each" else "grey",
                       **ZERO_SHOT_STYLE, label=f"zero-shot{suffix}")
    xlabel = "injection layer / (depth - 1)" if normalise_depth else "injection layer"
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    return ax


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean over ``window`` values (at most the series' length), 'valid' part only."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    window = min(window, len(values))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves(ax: Axes, logs: Mapping[str, Sequence[Mapping[str, float]]], key: str = "icl", window: int = 50,
                ylabel: str = "loss", title: str = "Training") -> Axes:
    """One smoothed training curve per run: ``logs[name]`` is a run's log, a dict per step."""
    for name, log in logs.items():
        ax.plot(smooth([row[key] for row in log], window), label=name)
    ax.set(xlabel="step", ylabel=f"{ylabel} ({window}-step mean)", title=title)
    ax.legend(fontsize="small")
    return ax


def position_heatmap(ax: Axes, matrix, title: str, mask=None) -> Axes:
    """A source-by-target matrix, diverging colours centred on 0; ``mask``: dots where a theorem allows weight."""
    matrix = np.asarray(matrix, dtype=float)
    lim = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r", vmin=-lim, vmax=lim)
    if mask is not None:
        rows, cols = np.nonzero(np.asarray(mask))
        ax.scatter(cols, rows, s=1.5, c="k", marker=".", label="allowed by the theorem")
        ax.legend(loc="lower left", fontsize="x-small", markerscale=4)
    ax.set(title=title, xlabel="target token", ylabel="source token")
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.yaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.grid(False)
    ax.figure.colorbar(image, ax=ax, fraction=0.046)
    return ax


def grouped_bars(ax: Axes, groups: Sequence[str], series: Mapping[str, Sequence[float]],
                 errors: Mapping[str, Sequence[float]] | None = None, hatched: Sequence[str] = ()) -> Axes:
    """Bars of several series side by side for each group; series named in ``hatched`` are hatched.

    The book draws the paper's numbers hatched beside ours, so a reader tells them apart at a glance.
    """
    width = 0.8 / max(1, len(series))
    for k, (name, values) in enumerate(series.items()):
        if len(values) != len(groups):
            raise ValueError(f"series {name!r} has {len(values)} values for {len(groups)} groups")
        x = np.arange(len(groups)) + (k - (len(series) - 1) / 2) * width
        err = None if errors is None or name not in errors else errors[name]
        ax.bar(x, values, width, yerr=err, label=name, hatch="//" if name in hatched else None,
               edgecolor="white" if name not in hatched else "k")
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize="small")
    return ax


# --- LLM and linear-model figures


def accuracy_by_layer(ax: Axes, layers: Sequence[int], curves: Mapping[str, Sequence[float]],
                      icl: float | None = None, *, xlabel: str = "injection layer", ylabel: str = "test accuracy",
                      title: str = "") -> Axes:
    """Accuracies (or other fractions in [0, 1]) by layer, one line per curve, ICL dashed in black.

    ``layers`` may be a strided subset of the model's layers, as for the LLM chapter's other
    injections; :func:`quality_by_layer` draws a full :class:`~tvlib.analysis.LayerSweep`.
    """
    for name, values in curves.items():
        if len(values) != len(layers):
            raise ValueError(f"curve {name!r} has {len(values)} values for {len(layers)} layers")
        ax.plot(layers, values, marker=".", label=name)
    if icl is not None:
        ax.axhline(icl, color="k", **ICL_STYLE, label="ICL")
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(-0.05, 1.05), title=title)
    ax.legend(fontsize="small")
    return ax
