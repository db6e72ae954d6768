"""The LLM chapter's findings: seed summaries, the ICL guard on accuracies, and each branch of the text."""

import numpy as np
import pytest
import torch

from tvlib.llm import findings
from tvlib.llm.evaluate import TaskRun

N_LAYERS = 10
EXTRA = [0, 3, 6, 9]


def run(curve, baseline=0.0, icl=1.0, dev=None, add=None, window=None, positions=None) -> TaskRun:
    """A task run with the given TaskV test curve (dev curve alike unless given); variants default to TaskV's."""
    curve = np.asarray(curve, dtype=np.float32)
    at_extra = curve[EXTRA]
    return TaskRun(task="t", baseline=baseline, icl=icl, tv_dev=curve if dev is None else np.asarray(dev, np.float32),
                   tv_test=curve, extra_layers=EXTRA,
                   add_test=at_extra if add is None else np.asarray(add, np.float32),
                   window_test=at_extra if window is None else np.asarray(window, np.float32),
                   positions_test=at_extra if positions is None else np.asarray(positions, np.float32),
                   mean_tv=torch.zeros(N_LAYERS, 4), tv_echo=np.zeros(N_LAYERS, np.float32), icl_echo=0.0)


def band_curve(layers, high=1.0, low=0.0) -> list[float]:
    return [high if layer in layers else low for layer in range(N_LAYERS)]


def summary(curve, **kw) -> findings.TaskSummary:
    return findings.summarise([run(curve, **kw)], window=3)


# ----------------------------------------------------------------------------- summaries and the guard


def test_summarise_averages_seeds_and_each_seed_chooses_its_own_layer():
    one = run(band_curve([2]), dev=band_curve([2]))
    two = run(band_curve([5], high=0.5), dev=band_curve([5]))
    s = findings.summarise([one, two], window=3)
    assert [one.best_layer, two.best_layer] == [2, 5]
    assert s.tv == pytest.approx(0.75)  # (1.0 at layer 2 + 0.5 at layer 5) / 2
    assert s.curve.tolist() == pytest.approx([0, 0, 0.5, 0, 0, 0.25, 0, 0, 0, 0])
    assert list(s.variants) == [findings.TASKV, findings.ADD, "window of 3 layers", findings.POSITIONS]
    assert s.variants[findings.TASKV].tolist() == s.curve[EXTRA].tolist()
    assert np.allclose(s.sweep.by_layer, 1 - np.stack([one.tv_test, two.tv_test]))  # errors, per seed
    assert s.n_layers == N_LAYERS
    with pytest.raises(ValueError, match="at least one run"):
        findings.summarise([], window=3)


@pytest.mark.parametrize("baseline, icl, solved", [
    (0.0, 1.0, True),
    (0.0, 0.5, True),  # error 0.5 = half of 1.0
    (0.0, 0.3, False),  # gains 0.3 accuracy, but the error only falls from 1.0 to 0.7
    (0.8, 0.92, True),  # gains only 0.12, but the error falls from 0.2 to 0.08
    (0.4, 0.6, False),
])
def test_icl_solves_a_task_when_it_halves_the_error(baseline, icl, solved):
    assert summary(band_curve([5]), baseline=baseline, icl=icl).solved is solved


def test_tables():
    runs = {"a": [run(band_curve([3]), baseline=0.25), run(band_curve([4]), baseline=0.75)]}
    table = findings.results_table(runs, n_shots=5)
    assert table.loc["a"].tolist() == ["0.50 ± 0.25", "1.00 ± 0.00", "1.00 ± 0.00", "3 4"]
    assert list(table.columns)[1] == "ICL (5-shot)"
    s = summary(band_curve([6]), positions=[0, 0.5, 0.25, 0])
    best = findings.best_table({"a": s})
    assert best.loc["a", findings.TASKV] == "1.00 (l=6)" and best.loc["a", findings.POSITIONS] == "0.50 (l=3)"
    assert best.loc["a", "ICL"] == "1.00"


def test_band_gains_and_noise():
    s = summary(band_curve([4, 5, 6], high=0.6), icl=1.0, window=[0, 0.75, 0.75, 0])
    assert findings.band(s) == [4, 5, 6]
    assert findings.band(summary(band_curve([4], high=0.4))) == []
    gains = findings.gains({"a": s})
    assert list(gains) == [findings.ADD, "window of 3 layers", findings.POSITIONS]
    assert gains["window of 3 layers"] == [pytest.approx(0.15)] and gains[findings.ADD] == [0.0]
    assert findings.beyond_noise([0.3, 0.1, -0.3, -0.2], step=0.125) == (1, 2)
    assert findings.mean_over({}, "tv") != findings.mean_over({}, "tv")  # NaN without tasks


