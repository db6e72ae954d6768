"""Training: the TVP-loss, checkpoint/resume, the run cache; a DFA run trained and evaluated end to end."""

import pytest
import torch

from conftest import TINY_RUN as TINY

from tvlib.scratch import tasks
from tvlib.scratch.evaluate import icl_errors, tv_errors
from tvlib.scratch.train import TrainConfig, make_model, sample_batch, step_losses, train


def batch(cfg: TrainConfig, seed: int = 0):
    return sample_batch(cfg.make_task(), cfg, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("task", ["linear", "offset"])
def test_tvp_loss_is_zero_without_lambda_and_positive_with(task):
    cfg = TrainConfig(task=task, **TINY)
    model, (icl, zero) = make_model(cfg), batch(cfg)
    icl0, tvp0 = step_losses(model, cfg.make_task(), icl, zero, tvp_layer=1, tvp_lambda=0.0)
    icl1, tvp1 = step_losses(model, cfg.make_task(), icl, zero, tvp_layer=1, tvp_lambda=1.0)
    assert tvp0.item() == 0.0 and tvp1.item() > 0.0
    torch.testing.assert_close(icl0, icl1)


def manual_tvp_loss(model, task, icl, zero, layer):
    """The TVP-loss written out by hand: run the blocks, overwrite layer `layer` at the last position."""
    def hidden(inputs, replace=None):
        x = model.embed(**inputs)
        x = x + model.wpe(torch.arange(x.shape[1]))
        states = []
        for l, block in enumerate(model.blocks):
            x = block(x)
            if l == layer and replace is not None:
                x = torch.cat([x[:, :-1], replace[:, None]], dim=1)
            states.append(x)
        return states, model.head(model.ln_f(x))

    states, _ = hidden(icl.inputs)
    _, out = hidden(zero.inputs, replace=states[layer][:, -1])
    return tasks.loss(task, tasks.answers(task, out, zero.answer_pos[-1:]), zero.targets[:, -1:])


@pytest.mark.parametrize("task, layout", [("linear", "triplet"), ("offset", "triplet"), ("offset", "pairwise"),
                                       ("dfa", "triplet"), ("dfa", "pairwise")])
def test_tvp_loss_injects_at_the_intended_layer_and_position(task, layout):
    cfg = TrainConfig(task=task, layout=layout, **TINY)
    model, (icl, zero) = make_model(cfg), batch(cfg)
    for layer in range(cfg.n_layer):
        _, tvp = step_losses(model, cfg.make_task(), icl, zero, tvp_layer=layer, tvp_lambda=1.0)
        torch.testing.assert_close(tvp, manual_tvp_loss(model, cfg.make_task(), icl, zero, layer))


def test_tvp_loss_gradient_flows_through_the_task_vector():
    cfg = TrainConfig(task="offset", **TINY)
    model, (icl, zero) = make_model(cfg), batch(cfg)
    _, tvp = step_losses(model, cfg.make_task(), icl, zero, tvp_layer=1, tvp_lambda=1.0)
    tvp.backward()
    # Positions >= 2 exist only in the ICL prompt: their gradient can only come through v.
    assert model.wpe.weight.grad[2:icl.inputs["input_ids"].shape[1]].abs().sum() > 0
    # The block after l* runs only in the zero-shot pass on the injected vector.
    assert model.blocks[2].mlp[0].weight.grad.abs().sum() > 0


def test_killed_run_resumes_from_its_checkpoint(tmp_path):
    cfg = TrainConfig(task="linear", steps=12, tvp_lambda=0.5, tvp_layer=1, **TINY)
    full, full_log = train(cfg, cache=tmp_path / "a", ckpt_every=4)
    _, part_log = train(cfg, cache=tmp_path / "b", ckpt_every=4, stop_after=6)  # "killed" at step 6
    assert len(part_log) == 6 and list((tmp_path / "b").glob("*.ckpt"))
    resumed, log = train(cfg, cache=tmp_path / "b", ckpt_every=4)
    assert [r["step"] for r in log] == list(range(12))  # steps 0-3 from the checkpoint, 4-11 re-run
    assert log == full_log
    for a, b in zip(full.state_dict().values(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert not list((tmp_path / "b").glob("*.ckpt"))  # finished: the checkpoint is gone


def test_finished_run_is_loaded_from_the_cache(tmp_path):
    cfg = TrainConfig(task="offset", steps=3, **TINY)
    model, log = train(cfg, cache=tmp_path)
    (cached_file,) = tmp_path.glob("*.pt")
    again, log2 = train(cfg, cache=tmp_path)
    assert log2 == log and not again.training
    torch.testing.assert_close(model.head.weight, again.head.weight)
    assert train(TrainConfig(task="offset", steps=3, seed=1, **TINY), cache=tmp_path)[1] != log


@pytest.mark.parametrize("kw, match", [
    ({"layout": "single"}, "valid layouts"),
    ({"task": "gsm8k"}, "valid tasks"),
    ({"tvp_lambda": 1.0, "tvp_layer": 3}, "tvp_layer 3"),
    ({"tvp_lambda": -1.0}, "tvp_lambda"),
    ({"n_examples": 20}, "block_size"),
    ({"task": "dfa", "n_examples": 6}, "6 triplet examples of 4-token inputs need 35 positions"),
    ({"task": "dfa", "n_states": 1}, "n_states must be >= 2, got 1"),
    ({"task": "dfa", "n_symbols": 2, "length": 13}, r"2\^13 strings must be <= 4096"),
])
def test_bad_run_config_is_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**TINY | kw)


@pytest.mark.parametrize("layout", ["triplet", "pairwise"])
def test_dfa_trains_with_the_tvp_loss_and_evaluates(tmp_path, layout):
    cfg = TrainConfig(task="dfa", layout=layout, steps=3, tvp_lambda=0.5, tvp_layer=1, **TINY)
    model, log = train(cfg, cache=tmp_path)
    assert len(log) == 3 and all(r["icl"] > 0 and r["tvp"] > 0 for r in log)
    task = cfg.make_task()
    assert icl_errors(model, task, layout, k=4, n=16, seed=0).shape == (4,)
    res = tv_errors(model, task, layout, k=4, n=16, seed=0)
    assert res.curve.shape == (cfg.n_layer,) and 0 <= res.zero_shot_mean <= 1


def test_training_runs_on_one_thread_and_restores_the_callers_count(tmp_path, monkeypatch):
    seen = []
    real = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda *a, **k: (seen.append(torch.get_num_threads()), real(*a, **k))[1])
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(TrainConfig(task="offset", steps=2, **TINY), cache=tmp_path)
        assert seen == [1, 1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
