"""The book's standard figures, one seaborn theme (colour-blind palette).

Each function draws on an ``ax`` it is given and returns it, so a chapter composes panels with
``plt.subplots`` and a test can read back what was drawn. Reference lines are dashed (ICL) and
dotted (zero-shot, chance, the trained context) in every figure; baselines that are curves are
dashed in greys with square markers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
from matplotlib.axes import Axes

from tvlib.analysis import LayerSweep, settled

PALETTE = "colorblind"
ICL_STYLE = {"ls": "--"}
ZERO_SHOT_STYLE = {"ls": ":"}
BASELINE_GREYS = ("k", "0.45", "0.7")
REFERENCES = ("each", "first", "none")


def set_theme() -> None:
    """Set the book-wide matplotlib/seaborn theme; chapters call it via ``tvlib.book.start``."""
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    mpl.rcParams.update({"figure.dpi": 100, "savefig.dpi": 150, "figure.figsize": (6.4, 4.0),
                         "axes.titlesize": "medium"})


def _color(index: int) -> str:
    """The index-th colour of the theme's cycle."""
    colors = mpl.rcParams["axes.prop_cycle"].by_key()["color"]
    return colors[index % len(colors)]


def quality_by_layer(ax: Axes, sweeps: Mapping[str, LayerSweep], *, normalise_depth: bool = False,
                     references: str = "each", accuracy: bool = False, ylabel: str = "error",
                     title: str = "Task vector by injection layer") -> Axes:
    """Task-vector quality by injection layer, one line per sweep, with ICL and zero-shot lines.

    Each line is the mean over seeds, shaded by ± one standard deviation where a sweep has several.
    references: "each" (dashed ICL, dotted zero-shot in each sweep's colour), "first" (those of
    the first sweep only, in black and grey) or "none". normalise_depth: x = layer / (L - 1), to
    compare models of different depth. accuracy: plot 1 - error (the LLM chapters' unit).
    """
    if references not in REFERENCES:
        raise ValueError(f"references {references!r} is not one of {', '.join(REFERENCES)}")
    if not sweeps:
        raise ValueError("quality_by_layer needs at least one sweep")
    value = (lambda e: 1 - np.asarray(e)) if accuracy else np.asarray
    for i, (name, sweep) in enumerate(sweeps.items()):
        n = sweep.n_layers
        x = np.arange(n) / max(1, n - 1) if normalise_depth else np.arange(n)
        color = _color(i)
        ax.plot(x, value(sweep.curve), marker="o", color=color, label=f"TaskV, {name}")
        if sweep.n_seeds > 1:
            std = sweep.by_layer.std(0)
            ax.fill_between(x, value(sweep.curve - std), value(sweep.curve + std), color=color, alpha=0.2, lw=0)
        if references == "each" or (references == "first" and i == 0):
            each = references == "each"
            ax.axhline(value(sweep.icl_mean), color=color if each else "k", **ICL_STYLE, label=f"ICL, {name}")
            ax.axhline(value(sweep.zero_shot_mean), color=color if each else "grey", **ZERO_SHOT_STYLE,
                       label=f"zero-shot, {name}")
    if not normalise_depth:
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    xlabel = "injection layer / (depth - 1)" if normalise_depth else "injection layer"
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    return ax


