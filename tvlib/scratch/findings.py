"""The from-scratch chapters' generated text: model names and the summaries of a run.

A chapter's closing summary is written from the run's numbers, so it has one branch per outcome
(learned ICL or not, a task vector or none); each branch lives here, where a test reaches it,
and the chapter only calls. The verdict tests themselves stay in the chapters, next to their
criteria: these functions are given their outcomes, never re-derive them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from tvlib.analysis import ICL_RULE, LayerSweep

NOT_LEARNED = "n/a (no ICL to recover)"
LAYERS = (0, 1, 2)  # the prescribed layers l* of the TVP-loss models


def tvp_name(layer: int, lam: float = 1.0) -> str:
    """A TVP-loss model's name in the book: ``TVP l*=1``, its lambda named unless it is 1."""
    return f"TVP l*={layer}" + ("" if lam == 1.0 else f", lambda={lam}")


def at_prescribed_layer(sweeps: Mapping[str, LayerSweep], lam: float = 1.0,
                        layers: Sequence[int] = LAYERS) -> dict[int, float]:
    """The TaskV error of each TVP model at its own prescribed layer l*: ``{l*: error}``."""
    return {l: float(sweeps[tvp_name(l, lam)].curve[l]) for l in layers}


def recovery_text(sweep: LayerSweep) -> str:
    """The best layer's recovery, or 'n/a' where the model has not learned ICL (the book's rule)."""
    return f"{sweep.recovery():.2f}" if sweep.learned_icl else NOT_LEARNED


def report(profile: str, steps: int, lines: Sequence[str]) -> str:
    """A generated summary: a bold line naming the profile and the budget, then one bullet a line."""
    return f"**{profile} profile, {steps} training steps (token offset).**\n\n" + "\n".join(lines)


def offset_lines(results: Mapping[str, LayerSweep], main: str, averaged: LayerSweep) -> list[str]:
    """Token offset: did the ``main`` model learn ICL, how much its task vectors recover."""
    res = results[main]
    verdict = ("it learns the task in context." if res.learned_icl else
               f"it has not learned ICL at this budget ({ICL_RULE}), so no task-vector verdict can be positive.")
    return [
        f"- In context the model ({main}) goes from a zero-shot error of {res.zero_shot_mean:.3f} to "
        f"{res.icl_mean:.3f}: {verdict}",
        "- The best single-layer task vector closes "
        + ", ".join(f"{r.recovery():.0%} ({name})" for name, r in results.items())
        + " of the gap between zero-shot and ICL.",
        f"- Averaging each layer's states over all arrows closes {averaged.recovery():.0%} ({main}), against "
        f"{res.recovery():.0%} for the last arrow alone.",
    ]


def regression_lines(results: Mapping[str, LayerSweep], least_squares: float, *, n_dims: int, steps: int,
                     shots: int, x_scale: float = 1.0) -> list[str]:
    """Linear regression, triplet and pairwise models: learned or on the plateau, and their task vectors."""
    tri, pair = results["triplet"], results["pairwise"]
    lines = [f"- **Linear regression** (d = {n_dims}, {steps} steps): with {shots} demonstrations the error goes "
             "from zero-shot to ICL "
             + ", ".join(f"{r.zero_shot_mean:.3f} to {r.icl_mean:.3f} ({layout}"
                         + ("" if r.learned_icl else ", not learned: the model is still on the plateau") + ")"
                         for layout, r in results.items())
             + f"; least squares reaches {least_squares:.3f}."]
    if tri.learned_icl:
        lines.append(f"- The best triplet task vector (layer {tri.best_layer}) has error {tri.best:.3f}, closing "
                     f"{tri.recovery():.0%} of the regression gap; the best pairwise one (layer {pair.best_layer}) "
                     f"{pair.best:.3f}" + (f" ({pair.recovery():.0%})." if pair.learned_icl else "."))
        dummy = 2 * x_scale ** 2  # E[(f(x) - f(x'))^2] = 2 E[y^2] for independent queries x, x'
        last = float(tri.curve[-1])
        lines.append(f"- At the last layer the triplet task vector gives error {last:.3f}; answering the dummy "
                     f"query x' instead of x would give about {dummy:.2f} (2 E[y^2])"
                     + (": the injected state carries the dummy's answer, not a query-free task."
                        if abs(last - dummy) < 0.25 * dummy else "."))
        return lines
    lines.append("- Without in-context learning in the triplet format there is no task vector to find there: "
                 "the regression verdict above is negative for that reason, not because a learned task is "
                 "encoded elsewhere.")
    if pair.learned_icl:
        lines.append(f"- The pairwise model does learn in context, but its best task vector (layer {pair.best_layer}) "
                     f"has error {pair.best:.3f} against {pair.zero_shot_mean:.3f} zero-shot"
                     + (": injecting it is worse than no vector at all, " if pair.best > pair.zero_shot_mean else ", ")
                     + "as expected when the injected state replaces the query's own.")
    return lines


