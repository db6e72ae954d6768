"""What the pretrained-LLM chapter finds, summarised and written as text from one run's numbers.

:func:`summarise` reduces a task's runs (one per seed) to seed means of accuracies plus the
:class:`~tvlib.analysis.LayerSweep` of errors (``1 - accuracy``) whose guard,
:func:`tvlib.analysis.learned_icl`, decides whether ICL solves the task. The ``*_finding``
functions write one bullet of the chapter's "What we find" each, and every branch of their
wording is chosen by a condition on the numbers (:func:`write` joins them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tvlib.analysis import LayerSweep, mean_std
from tvlib.llm.evaluate import TaskRun, task_sweep

TASKV = "TaskV (replace at ->)"
ADD = "add"
POSITIONS = "template positions"


def window_label(window: int) -> str:
    """The name of the injection at ``window`` consecutive layers."""
    return f"window of {window} layers"


@dataclass(frozen=True)
class TaskSummary:
    """One task's accuracies averaged over seeds, and its sweep of errors for the guard and figures."""

    sweep: LayerSweep  # errors 1 - accuracy; the layer is chosen on dev prompts
    baseline: float
    icl: float
    tv: float  # each seed's test accuracy at its own dev-chosen layer, averaged
    curve: np.ndarray  # [L] TaskV test accuracy by injection layer
    extra_layers: list[int]  # the strided layers of the other injections
    variants: dict[str, np.ndarray]  # injection -> test accuracy at extra_layers; TASKV first

    @property
    def solved(self) -> bool:
        """ICL solves the task: the book's one rule, ICL error at most half the zero-shot error."""
        return self.sweep.learned_icl

    @property
    def n_layers(self) -> int:
        return len(self.curve)


def summarise(runs: Sequence[TaskRun], window: int) -> TaskSummary:
    """Seed means of one task's runs; ``window`` is the width the window injection used (its label)."""
    if not runs:
        raise ValueError("summarise needs at least one run")

    def mean(key: str) -> np.ndarray:
        return np.mean([getattr(r, key) for r in runs], 0)

    layers = runs[0].extra_layers
    curve = mean("tv_test")
    return TaskSummary(sweep=task_sweep(runs), baseline=float(mean("baseline")), icl=float(mean("icl")),
                       tv=float(mean("tv")), curve=curve, extra_layers=layers,
                       variants={TASKV: curve[layers], ADD: mean("add_test"), window_label(window): mean("window_test"),
                                 POSITIONS: mean("positions_test")})


def results_table(runs: Mapping[str, Sequence[TaskRun]], n_shots: int) -> pd.DataFrame:
    """Per task: baseline, ICL and TaskV accuracy ('mean ± std' over seeds) and each seed's dev layer."""
    return pd.DataFrame({name: {"baseline (0-shot)": mean_std([r.baseline for r in rs]),
                                f"ICL ({n_shots}-shot)": mean_std([r.icl for r in rs]),
                                "TaskV": mean_std([r.tv for r in rs]),
                                "layer (dev)": " ".join(str(r.best_layer) for r in rs)}
                         for name, rs in runs.items()}).T


def best_table(summaries: Mapping[str, TaskSummary]) -> pd.DataFrame:
    """Per task and injection: the best test accuracy over the strided layers and where; ICL beside."""
    def best(s: TaskSummary, acc: np.ndarray) -> str:
        return f"{max(acc):.2f} (l={s.extra_layers[int(np.argmax(acc))]})"

    return pd.DataFrame({name: {label: best(s, acc) for label, acc in s.variants.items()} | {"ICL": f"{s.icl:.2f}"}
                         for name, s in summaries.items()}).T


def mean_over(summaries: Mapping[str, TaskSummary], key: str) -> float:
    """Mean over tasks of one seed-mean accuracy ('baseline', 'icl' or 'tv'); NaN for no task."""
    return float(np.mean([getattr(s, key) for s in summaries.values()])) if summaries else float("nan")


def band(s: TaskSummary) -> list[int]:
    """The layers where a single TaskV replacement reaches half of ICL's accuracy."""
    return np.flatnonzero(s.curve >= 0.5 * s.icl).tolist()


def gains(summaries: Mapping[str, TaskSummary]) -> dict[str, list[float]]:
    """Per injection other than TaskV, each task's best test accuracy minus TaskV's best at the same layers."""
    labels = list(next(iter(summaries.values())).variants)[1:] if summaries else []
    return {label: [max(s.variants[label]) - max(s.variants[TASKV]) for s in summaries.values()] for label in labels}


def beyond_noise(values: Sequence[float], step: float) -> tuple[int, int]:
    """How many gains exceed one test prompt (``step``) and how many fall below minus one."""
    return sum(g > step for g in values), sum(g < -step for g in values)


# ----------------------------------------------------------------------------- words


def names(items: Sequence[str]) -> str:
    """Task names as inline code, or 'none'."""
    return ", ".join(f"`{n}`" for n in items) or "none"