def error_curves(ax: Axes, curves: Mapping[str, Sequence[float]],
                 baselines: Mapping[str, Sequence[float]] | None = None, *, x: Sequence[float] | None = None, trained_context: float | None = None,
                 chance: float | None = None, xlabel: str = "demonstrations in context", ylabel: str = "error",
                 title: str = "In-context learning") -> Axes:
    """Error curves of models (circles, theme colours) beside baselines (dashed, greys, squares).

    ``x`` defaults to 0, 1, ... (entry i of an ICL curve has i demonstrations in context).
    trained_context: a dotted vertical line where the models' training context ends; chance: a
    dotted horizontal line at chance level.
    """
    if not curves:
        raise ValueError("error_curves needs at least one curve")
    baselines = baselines or {}
    lines = {name: np.asarray(v, dtype=float) for name, v in (curves | baselines).items()}
    xs = np.arange(len(next(iter(lines.values())))) if x is None else np.asarray(x, dtype=float)
    bad = {name: len(v) for name, v in lines.items() if len(v) != len(xs)}
    if bad:
        raise ValueError(f"curves {bad} do not have one value per x ({len(xs)} values)")
    for i, name in enumerate(curves):
        ax.plot(xs, lines[name], marker="o", color=_color(i), label=name)
    for i, name in enumerate(baselines):
        ax.plot(xs, lines[name], marker="s", ls="--", color=BASELINE_GREYS[i % len(BASELINE_GREYS)], label=name)
    if trained_context is not None:
        ax.axvline(trained_context, color="grey", **ZERO_SHOT_STYLE, label="trained context")
    if chance is not None:
        ax.axhline(chance, color="grey", **ZERO_SHOT_STYLE, label="chance")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize="small")
    return ax


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Running mean over ``window`` values (at most the series' length), 'valid' part only."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("smooth needs at least one value")
    window = min(window, len(values))
    return np.convolve(values, np.ones(window) / window, mode="valid")


def loss_curves(ax: Axes, logs: Mapping[str, Sequence[Mapping[str, float]]], key: str = "icl", window: int = 50,
                ylabel: str = "loss", title: str = "Training") -> Axes:
    """One smoothed training curve per run: ``logs[name]`` is a run's log, a dict per step.

    The window shrinks to the shortest log (a short run is averaged over all its steps), and the
    y label names the window used.
    """
    if not logs or not all(logs.values()):
        raise ValueError(f"loss_curves needs non-empty logs, got lengths {[len(log) for log in logs.values()]}")
    window = min(window, *(len(log) for log in logs.values()))
    for i, (name, log) in enumerate(logs.items()):
        ax.plot(smooth([row[key] for row in log], window), color=_color(i), label=name)
    ax.set(xlabel="step", ylabel=f"{ylabel} ({window}-step mean)", title=title)
    ax.legend(fontsize="small")
    return ax


def position_heatmap(ax: Axes, matrix, title: str, mask=None) -> Axes:
    """A source-by-target matrix, diverging colours centred on 0; ``mask``: dots where a theorem allows weight."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"position_heatmap needs a 2-d matrix, got shape {matrix.shape}")
    if mask is not None and np.shape(mask) != matrix.shape:
        raise ValueError(f"mask shape {np.shape(mask)} differs from the matrix's {matrix.shape}")
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


def _bar_width(n_series: int) -> float:
    """Width of one bar when ``n_series`` bars share a group's unit of the x axis."""
    return 0.8 / max(1, n_series)


def _bar_offset(k: int, n_series: int) -> float:
    """Centre of the k-th series' bar relative to its group's tick."""
    return (k - (n_series - 1) / 2) * _bar_width(n_series)


def grouped_bars(ax: Axes, groups: Sequence[str], series: Mapping[str, Sequence[float]],
                 errors: Mapping[str, Sequence[float]] | None = None, hatched: Sequence[str] = ()) -> Axes:
    """Bars of several series side by side for each group; series named in ``hatched`` are hatched.

    The book draws the paper's numbers hatched beside ours, so a reader tells them apart at a glance.
    """
    unknown = [name for name in (*hatched, *(errors or {})) if name not in series]
    if unknown:
        raise ValueError(f"{unknown} are not series; series: {', '.join(series)}")
    for k, (name, values) in enumerate(series.items()):
        err = None if errors is None or name not in errors else errors[name]
        for what, v in (("values", values), ("errors", err)):
            if v is not None and len(v) != len(groups):
                raise ValueError(f"series {name!r} has {len(v)} {what} for {len(groups)} groups")
        x = np.arange(len(groups)) + _bar_offset(k, len(series))
        ax.bar(x, values, _bar_width(len(series)), yerr=err, label=name, color=_color(k), hatch="//" if name in hatched else None,
               edgecolor="k" if name in hatched else "white")
    ax.set_xticks(range(len(groups)), groups)
    ax.legend(fontsize="small")
    return ax


PAPER_STYLE = {"marker": "D", "ms": 7, "mfc": "none", "mec": "k", "mew": 1.5, "ls": "none"}


def paper_markers(ax: Axes, groups: Sequence[str], series: Sequence[str],
                  points: Mapping[tuple[str, str], float], label: str = "paper (approx.)") -> Axes:
    """The paper's values as open black diamonds over the bars of :func:`grouped_bars`.

    ``points`` maps (series, group) to a value; a series written ``"A~B"`` (the paper gives one
    value for both) sits midway between the bars of A and B. Groups the run did not measure are
    skipped, so a profile with fewer groups still shows the paper where it overlaps.
    """
    xs, ys = [], []
    for (name, group), value in points.items():
        unknown = [part for part in name.split("~") if part not in series]
        if unknown:
            raise ValueError(f"paper series {unknown} are not bar series; series: {', '.join(series)}")
        if group not in groups:
            continue
        offsets = [_bar_offset(list(series).index(part), len(series)) for part in name.split("~")]
        xs.append(list(groups).index(group) + float(np.mean(offsets)))
        ys.append(value)
    ax.plot(xs, ys, label=label, **PAPER_STYLE)
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


def budget_study(axes: Sequence[Axes], table, marked: str | None = None) -> list[Axes]:
    """One panel per (claim, metric) of a budget study (``tvlib.book.budget``): its value at each
    budget, smallest first. If ``marked`` (the profile's budget) is in the study it is a large red
    dot, and a panel whose metric has not stopped moving there (:func:`tvlib.analysis.settled`)
    says "still moving" in its title."""
    metrics = list(dict.fromkeys(zip(table["claim"], table["metric"])))
    axes = list(axes)
    if len(axes) < len(metrics):
        raise ValueError(f"budget_study needs one axis per metric: {len(metrics)} metrics, {len(axes)} axes")
    status = (settled(table, marked).set_index(["claim", "metric"])["settled"]
              if marked in set(table["budget"]) else None)
    labels = list(dict.fromkeys(table.sort_values("order")["budget"]))
    for ax, (claim, metric) in zip(axes, metrics):
        g = table[(table["claim"] == claim) & (table["metric"] == metric)].sort_values("order")
        ax.plot(g["order"], g["value"], marker="o", color=_color(0), label=metric)
        if status is not None:
            at = g[g["budget"] == marked]
            ax.plot(at["order"], at["value"], "o", ms=10, color=_color(3), label=marked)
        ax.set_xticks(range(len(labels)), labels, rotation=30, fontsize="x-small")
        moving = "" if status is None or status[(claim, metric)] else " (still moving)"
        ax.set_title(f"{claim}: {metric}{moving}", fontsize="small")
    for ax in axes[len(metrics):]:
        ax.set_visible(False)
    return axes[:len(metrics)]


def methods_by_shots(axes: Sequence[Axes], frame, categories: Sequence[str], *, title: str = "") -> Sequence[Axes]:
    """One panel per category: accuracy (%) against N, one line (with std band) per method.

    ``frame`` has columns n_shots, method, category, mean and std, as ``tvlib.papers`` tables and
    ``tvlib.llm.multi.table``; the panel titles are "<title>: <category>".
    """
    if len(axes) != len(categories):
        raise ValueError(f"{len(categories)} categories need as many axes, got {len(axes)}")
    missing = sorted(set(categories) - set(frame["category"]))
    if missing:
        raise ValueError(f"categories {missing} are not in the table; it has {sorted(set(frame['category']))}")
    methods = list(dict.fromkeys(frame["method"]))
    for ax, cat in zip(axes, categories):
        for i, method in enumerate(methods):
            rows = frame[(frame.category == cat) & (frame.method == method)].sort_values("n_shots")
            ax.plot(rows.n_shots, rows["mean"], marker="o", color=_color(i), label=method)
            ax.fill_between(rows.n_shots, rows["mean"] - rows["std"], rows["mean"] + rows["std"], color=_color(i),
                            alpha=0.15)
        ax.set(xlabel="N (shots in the prompt)", ylabel="accuracy (%)", ylim=(-5, 105))
        ax.set_title(f"{title}: {cat}" if title else cat, fontsize="small")
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    axes[0].legend(fontsize="small")
    return axes


def saliency_map(ax: Axes, S, labels: Sequence[str], title: str) -> Axes:
    """A full-prompt saliency map [T, T] (rows: queries, columns: keys), log colours, tokens as tick labels."""
    S = np.asarray(S, dtype=float)
    if S.ndim != 2 or S.shape[0] != S.shape[1] or len(labels) != S.shape[0]:
        raise ValueError(f"saliency_map needs a square map and one label per token, got {S.shape} and {len(labels)}")
    shown = np.where(np.tril(np.ones_like(S, bool)), S, np.nan)
    positive = S[S > 0]
    floor = float(np.quantile(positive, 0.05)) if positive.size else 1e-12
    image = ax.imshow(np.log10(np.maximum(shown, floor)), cmap="viridis")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=90, fontsize=4)
    ax.set_yticks(ticks, labels, fontsize=4)
    ax.set(title=title, xlabel="key token", ylabel="query token")
    ax.grid(False)
    ax.figure.colorbar(image, ax=ax, fraction=0.046, label="log10 saliency")
    return ax


