"""Evaluation of from-scratch models: injection through the engine, task-vector prompting."""

import torch

from conftest import TINY_RUN as TINY

from tvlib import engine
from tvlib import tasks as T
from tvlib.scratch_eval import inject_each_layer, tv_errors
from tvlib.train import RunConfig, last, make_model, make_task, model_inputs, sample_batch


def test_injecting_a_prompts_own_states_changes_nothing():
    cfg = RunConfig(task="offset", **TINY)
    model, task = make_model(cfg).eval(), make_task(cfg)
    _, zero = sample_batch(task, cfg, torch.Generator().manual_seed(0))
    own = engine.extract(model, model_inputs(model, zero.inputs), last(cfg.batch_size))
    errors = inject_each_layer(model, task, zero, own)
    plain = T.error(task, T.answers(task, model(**zero.inputs), zero.answer_pos), zero.targets)
    torch.testing.assert_close(errors, plain[:, 0].expand(cfg.n_layer, -1))


def test_tv_errors_shapes_and_baselines():
    cfg = RunConfig(task="linear", **TINY)
    res = tv_errors(make_model(cfg).eval(), make_task(cfg), "triplet", k=4, n=16, seed=0)
    assert res.layers.shape == res.layers_avg.shape == (cfg.n_layer,)
    assert res.zero_shot > 0 and res.icl > 0 and 0 <= res.best_layer < cfg.n_layer
