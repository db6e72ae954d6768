"""tvlib.analysis: the one learned-ICL rule, recovery, seed averaging and the dev-layer choice."""

import math

import numpy as np
import pandas as pd
import pytest

from tvlib.analysis import ICL_GUARD, ICL_RULE, LayerSweep, learned_icl, mean_std, recovery


def test_learned_icl_is_at_most_half_the_zero_shot_error():
    assert ICL_GUARD == 0.5 and "ICL error <= 0.5 x zero-shot error" in ICL_RULE
    assert learned_icl(0.8, 0.4) and learned_icl(0.8, 0.1)
    assert not learned_icl(0.8, 0.41)
    assert not learned_icl(0.797, 0.602)  # an absolute gain of 0.195 is not enough
    assert learned_icl(1.0, 0.025) and not learned_icl(1.0, 0.9)  # squared errors alike
    assert isinstance(learned_icl(0.8, 0.4), bool)


def test_recovery():
    assert recovery(0.8, 0.2, 0.5) == pytest.approx(0.5)
    assert recovery(0.8, 0.2, 0.2) == pytest.approx(1.0)
    assert recovery(0.8, 0.2, 0.9) == pytest.approx(-1 / 6)  # worse than no vector
    assert math.isnan(recovery(0.5, 0.5, 0.3))  # no gap, nothing to recover


def test_mean_std():
    assert mean_std([0.5]) == "0.50"
    assert mean_std([0.2, 0.4], digits=1) == "0.3 ± 0.1"
    with pytest.raises(ValueError, match="at least one value"):
        mean_std([])


def test_a_single_run_is_one_seed():
    sweep = LayerSweep([0.7, 0.3, 0.5], zero_shot=0.8, icl=0.2)
    assert sweep.by_layer.shape == (1, 3) and sweep.zero_shot.shape == sweep.icl.shape == (1,)
    assert (sweep.n_seeds, sweep.n_layers, sweep.best_layer, sweep.best) == (1, 3, 1, 0.3)
    assert sweep.learned_icl and sweep.recovery() == pytest.approx(5 / 6)
    assert sweep.recovery(0.5) == pytest.approx(0.5)
    assert sweep.describe() == "zero-shot 0.800  ICL 0.200  TaskV by layer 0.700 0.300 0.500  best layer 1"


def test_summaries_are_taken_on_the_seed_means():
    # seed 0 learned ICL and seed 1 did not; the mean (0.8 -> 0.4) decides
    sweep = LayerSweep([[0.9, 0.2], [0.1, 0.6]], zero_shot=[0.8, 0.8], icl=[0.1, 0.7])
    np.testing.assert_allclose(sweep.curve, [0.5, 0.4])
    assert sweep.best_layer == 1 and sweep.best == pytest.approx(0.4)  # not layer 0, best of seed 1 alone
    assert sweep.zero_shot_mean == pytest.approx(0.8) and sweep.icl_mean == pytest.approx(0.4)
    assert sweep.learned_icl and sweep.recovery() == pytest.approx(1.0)
    assert not LayerSweep([[0.5, 0.4]] * 2, zero_shot=[0.8, 0.8], icl=[0.1, 0.8]).learned_icl


def test_recovery_if_learned_is_nan_without_icl():
    sweep = LayerSweep([0.7, 0.6], zero_shot=0.8, icl=0.6)
    assert not sweep.learned_icl and math.isnan(sweep.recovery_if_learned())
    assert sweep.recovery() == pytest.approx(1.0)  # the plain recovery is still defined
    assert LayerSweep([0.5], zero_shot=0.8, icl=0.2).recovery_if_learned() == pytest.approx(0.5)


def test_best_layer_is_chosen_on_dev_prompts():
    sweep = LayerSweep([0.5, 0.3, 0.4], zero_shot=0.8, icl=0.2, dev_by_layer=[0.6, 0.5, 0.1])
    assert sweep.best_layer == 2 and sweep.best == pytest.approx(0.4)  # the test error at the dev choice
    assert LayerSweep([0.5, 0.3, 0.4], zero_shot=0.8, icl=0.2).best_layer == 1


def test_over_seeds_stacks_runs():
    runs = [LayerSweep([0.5, 0.3], zero_shot=0.8, icl=0.2, dev_by_layer=[0.4, 0.2]),
            LayerSweep([0.1, 0.5], zero_shot=0.6, icl=0.4, dev_by_layer=[0.1, 0.5])]
    both = LayerSweep.over_seeds(runs)
    assert both.n_seeds == 2 and both.by_layer.tolist() == [[0.5, 0.3], [0.1, 0.5]]
    assert both.zero_shot.tolist() == [0.8, 0.6] and both.icl.tolist() == [0.2, 0.4]
    assert both.dev_by_layer.tolist() == [[0.4, 0.2], [0.1, 0.5]] and both.best_layer == 0