def spans(layers: Sequence[int]) -> str:
    """Layers as runs of consecutive numbers, e.g. '3-5, 9'."""
    runs: list[list[int]] = []
    for layer in layers:
        if runs and layer == runs[-1][-1] + 1:
            runs[-1].append(layer)
        else:
            runs.append([layer])
    return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)


def depth(layers: Sequence[int], n_layers: int) -> str:
    """Where layers lie in a model of ``n_layers``: the third that holds their mean."""
    third = min(2, int(3 * np.mean(layers) / n_layers))
    return ("lower", "middle", "upper")[third] + " third"


def unreadable(tokens: Sequence[str]) -> float:
    """Fraction of decoded tokens with no letter or digit (punctuation, whitespace)."""
    return float(np.mean([not any(ch.isalnum() for ch in t) for t in tokens]))


# ----------------------------------------------------------------------------- the bullets


def icl_finding(summaries: Mapping[str, TaskSummary], n_shots: int) -> str:
    """Which tasks ICL solves (the guard), with baseline -> ICL accuracy."""
    solved = [n for n, s in summaries.items() if s.solved]
    unsolved = [n for n in summaries if n not in solved]
    return (f"- **ICL.** With {n_shots} demonstrations, ICL at least halves the zero-shot error on "
            f"{len(solved)} of {len(summaries)} task(s)"
            + (": " + ", ".join(f"`{n}` {summaries[n].baseline:.2f} → {summaries[n].icl:.2f}" for n in solved)
               if solved else "")
            + (f"; not on {names(unsolved)}, which the claims leave out." if unsolved else "."))


def taskv_finding(solved: Mapping[str, TaskSummary]) -> str:
    """How much of ICL's accuracy the dev-chosen single replacement recovers on the solved tasks."""
    tv, icl = mean_over(solved, "tv"), mean_over(solved, "icl")
    ratio = tv / icl
    amount = "most" if ratio >= 0.8 else "a large part" if ratio >= 0.5 else "only a small part"
    return (f"- **TaskV.** A single replacement at the final `->`, at the layer chosen on dev prompts, recovers "
            f"{amount} of ICL's accuracy on these tasks: TaskV {tv:.2f} vs ICL {icl:.2f} (ratio {ratio:.2f}); per "
            "task " + ", ".join(f"`{n}` {s.tv:.2f} vs {s.icl:.2f}" for n, s in solved.items()) + ".")


def layers_finding(solved: Mapping[str, TaskSummary], extra_stride: int) -> str:
    """Where TaskV reaches half of ICL per task, whether that is a band, and what a fixed layer would do."""
    bands = {n: band(s) for n, s in solved.items()}
    parts = []
    for name, good in bands.items():
        s = solved[name]
        if not good:
            parts.append(f"`{name}`: at no layer")
            continue
        outside = [layer for layer in range(s.n_layers) if layer not in good]
        rest = f", elsewhere at most {s.curve[outside].max():.2f}" if outside else ""
        parts.append(f"`{name}`: layers {spans(good)} ({len(good)} of {s.n_layers}, {depth(good, s.n_layers)}{rest})")
    text = "- **Which layers.** TaskV reaches half of ICL's accuracy at " + "; ".join(parts) + "."
    return text + "\n" + band_finding(solved, bands, extra_stride) if any(bands.values()) else text


def band_finding(solved: Mapping[str, TaskSummary], bands: Mapping[str, list[int]], extra_stride: int) -> str:
    """Over the tasks with useful layers (``bands``, at least one non-empty): their widths, whether they
    form Hendel et al.'s band, and what the strided grid and a fixed layer would hit."""
    banded = [n for n, good in bands.items() if good]
    widths = [max(bands[n]) - min(bands[n]) + 1 for n in banded]
    edges = [n for n in banded
             if solved[n].curve[0] < 0.5 * solved[n].icl and solved[n].curve[-1] < 0.5 * solved[n].icl]
    hit = [n for n in banded if set(bands[n]) & set(solved[n].extra_layers)]
    common = sorted(set.intersection(*(set(bands[n]) for n in banded)))
    span = f"{min(widths)}" if min(widths) == max(widths) else f"{min(widths)} to {max(widths)}"
    missed = not common or len(hit) < len(banded)
    return (f"  Each task's useful layers lie within a range of {span} consecutive layer(s). On {len(edges)} of "
            f"{len(banded)} task(s) neither the first nor the last layer reaches half of ICL, the band Hendel et al. "
            "describe (their reading: below it the `->` state has not yet gathered the task from the demonstrations, "
            "above it too few layers remain to apply it to the query). The grid of layers used below (stride "
            f"{extra_stride}) hits the band of {len(hit)} of {len(banded)} task(s), and "
            + (f"layers {spans(common)} lie in every task's band" if common
               else "no single layer lies in every task's band")
            + (": a fixed layer or a coarse grid would miss some task, which is why the layer is chosen per task on "
               "dev prompts, over all layers." if missed else
               "; here a fixed layer in that range would also reach half of ICL on every task (the per-task choice on "
               "dev prompts can still do better)."))