def test_words():
    assert findings.names(["a", "b"]) == "`a`, `b`" and findings.names([]) == "none"
    assert findings.spans([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert findings.depth([0, 1], 30) == "lower third"
    assert findings.depth([14, 15], 30) == "middle third"
    assert findings.depth([29], 30) == "upper third"
    assert findings.unreadable([" ", ",", "A", " b"]) == 0.5


# ----------------------------------------------------------------------------- the bullets


def test_icl_finding_names_the_tasks_left_out():
    text = findings.icl_finding({"a": summary(band_curve([5]), baseline=0.0, icl=1.0),
                                 "b": summary(band_curve([5]), baseline=0.5, icl=0.5)}, n_shots=5)
    assert "halves the zero-shot error on 1 of 2 task(s): `a` 0.00 → 1.00; not on `b`" in text
    assert text.endswith("which the claims leave out.")
    assert findings.icl_finding({"a": summary(band_curve([5]))}, n_shots=5).endswith("`a` 0.00 → 1.00.")


@pytest.mark.parametrize("high, amount", [(1.0, "recovers most"), (0.6, "a large part"), (0.2, "only a small part")])
def test_taskv_finding_grades_the_ratio(high, amount):
    text = findings.taskv_finding({"a": summary(band_curve([5], high=high))})
    assert amount in text and f"ratio {high:.2f}" in text


def test_layers_finding_a_band_in_the_middle_that_a_fixed_layer_hits():
    s = {"a": summary(band_curve([5, 6], low=0.25)), "b": summary(band_curve([6, 7]))}
    text = findings.layers_finding(s, extra_stride=3)
    assert "`a`: layers 5-6 (2 of 10, middle third, elsewhere at most 0.25)" in text
    assert "range of 2 consecutive layer(s). On 2 of 2 task(s) neither the first nor the last" in text
    assert "hits the band of 2 of 2 task(s), and layers 6 lie in every task's band" in text
    assert "a fixed layer in that range would also reach half of ICL on every task" in text


def test_layers_finding_bands_that_share_no_layer_or_miss_the_grid():
    s = {"a": summary(band_curve([0, 1, 2])), "b": summary(band_curve([4, 5])), "c": summary(band_curve([3]))}
    text = findings.layers_finding(s, extra_stride=3)
    assert "range of 1 to 3 consecutive layer(s). On 2 of 3 task(s)" in text  # a's band starts at layer 0
    assert "hits the band of 2 of 3 task(s)" in text  # b (4, 5) falls between grid layers 3 and 6
    assert "no single layer lies in every task's band: a fixed layer or a coarse grid would miss" in text


def test_layers_finding_without_any_band_stops_after_the_first_line():
    text = findings.layers_finding({"a": summary(band_curve([5], high=0.4))}, extra_stride=3)
    assert text == "- **Which layers.** TaskV reaches half of ICL's accuracy at `a`: at no layer."


def test_decoding_finding_readable_or_not_and_hidden_tasks():
    s = {"a": summary(band_curve([5])), "b": summary(band_curve([5])), "c": summary(band_curve([5], high=0.2))}
    text = findings.decoding_finding(s, in_space={"a": 0.8, "b": 0.1, "c": 0.0},
                                     top_tokens={"a": ["A"], "b": [" ", ",", "x", "y"], "c": ["z"]}, top_k=4)
    assert "lie in the output space for `a` (`a` 0.80), and less than half for `b`, `c`" in text
    assert "`b` 0.10, its top-4 tokens 50% punctuation or whitespace; `c` 0.00" in text
    assert "For `b` the injected vector does carry the task" in text  # c's TaskV is below half of ICL
    only = findings.decoding_finding({"a": s["a"]}, {"a": 0.8}, {"a": ["A"]}, top_k=4)
    assert only.endswith("for `a` (`a` 0.80).")


@pytest.mark.parametrize("depth, position, add, words", [
    (1, 0, 0, "a window of layers helps on 1 of 2 task(s) and more positions on none"),
    (0, 2, 0, "more template positions help on 2 of 2 task(s) and a window of layers on none"),
    (1, 1, 0, "a window of layers helps on 1 and more positions on 1 of 2 task(s)"),
    (0, 0, 0, "neither a window of layers nor more positions beats the single replacement"),
])
def test_injection_reading_branches(depth, position, add, words):
    assert findings.injection_reading(depth, position, add, 2).startswith(words)
    assert "adding the demonstrations' shift" not in findings.injection_reading(depth, position, add, 2)
    assert "beats replacing on 1 of 2" in findings.injection_reading(depth, position, 1, 2)


def test_injections_finding_counts_gains_beyond_one_test_prompt():
    base = band_curve([3, 6], high=0.5)
    s = {"a": summary(base, window=[0, 1.0, 0.5, 0]), "b": summary(base, positions=[0, 0.25, 0.5, 0])}
    text = findings.injections_finding(s, window=3, step=0.25)
    assert "window of 3 layers is better by more than one test prompt on 1 and worse on 0 of 2" in text
    assert "template positions is better by more than one test prompt on 0 and worse on 0 of 2" in text
    assert "helps on 1 of 2 task(s) and more positions on none" in text
    assert text.endswith("a hint to test with more prompts and seeds, not a finding.")  # 1 of 2 is few
    none = findings.injections_finding({"a": summary(base)}, window=3, step=0.25)
    assert none.endswith("optimistic for every variant alike.")


def test_write_leaves_out_what_needs_a_solved_task():
    s = {"a": summary(band_curve([5]), baseline=0.5, icl=0.5)}
    text = findings.write(s, n_shots=5, extra_stride=3, window=3, n_test=4, in_space={"a": 0.0},
                          top_tokens={"a": ["x"]}, top_k=1)
    assert [line.split("**")[1] for line in text.splitlines()] == ["ICL.", "Decoding."]
    s["b"] = summary(band_curve([5]))
    text = findings.write(s, n_shots=5, extra_stride=3, window=3, n_test=4, in_space={"a": 0.0, "b": 1.0},
                          top_tokens={"a": ["x"], "b": ["y"]}, top_k=1)
    bullets = [line.split("**")[1] for line in text.splitlines() if line.startswith("- ")]
    assert bullets == ["ICL.", "TaskV.", "Which layers.", "Decoding.", "Other injections."]