@pytest.mark.parametrize("runs, match", [
    ([], "at least one run"),
    ([LayerSweep([0.5, 0.3], 0.8, 0.2), LayerSweep([0.5, 0.3, 0.1], 0.8, 0.2)], r"one depth, got layer counts \[2, 3\]"),
    ([LayerSweep([0.5], 0.8, 0.2, dev_by_layer=[0.4]), LayerSweep([0.5], 0.8, 0.2)], "dev errors for every run or for none"),
])
def test_over_seeds_rejects_mixed_runs(runs, match):
    with pytest.raises(ValueError, match=match):
        LayerSweep.over_seeds(runs)


@pytest.mark.parametrize("kw, match", [
    (dict(by_layer=np.zeros((2, 3, 4)), zero_shot=[0.8, 0.8], icl=[0.2, 0.2]), r"by_layer must be \[S, L\].*\(2, 3, 4\)"),
    (dict(by_layer=np.zeros((2, 0)), zero_shot=[0.8, 0.8], icl=[0.2, 0.2]), r"non-empty; got shape \(2, 0\)"),
    (dict(by_layer=np.zeros((2, 3)), zero_shot=0.8, icl=[0.2, 0.2]), r"zero_shot must have one value per seed, shape \(2,\); got \(1,\)"),
    (dict(by_layer=np.zeros((2, 3)), zero_shot=[0.8, 0.8], icl=[0.2, 0.2, 0.2]), r"icl must have one value per seed.*\(3,\)"),
    (dict(by_layer=np.zeros((2, 3)), zero_shot=[0.8, 0.8], icl=[0.2, 0.2], dev_by_layer=np.zeros((2, 2))),
     r"dev_by_layer must have the shape of by_layer \(2, 3\), got \(2, 2\)"),
])
def test_bad_shapes_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        LayerSweep(**kw)


def test_rank_limit_needs_learned_icl_a_match_on_one_way_maps_and_a_drop_on_the_bijection():
    from tvlib.analysis import RANK_RULE, rank_limit

    assert rank_limit(0.95, 0.5, learned=True) == (True, True)
    assert rank_limit(0.95, 0.5, learned=False) == (False, False)  # the precondition
    assert rank_limit(0.95, 0.9, learned=True) == (False, True)  # a drop, but under 20 %
    assert rank_limit(0.6, 0.3, learned=True) == (False, True)  # no match on the one-way maps
    assert rank_limit(0.9, 0.95, learned=True) == (False, False)
    assert rank_limit(float("nan"), 0.5, learned=True) == (False, False)
    assert "0.8" in RANK_RULE and "precondition" in RANK_RULE


def test_rank_limit_summary_keeps_learned_one_way_rows_and_strong_bijections():
    from tvlib.analysis import rank_limit_summary

    table = pd.DataFrame([
        {"map": "a", "direction": "X->Y", "ICL": 0.9, "TaskV/ICL": 1.0, "learned ICL": True},
        {"map": "a", "direction": "Y->X", "ICL": 0.9, "TaskV/ICL": 0.8, "learned ICL": True},
        {"map": "a", "direction": "X<->Y", "ICL": 0.7, "TaskV/ICL": 0.4, "learned ICL": True},
        {"map": "b", "direction": "X->Y", "ICL": 0.1, "TaskV/ICL": 0.0, "learned ICL": False},
        {"map": "b", "direction": "X<->Y", "ICL": 0.5, "TaskV/ICL": 0.9, "learned ICL": True},
        {"map": "copy", "direction": "X<->Y", "ICL": 1.0, "TaskV/ICL": 1.0, "learned ICL": True}])
    got = rank_limit_summary(table)
    assert got["one-way"] == pytest.approx(0.9) and got["bijection"] == pytest.approx(0.4)
    assert (got["n one-way"], got["n bijection"], got["learned"]) == (2, 1, True)
    assert got["left out"] == {"b X->Y": "ICL not learned (ICL 0.10)", "b X<->Y": "ICL 0.50 < 0.6",
                               "copy X<->Y": "a predicted exception (x = +-y)"}
    none = rank_limit_summary(table[table["map"] != "a"])
    assert not none["learned"] and np.isnan(none["bijection"]) and np.isnan(none["one-way"])