def decoding_finding(summaries: Mapping[str, TaskSummary], in_space: Mapping[str, float],
                     top_tokens: Mapping[str, Sequence[str]], top_k: int) -> str:
    """Whether the decoded vector at the dev-chosen layer reads as the task's outputs, and what it is if not.

    in_space: per task, the fraction of the top-k decoded tokens in the output space there;
    top_tokens: those tokens' text.
    """
    readable = [n for n in summaries if in_space[n] >= 0.5]
    other = [n for n in summaries if n not in readable]
    text = (f"- **Decoding.** At the dev-chosen layer, at least half of the top-{top_k} tokens lie in the output space "
            f"for {names(readable)}"
            + (" (" + ", ".join(f"`{n}` {in_space[n]:.2f}" for n in readable) + ")" if readable else "")
            + (f", and less than half for {names(other)}" if other else ""))
    if other:
        text += (" (" + "; ".join(f"`{n}` {in_space[n]:.2f}, its top-{top_k} tokens "
                                  f"{unreadable(top_tokens[n]):.0%} punctuation or whitespace" for n in other) + ")")
    hidden = [n for n in other if summaries[n].solved and summaries[n].tv >= 0.5 * summaries[n].icl]
    return text + "." + (f" For {names(hidden)} the injected vector does carry the task (TaskV reaches at least half "
                         "of ICL), so there the task is present in a form the unembedding does not read directly: "
                         "decoding is a one-way test." if hidden else "")


def injections_finding(solved: Mapping[str, TaskSummary], window: int, step: float) -> str:
    """How add, a window of layers and more positions compare with the single replacement, and what that says.

    A gain counts only beyond ``step`` (one test prompt).
    """
    counts = {label: beyond_noise(g, step) for label, g in gains(solved).items()}
    lines = ["- **Other injections.** Compared with the single replacement's best over the same layers, "
             + "; ".join(f"{label} is better by more than one test prompt on {better} and worse on "
                         f"{worse} of {len(solved)} task(s)" for label, (better, worse) in counts.items()) + "."]
    n_depth, n_position, n_add = counts[window_label(window)][0], counts[POSITIONS][0], counts[ADD][0]
    reading = injection_reading(n_depth, n_position, n_add, len(solved))
    few = 0 < max(n_depth, n_position, n_add) <= len(solved) // 2
    lines.append(f"  Read together: {reading}. Each variant's best is over test layers, so the comparison is "
                 "optimistic for every variant alike" + (", and a gain on a minority of tasks, by a few test prompts, "
                 "is a hint to test with more prompts and seeds, not a finding." if few else "."))
    return "\n".join(lines)


def injection_reading(n_depth: int, n_position: int, n_add: int, n_tasks: int) -> str:
    """Where the task lives, read from how many tasks a window of layers, more positions and adding help."""
    of = f"of {n_tasks} task(s)"
    if n_depth and not n_position:
        reading = (f"a window of layers helps on {n_depth} {of} and more positions on none: where it helps, the task "
                   "sits at the final arrow but is spread over a few consecutive layers rather than held by one, the "
                   "small-model face of Yang et al.'s remark that task vectors may be weakly or non-locally encoded "
                   "(local in position, spread in depth)")
    elif n_position and not n_depth:
        reading = (f"more template positions help on {n_position} {of} and a window of layers on none: there part of "
                   "the task is carried by the query line's other tokens, not only by the final arrow (non-local in "
                   "position)")
    elif n_depth and n_position:
        reading = (f"a window of layers helps on {n_depth} and more positions on {n_position} {of}: the task is "
                   "spread in depth and in position, as Yang et al.'s remark on weakly or non-locally encoded task "
                   "vectors allows")
    else:
        reading = ("neither a window of layers nor more positions beats the single replacement by more than one test "
                   "prompt: at this resolution one (layer, `->`) state carries what they carry")
    if n_add:
        reading += (f"; adding the demonstrations' shift beats replacing on {n_add} {of}, so there the zero-shot "
                    "state holds something a replacement throws away")
    return reading


def write(summaries: Mapping[str, TaskSummary], *, n_shots: int, extra_stride: int, window: int, n_test: int,
          in_space: Mapping[str, float], top_tokens: Mapping[str, Sequence[str]], top_k: int) -> str:
    """The chapter's findings as Markdown bullets; the TaskV, layer and injection bullets only if ICL solves a task."""
    solved = {n: s for n, s in summaries.items() if s.solved}
    found = [icl_finding(summaries, n_shots)]
    if solved:
        found += [taskv_finding(solved), layers_finding(solved, extra_stride)]
    found.append(decoding_finding(summaries, in_space, top_tokens, top_k))
    if solved:
        found.append(injections_finding(solved, window, 1 / n_test))
    return "\n".join(found)
