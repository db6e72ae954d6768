"""Evaluation of from-scratch models: one ICL loop for GPTs and baselines, injection, task-vector prompting."""

import numpy as np
import pytest
import torch

from conftest import TINY_RUN as TINY

from tvlib import engine
from tvlib.analysis import LayerSweep
from tvlib.scratch import tasks
from tvlib.scratch.baselines import LeastSquares, MajorityVote
from tvlib.scratch.evaluate import (error, icl_errors, inject_each_layer, sample_examples, tv_errors,
                                   tv_errors_dev_test)
from tvlib.scratch.gpt import model_inputs, query_positions
from tvlib.scratch.train import TrainConfig, make_model, sample_batch


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny(task: str, **kw):
    cfg = TrainConfig(task=task, **TINY | kw)
    return cfg, make_model(cfg).eval(), cfg.make_task()


@pytest.mark.parametrize("task_name", ["offset", "linear", "dfa"])
def test_sample_examples_draws_what_sample_prompts_draws(task_name):
    _, _, task = tiny(task_name)
    prompts = tasks.sample_prompts(task, "triplet", 8, 4, gen(3))
    again = tasks.build_prompts(task, "triplet", *sample_examples(task, 8, 4, gen(3)))
    torch.testing.assert_close(again.targets, prompts.targets)
    for key, value in prompts.inputs.items():
        torch.testing.assert_close(again.inputs[key], value)


@pytest.mark.parametrize("task_name, layout", [("offset", "triplet"), ("linear", "pairwise"), ("dfa", "triplet")])
def test_icl_errors_of_a_gpt_are_its_errors_on_sample_prompts(task_name, layout):
    _, model, task = tiny(task_name, layout=layout)
    prompts = tasks.sample_prompts(task, layout, 32, 4, gen(5))
    out = model(**model_inputs(model, prompts.inputs))
    want = tasks.error(task, tasks.answers(task, out, prompts.answer_pos), prompts.targets).mean(0)
    torch.testing.assert_close(icl_errors(model, task, layout, k=4, n=32, seed=5), want, rtol=0, atol=0)


def test_a_baseline_sees_the_prompts_a_gpt_sees():
    seen = []

    def spy(xs, ys):
        seen.append((xs, ys))
        return torch.zeros_like(ys)

    _, _, task = tiny("linear")
    icl_errors(spy, task, "triplet", k=4, n=8, seed=7)
    prompts = tasks.sample_prompts(task, "triplet", 8, 4, gen(7))
    xs, ys = seen[0]
    torch.testing.assert_close(ys, prompts.targets)
    torch.testing.assert_close(xs, prompts.inputs["values"][:, ::3])  # a triplet example is x, ->, y


def test_discrete_error_on_logits_is_the_argmax_error():
    logits = torch.randn(64, 5, 7, generator=gen(0))
    targets = torch.randint(7, (64, 5), generator=gen(1))
    task = tasks.TokenOffset(vocab=6)
    torch.testing.assert_close(error(task, logits, targets), tasks.error(task, logits, targets))
    # targets [B, 1] broadcast over the middle axis, as tasks.error does (the layers of inject_each_layer)
    torch.testing.assert_close(error(task, logits, targets[:, :1]), tasks.error(task, logits, targets[:, :1]))


def test_discrete_error_breaks_ties_uniformly():
    task = tasks.TokenOffset(vocab=3)
    scores = torch.tensor([[[1.0, 1.0, 0.0], [2.0, 2.0, 2.0], [0.0, 1.0, 0.0]]])
    targets = torch.tensor([[0, 2, 0]])
    torch.testing.assert_close(error(task, scores, targets), torch.tensor([[0.5, 2 / 3, 1.0]]))


def test_majority_vote_by_hand():
    labels = (5, 6)
    ys = torch.tensor([[5, 5, 6, 5], [6, 5, 5, 5]])
    # row 0: tie -> 0.5; 5 seen -> right; 5,5 -> predicts 5, wrong; 5,5,6 -> right
    # row 1: tie -> 0.5; 6 seen -> wrong; tie 1:1 -> 0.5; 5,5 vs 6 -> right
    scores = MajorityVote(labels)(torch.zeros(2, 4), ys)
    assert scores.shape == (2, 4, 7) and torch.isinf(scores[..., :5]).all()
    err = error(tasks.RegularLanguage(), scores, ys).mean(0)
    torch.testing.assert_close(err, torch.tensor([0.5, 0.5, 0.75, 0.0]))


def test_majority_vote_rejects_bad_labels():
    with pytest.raises(ValueError, match="non-empty list of token ids"):
        MajorityVote(())
    with pytest.raises(ValueError, match=r"ids \[4\] that are not labels \[2, 3\]"):
        MajorityVote((2, 3))(torch.zeros(1, 2), torch.tensor([[2, 4]]))