def token_graph(ax: Axes, S, tokens: Sequence[int], labels: Sequence[str], highlight: Sequence[tuple[int, int]],
                title: str, clip: float = 0.7) -> Axes:
    """Dong et al.'s Fig. 3a/b: the tokens at layer l (bottom) and l+1 (top), an edge key -> query per
    saliency entry S[query, key] among ``tokens``; width and alpha |S| / max, clipped at ``clip`` and
    rescaled (as the authors'); the (query, key) pairs in ``highlight`` are drawn in orange."""
    S = np.asarray(S, dtype=float)
    tokens = list(tokens)
    sub = np.abs(S[np.ix_(tokens, tokens)])
    weights = np.minimum(sub / (sub.max() or 1.0), clip) / clip
    marked = set(highlight)
    for qi, q in enumerate(tokens):
        for ki, k in enumerate(tokens[:qi + 1]):
            if weights[qi, ki] < 0.02:
                continue
            hot = (q, k) in marked
            ax.plot([ki, qi], [0, 1], color="tab:orange" if hot else "0.4", lw=2.5 * weights[qi, ki],
                    alpha=float(weights[qi, ki]), zorder=2 if hot else 1)
    x = np.arange(len(tokens))
    ax.scatter(x, np.zeros_like(x), color="tab:blue", zorder=3)
    ax.scatter(x, np.ones_like(x), color="tab:red", zorder=3)
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_yticks([0, 1], ["layer l", "layer l+1"])
    ax.set(title=title, ylim=(-0.2, 1.2))
    ax.grid(False)
    return ax


