"""tvlib.scratch.findings: names, and every branch of the from-scratch chapters' generated summaries."""

import torch

from tvlib.analysis import LayerSweep
from tvlib.scratch import findings
from tvlib.scratch.findings import tvp_name


def sweep(curve, zero_shot, icl) -> LayerSweep:
    return LayerSweep(curve, zero_shot=zero_shot, icl=icl)


LEARNED = sweep([0.5, 0.3, 0.6, 0.7], 0.8, 0.1)  # recovery (0.8 - 0.3) / 0.7
NOT_LEARNED = sweep([0.7, 0.75], 0.8, 0.6)


def test_names_and_values_at_the_prescribed_layer():
    assert tvp_name(1) == "TVP l*=1" and tvp_name(0, 0.3) == "TVP l*=0, lambda=0.3"
    sweeps = {tvp_name(l): sweep([0.1 * l + 0.01 * j for j in range(4)], 0.8, 0.1) for l in range(3)}
    assert findings.at_prescribed_layer(sweeps) == {0: 0.0, 1: 0.11, 2: 0.22}
    assert findings.at_prescribed_layer({tvp_name(1, 0.3): LEARNED}, 0.3, layers=[1]) == {1: 0.3}


def test_recovery_text():
    assert findings.recovery_text(LEARNED) == "0.71"
    assert findings.recovery_text(NOT_LEARNED) == "n/a (no ICL to recover)"


def test_report_names_profile_and_budget():
    assert findings.report("quick", 200, ["- a", "- b"]) == "**quick profile, 200 training steps (token offset).**\n\n- a\n- b"


def test_offset_lines_say_whether_the_model_learned_icl():
    averaged = sweep([0.6, 0.4, 0.7, 0.7], 0.8, 0.1)
    [first, closes, avg] = findings.offset_lines({"main": LEARNED, "other": NOT_LEARNED}, "main", averaged)
    assert "from a zero-shot error of 0.800 to 0.100: it learns the task in context." in first
    assert "71% (main), 50% (other)" in closes and "closes 57% (main), against 71%" in avg
    [first, *_] = findings.offset_lines({"main": NOT_LEARNED}, "main", NOT_LEARNED)
    assert "it has not learned ICL at this budget (the book's rule" in first


def test_regression_lines_every_branch():
    ls = 0.0
    kw = dict(n_dims=2, steps=20, shots=5)
    dummy_like = sweep([1.0, 0.5, 1.9], 1.0, 0.05)
    lines = findings.regression_lines({"triplet": dummy_like, "pairwise": LEARNED}, ls, **kw)
    assert "1.000 to 0.050 (triplet), 0.800 to 0.100 (pairwise); least squares reaches 0.000." in lines[0]
    assert "closing 53% of the regression gap; the best pairwise one (layer 1) 0.300 (71%)." in lines[1]
    assert lines[2].endswith("(2 E[y^2]): the injected state carries the dummy's answer, not a query-free task.")
    lines = findings.regression_lines({"triplet": LEARNED, "pairwise": NOT_LEARNED}, ls, **kw)
    assert "(pairwise, not learned: the model is still on the plateau)" in lines[0]
    assert lines[1].endswith("the best pairwise one (layer 0) 0.700.") and lines[2].endswith("(2 E[y^2]).")
    lines = findings.regression_lines({"triplet": NOT_LEARNED, "pairwise": NOT_LEARNED}, ls, **kw)
    assert len(lines) == 2 and lines[1].startswith("- Without in-context learning in the triplet format")
    worse = sweep([0.9, 0.85], 0.8, 0.1)
    lines = findings.regression_lines({"triplet": NOT_LEARNED, "pairwise": worse}, ls, **kw)
    assert "against 0.800 zero-shot: injecting it is worse than no vector at all, as expected" in lines[2]
    lines = findings.regression_lines({"triplet": NOT_LEARNED, "pairwise": LEARNED}, ls, **kw)
    assert "has error 0.300 against 0.800 zero-shot, as expected" in lines[2]


def test_vote_text_every_branch():
    icl, vote = torch.tensor([0.5, 0.4, 0.3]), torch.tensor([0.5, 0.45, 0.45])
    text = findings.vote_text(icl, vote, LEARNED)
    assert "With 2 demonstrations the model's error is 0.300 against 0.450" in text
    assert "it is 0.100 below the vote. So the model uses more than label frequencies: the best task vector" in text
    assert text.endswith("(recovery 0.71).")
    text = findings.vote_text(vote, icl, NOT_LEARNED)
    assert "0.100 above the vote. So at this budget the model has learned the label frequencies" in text
    assert text.endswith("no recovery, since the model has not learned ICL (the book's rule, "
                         "ICL error <= 0.5 x zero-shot error).")


def test_tvp_offset_lines_every_branch():
    base = sweep([0.6, 0.7, 0.7, 0.7], 0.8, 0.1)
    at_star = {0: 0.5, 1: 0.58, 2: 0.7}
    ood = {"baseline": 0.84, tvp_name(0): 0.83, tvp_name(1): 0.85, tvp_name(2): 0.82}
    args = (base, at_star, {0: True, 1: False, 2: False}, {"x": 0.01, "y": 0.1}, {"x": True, "y": False},
            (0.3, 0.55), ood, 5 / 6)
    lines = findings.tvp_offset_lines(*args)
    assert "for l* in [0]; the TVP errors at l* = 0, 1, 2 are 0.500, 0.580, 0.700." in lines[1]
    assert lines[2].endswith("for 1 of 2 TVP models; it rises for y (+0.100).")
    assert "lambda = 0.3 at l* = 1 the TVP error at l* is 0.550, against 0.580" in lines[3]
    assert lines[4].endswith("baseline's error is 0.840 and the best TVP model's 0.820 (chance 0.833).")
    lines = findings.tvp_offset_lines(base, at_star, dict.fromkeys(at_star, False), {"x": 0.01}, {"x": True},
                                      *args[5:])
    assert "for no l*;" in lines[1] and lines[2].endswith("for 1 of 1 TVP models.")


def test_tvp_regression_lines_every_branch():
    names = ["baseline"] + [tvp_name(l, lam) for lam in (1.0, 0.3) for l in range(3)]
    err = {name: 1.0 for name in names}
    kw = dict(lambdas=(1.0, 0.3), steps=20, demos="2-5", shift_scale=2.0)
    plateau = dict.fromkeys(names, sweep([0.8, 0.81, 0.82, 0.83], 0.82, 0.9))
    lines = findings.tvp_regression_lines(plateau, err, {n: 4.2 for n in names}, **kw)
    assert "ICL error (2-5 demos) is 1.000 in distribution and 4.200 on shifted inputs (relative to E[y^2]: " \
           "1.000 and 1.050); it has not left the loss plateau." in lines[0]
    assert "lambda = 0.3, at l* = 0, 1, 2: learned ICL no, no, no; TVP error at l* 0.800, 0.810, 0.820" in lines[2]
    assert len(lines) == 4 and lines[3].startswith("- No regression model learned ICL")
    learned = plateau | {"baseline": LEARNED, tvp_name(1): LEARNED}
    lines = findings.tvp_regression_lines(learned, err, err, **kw)
    assert lines[0].endswith("it learns the task in context.") and len(lines) == 3
    assert "learned ICL no, yes, no" in lines[1] and "(baseline's best layer 0.300, zero-shot 0.800)" in lines[1]
