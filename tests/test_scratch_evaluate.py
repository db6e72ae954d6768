"""Evaluation of from-scratch models: injection through the engine, task-vector prompting."""

import torch

from conftest import TINY_RUN as TINY

from tvlib import engine
from tvlib.scratch import tasks
from tvlib.scratch.evaluate import inject_each_layer, tv_errors
from tvlib.scratch.gpt import model_inputs, query_positions
from tvlib.scratch.train import TrainConfig, make_model, sample_batch


def test_injecting_a_prompts_own_states_changes_nothing():
    cfg = TrainConfig(task="offset", **TINY)
    model, task = make_model(cfg).eval(), cfg.make_task()
    _, zero = sample_batch(task, cfg, torch.Generator().manual_seed(0))
    own = engine.extract(model, model_inputs(model, zero.inputs), query_positions(cfg.batch_size))
    errors = inject_each_layer(model, task, zero, own)
    plain = tasks.error(task, tasks.answers(task, model(**zero.inputs), zero.answer_pos), zero.targets)
    torch.testing.assert_close(errors, plain[:, 0].expand(cfg.n_layer, -1))


def test_tv_errors_shapes_and_baselines():
    cfg = TrainConfig(task="linear", **TINY)
    res = tv_errors(make_model(cfg).eval(), cfg.make_task(), "triplet", k=4, n=16, seed=0)
    assert res.layers.shape == res.layers_avg.shape == (cfg.n_layer,)
    assert res.zero_shot > 0 and res.icl > 0 and 0 <= res.best_layer < cfg.n_layer