def test_least_squares_is_exact_from_d_examples_on():
    task = tasks.LinearRegression(n_dims=3)
    errs = icl_errors(LeastSquares(), task, "triplet", k=6, n=500, seed=0)
    assert abs(errs[0].item() - 1.0) < 0.15  # predicting 0: E[y^2] = 1
    assert errs[1].item() > 0.3 and errs[2].item() > 0.1  # underdetermined fits miss
    assert errs[3:].max().item() < 1e-8  # d = 3 examples determine w


def test_least_squares_predicts_from_earlier_examples_only():
    xs = torch.randn(4, 5, 2, generator=gen(0))
    ys = torch.randn(4, 5, generator=gen(1))
    changed = ys.clone()
    changed[:, 3:] += 10.0  # later labels must not move the predictions of examples 0..3
    torch.testing.assert_close(LeastSquares()(xs, changed)[:, :4], LeastSquares()(xs, ys)[:, :4])


def test_injecting_a_prompts_own_states_changes_nothing():
    cfg, model, task = tiny("offset")
    _, zero = sample_batch(task, cfg, gen(0))
    own = engine.extract(model, model_inputs(model, zero.inputs), query_positions(cfg.batch_size))
    errors = inject_each_layer(model, task, zero, own)
    plain = tasks.error(task, tasks.answers(task, model(**zero.inputs), zero.answer_pos), zero.targets)
    torch.testing.assert_close(errors, plain[:, 0].expand(cfg.n_layer, -1))


def test_tv_errors_is_a_layer_sweep_with_both_vectors_on_the_same_prompts():
    cfg, model, task = tiny("linear")
    last = tv_errors(model, task, "triplet", k=4, n=16, seed=0)
    averaged = tv_errors(model, task, "triplet", k=4, n=16, seed=0, average_positions=True)
    assert isinstance(last, LayerSweep) and last.n_seeds == 1 and last.n_layers == cfg.n_layer
    assert last.zero_shot_mean > 0 and last.icl_mean > 0 and 0 <= last.best_layer < cfg.n_layer
    assert averaged.zero_shot_mean == last.zero_shot_mean and averaged.icl_mean == last.icl_mean
    assert not np.array_equal(averaged.curve, last.curve)
    # the ICL reference is the (k-1)-shot entry of the same prompts' ICL curve
    g = gen(0)
    icl = tasks.sample_prompts(task, "triplet", 16, 4, g, tasks=task.sample_tasks(16, g))
    with torch.no_grad():
        out = model(**model_inputs(model, icl.inputs))
    want = tasks.error(task, tasks.answers(task, out, icl.answer_pos[-1:]), icl.targets[:, -1:]).mean()
    assert last.icl_mean == pytest.approx(float(want))


def test_tv_errors_dev_test_chooses_the_layer_on_dev_and_reports_test():
    cfg, model, task = tiny("map", vocab=8, map_kind="bijection")
    both = tv_errors_dev_test(model, task, "triplet", k=4, n=16, seed=3)
    dev, test = (tv_errors(model, task, "triplet", k=4, n=16, seed=s) for s in (3, 4))
    assert np.array_equal(both.by_layer, test.by_layer) and np.array_equal(both.dev_by_layer, dev.by_layer)
    assert both.icl_mean == test.icl_mean and both.zero_shot_mean == test.zero_shot_mean
    assert both.best_layer == int(dev.curve.argmin()) and both.best == test.curve[both.best_layer]


def test_map_table_puts_kinds_in_table1_rows_as_accuracies():
    from tvlib.scratch.evaluate import map_table

    sweeps = {"one_way": LayerSweep([0.5, 0.2], zero_shot=0.75, icl=0.1),
              "bijection": LayerSweep([0.9, 0.8], zero_shot=0.75, icl=0.6)}
    table = map_table(sweeps)
    assert table[["map", "direction"]].values.tolist() == [["token map", "X->Y"], ["token map", "X<->Y"]]
    assert table["ICL"].tolist() == pytest.approx([0.9, 0.4]) and table["TaskV"].tolist() == pytest.approx([0.8, 0.2])
    assert table["TaskV/ICL"].tolist() == pytest.approx([0.8 / 0.9, 0.5]) and table["layer"].tolist() == [1, 1]
    assert table["learned ICL"].tolist() == [True, False]  # 0.6 > 0.5 x 0.75
    with pytest.raises(ValueError, match=r"kinds \['swap'\] are not token-map kinds"):
        map_table({"swap": sweeps["one_way"]})