def vote_text(icl: Tensor, vote: Tensor, tv: LayerSweep, margin: float = 0.02) -> str:
    """Regular languages: does ICL beat the majority vote of the demonstrations, and what a task vector adds.

    ``icl`` and ``vote`` are error curves by number of demonstrations (entry i: i demonstrations);
    the model "uses more than label frequencies" if it beats the vote by ``margin`` on average.
    """
    beyond = float((torch.as_tensor(vote)[1:] - torch.as_tensor(icl)[1:]).mean())
    shots = len(icl) - 1
    text = (f"With {shots} demonstrations the model's error is {float(icl[-1]):.3f} against {float(vote[-1]):.3f} "
            f"for the majority vote; averaged over 1 to {shots} demonstrations it is {abs(beyond):.3f} "
            f"{'below' if beyond > 0 else 'above'} the vote. ")
    text += ("So at this budget the model has learned the label frequencies of a prompt, not its language, and a "
             "task vector can carry no more than that: " if beyond < margin else
             "So the model uses more than label frequencies: ")
    text += (f"the best task vector (layer {tv.best_layer}) has error {tv.best:.3f} against {tv.zero_shot_mean:.3f} "
             f"zero-shot and {tv.icl_mean:.3f} for ICL")
    return text + (f" (recovery {tv.recovery():.2f})." if tv.learned_icl else
                   f"; no recovery, since the model has not learned ICL ({ICL_RULE}).")


def tvp_offset_lines(base: LayerSweep, at_star: Mapping[int, float], beats_base: Mapping[int, bool],
                     icl_change: Mapping[str, float], icl_kept: Mapping[str, bool], small: tuple[float, float],
                     ood: Mapping[str, float], chance: float) -> list[str]:
    """TVP-loss, token offset: the vector at l*, the cost in ICL, the smaller lambda, longer prompts.

    ``beats_base`` and ``icl_kept`` are the chapter's own per-model test outcomes; ``small`` is
    (the smaller lambda, its TaskV error at l* = 1); ``ood`` the error on longer prompts by model.
    """
    strong = [l for l, ok in beats_base.items() if ok]
    hurt = {name: d for name, d in icl_change.items() if not icl_kept[name]}
    lam, small_err = small
    best_ood = min(ood[tvp_name(l)] for l in at_star)
    return [
        f"- Without the TVP-loss the best single layer reaches a TVP error of {base.best:.3f} "
        f"(zero-shot {base.zero_shot_mean:.3f}, ICL {base.icl_mean:.3f}).",
        "- With it, the vector at the prescribed layer beats that by at least 0.05 for "
        + (f"l* in {strong}" if strong else "no l*") + "; the TVP errors at l* = "
        + ", ".join(str(l) for l in at_star) + " are " + ", ".join(f"{e:.3f}" for e in at_star.values()) + ".",
        f"- ICL inside the trained context stays within 0.03 of the baseline for {len(icl_change) - len(hurt)} of "
        f"{len(icl_change)} TVP models" + ("" if not hurt else "; it rises for "
                                            + ", ".join(f"{name} ({d:+.3f})" for name, d in hurt.items())) + ".",
        f"- With the smaller lambda = {lam} at l* = 1 the TVP error at l* is {small_err:.3f}, "
        f"against {at_star[1]:.3f} with lambda = 1.",
        f"- On prompts twice as long as in training the baseline's error is {ood['baseline']:.3f} and the best TVP "
        f"model's {best_ood:.3f} (chance {chance:.3f}).",
    ]


def tvp_regression_lines(sweeps: Mapping[str, LayerSweep], icl: Mapping[str, float], shifted: Mapping[str, float],
                         *, lambdas: Sequence[float], steps: int, demos: str, x_scale: float = 1.0,
                         shift_scale: float) -> list[str]:
    """TVP-loss, linear regression: which models learned ICL, their vectors at l*, ICL in and out of distribution.

    ``icl`` and ``shifted``: ICL squared error by model (over ``demos`` demonstrations) on the
    training inputs (scale ``x_scale``) and on inputs of scale ``shift_scale``; E[y^2] = scale^2.
    """
    base = sweeps["baseline"]
    lines = [f"- Linear regression ({steps} steps): the baseline's ICL error ({demos} demos) is {icl['baseline']:.3f} "
             f"in distribution and {shifted['baseline']:.3f} on shifted inputs (relative to E[y^2]: "
             f"{icl['baseline'] / x_scale ** 2:.3f} and {shifted['baseline'] / shift_scale ** 2:.3f}); "
             + ("it learns the task in context." if base.learned_icl else "it has not left the loss plateau.")]
    for lam in lambdas:
        names = [tvp_name(l, lam) for l in LAYERS]
        lines.append(f"- With the TVP-loss, lambda = {lam}, at l* = 0, 1, 2: learned ICL "
                     + ", ".join("yes" if sweeps[n].learned_icl else "no" for n in names)
                     + "; TVP error at l* " + ", ".join(f"{e:.3f}" for e in at_prescribed_layer(sweeps, lam).values())
                     + f" (baseline's best layer {base.best:.3f}, zero-shot {base.zero_shot_mean:.3f}); ICL error in "
                     "distribution " + ", ".join(f"{icl[n]:.3f}" for n in names) + "; on shifted inputs "
                     + ", ".join(f"{shifted[n]:.3f}" for n in names) + ".")
    if not any(s.learned_icl for s in sweeps.values()):
        lines.append("- No regression model learned ICL, so the regression tests are empty at this budget: every "
                     "model predicts about 0, and its error is about E[y^2] in distribution and under the shift "
                     "alike (see the exploration notes in the linear-regression section of emergence_scratch).")
    return lines