def demo_weight_bars(ax: Axes, weights, theory=None, title: str = "", ylabel: str = "||tv^{-i} - tv||") -> Axes:
    """Fig. 3c: bars of the mean weight of demonstration i = 1..n (standard error as whiskers),
    Proposition 5's causal profile (scaled to the bars' maximum) as a line when given."""
    weights = np.asarray(weights, dtype=float)
    if weights.ndim == 1:
        weights = weights[None]
    mean = weights.mean(0)
    err = weights.std(0, ddof=1) / np.sqrt(len(weights)) if len(weights) > 1 else None
    i = np.arange(1, len(mean) + 1)
    ax.bar(i, mean, yerr=err, color=_color(0), alpha=0.8, label="measured")
    if theory is not None:
        theory = np.asarray(theory, dtype=float)
        if theory.shape != mean.shape:
            raise ValueError(f"theory profile has shape {theory.shape}, the weights {mean.shape}")
        ax.plot(i, theory / theory.max() * mean.max(), "o-", color=_color(1), label="Prop. 5 (scaled)")
    ax.set(xlabel="demonstration i", ylabel=ylabel, title=title, xticks=i)
    ax.legend(fontsize="small")
    return ax


# --- rank limits (book/rank_limits.md)

RANK_KINDS = {"one-way": {"marker": "s", "filled": False}, "bijection": {"marker": "o", "filled": True}}


def taskv_icl_ratios(ax: Axes, frame, *, title: str = "") -> Axes:
    """TaskV/ICL accuracy per model, one marker per row of ``frame`` (columns ``model``, ``kind``
    in :data:`RANK_KINDS`, ``source``, ``ratio``): open squares one-way maps, filled circles the
    bijection, one colour and offset per source, so the paper's models and ours share one axis.
    The dashed line at 1 is a task vector as good as ICL."""
    bad = sorted(set(frame["kind"]) - set(RANK_KINDS))
    if bad:
        raise ValueError(f"kinds {bad} are not one of {', '.join(RANK_KINDS)}")
    models, sources = list(dict.fromkeys(frame["model"])), list(dict.fromkeys(frame["source"]))
    for k, source in enumerate(sources):
        for kind, style in RANK_KINDS.items():
            rows = frame[(frame["source"] == source) & (frame["kind"] == kind)]
            if rows.empty:
                continue
            x = [models.index(m) + _bar_offset(k, len(sources)) for m in rows["model"]]
            ax.plot(x, rows["ratio"].to_numpy(float), ls="none", marker=style["marker"], ms=7, color=_color(k),
                    mfc=_color(k) if style["filled"] else "none", label=f"{source}: {kind}")
    ax.axhline(1, color="grey", lw=1, ls="--")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set(ylabel="TaskV / ICL accuracy", title=title)
    ax.legend(fontsize="small")
    return ax
