"""Evaluation on a tiny random Llama: injections that must change nothing, decoding, positions."""

import numpy as np
import pytest
import torch

from tvlib import engine
from tvlib.llm import evaluate, wordtasks

ARROW = 200


class CharTokenizer:
    """One token per ASCII character, '->' is token 200; pads with 0."""

    pad_token_id = 0
    eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        ids, i = [], 0
        while i < len(text):
            two = text.startswith("->", i)
            ids.append(ARROW if two else ord(text[i]))
            i += 2 if two else 1
        return {"input_ids": ids}

    def decode(self, ids: list[int]) -> str:
        return "".join("->" if i == ARROW else chr(i) for i in ids)


@pytest.fixture(scope="module")
def tiny():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=256, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval(), CharTokenizer()


TEXTS = ["example:a->", "example:bc->", "example:d->"]


def test_replacing_a_state_with_itself_changes_nothing(tiny):
    model, tok = tiny
    pos = torch.full((3, 1), -1)
    own = evaluate.states(model, tok, TEXTS, pos, rows_per_pass=2)  # [L, N, 1, D]
    pred = evaluate.predict(model, tok, TEXTS, rows_per_pass=2)
    layers = list(range(engine.num_layers(model)))
    acc = evaluate.injection_sweep(model, tok, TEXTS, pos, own, pred, layers, rows_per_pass=5, width=2)
    assert acc.tolist() == [1.0] * 4
    zero_add = evaluate.injection_sweep(model, tok, TEXTS, pos, torch.zeros_like(own), pred, [0, 3], mode="add")
    assert zero_add.tolist() == [1.0, 1.0]


def test_replacing_with_another_prompts_state_at_the_last_layer_copies_its_prediction(tiny):
    model, tok = tiny
    pos = torch.full((3, 1), -1)
    own = evaluate.states(model, tok, TEXTS, pos, rows_per_pass=8)
    pred = evaluate.predict(model, tok, TEXTS, rows_per_pass=8)
    swapped = own[:, [1, 2, 0]]
    acc = evaluate.injection_sweep(model, tok, TEXTS, pos, swapped, pred[[1, 2, 0]], [3])
    assert acc.tolist() == [1.0]


@pytest.mark.parametrize("mode", ["replace", "add"])
def test_per_layer_sweep_equals_a_plain_loop_over_layers(tiny, mode):
    model, tok = tiny
    pos = torch.full((3, 1), -1)
    own = evaluate.states(model, tok, TEXTS, pos, rows_per_pass=8)  # [L, N, 1, D]
    vectors = own[:, [1, 2, 0]] + torch.randn(own.shape, generator=torch.Generator().manual_seed(1))
    inputs = engine.encode(tok, TEXTS, model)
    with torch.no_grad():
        loop = []  # the plain reference: one forward per layer, the layer-l vector injected at layer l
        for layer in range(engine.num_layers(model)):
            with engine.inject(model, layer, pos, vectors[layer], mode):
                loop.append(engine.last_logits(model, inputs).argmax(-1))
    loop = torch.stack(loop)  # [L, N] predictions
    layers = list(range(engine.num_layers(model)))
    answers = loop[2]
    got = evaluate.injection_sweep(model, tok, TEXTS, pos, vectors, answers, layers, mode=mode, rows_per_pass=2)
    assert got.tolist() == (loop == answers).float().mean(1).tolist()
    for layer in layers:  # each layer's predictions, prompt by prompt
        acc = evaluate.injection_sweep(model, tok, TEXTS, pos, vectors, loop[layer], [layer], mode=mode)
        assert acc.tolist() == [1.0]


def test_decode_of_the_last_layer_is_the_models_prediction(tiny):
    model, tok = tiny
    last = evaluate.states(model, tok, TEXTS, torch.full((3, 1), -1), rows_per_pass=8)[-1, :, 0]
    top = evaluate.decode(model, last, k=1)[:, 0]
    assert torch.equal(top, evaluate.predict(model, tok, TEXTS, rows_per_pass=8))


def test_query_line_positions_are_prefix_then_arrow():
    assert evaluate.query_line_positions(CharTokenizer(), wordtasks.Template(), "ab") == [-11, -10, -9, -8, -7, -6, -5, -4, -1]


def test_bad_sweep_arguments_are_clear_errors(tiny):
    model, tok = tiny
    vec = torch.zeros(4, 3, 1, 32)
    pos, ans = torch.full((3, 1), -1), torch.zeros(3, dtype=torch.long)
    with pytest.raises(ValueError, match="width must be >= 1, got 0"):
        evaluate.injection_sweep(model, tok, TEXTS, pos, vec, ans, [0], width=0)
    with pytest.raises(ValueError, match=r"start layers \[4\] must lie in 0..3"):
        evaluate.injection_sweep(model, tok, TEXTS, pos, vec, ans, [4])


def test_evaluate_task_end_to_end_is_deterministic(tiny):
    model, tok = tiny
    task = wordtasks.load_task("lower_upper")
    cfg = evaluate.EvalConfig(n_shots=2, n_dev=3, n_test=3, n_dummies=2)
    run = evaluate.evaluate_task(model, tok, task, cfg, seed=0, extra_layers=[0, 2])
    again = evaluate.evaluate_task(model, tok, task, cfg, seed=0, extra_layers=[0, 2])
    assert run.tv_dev.shape == run.tv_test.shape == (4,) and run.add_test.shape == (2,)
    assert 0 <= run.best_layer < 4 and run.mean_tv.shape == (4, 32)
    assert np.array_equal(run.tv_test, again.tv_test) and run.icl == again.icl
    frac = evaluate.output_space_fraction(tok, cfg.template, task, torch.tensor([[ord("A"), ord("a")]]))
    assert frac.tolist() == [0.5]


def test_echoes_are_predictions_of_the_query_itself(tiny):
    from dataclasses import replace

    model, tok = tiny
    cfg = evaluate.EvalConfig(n_shots=2, n_dev=3, n_test=4, n_dummies=2)
    copy = evaluate.evaluate_task(model, tok, wordtasks.load_task("copy"), cfg, seed=0, extra_layers=[])
    assert not copy.tv_echo.any() and copy.icl_echo == 0  # answer = query: an echo is never an error
    upper = evaluate.evaluate_task(model, tok, wordtasks.load_task("lower_upper"), cfg, seed=0, extra_layers=[])
    assert upper.tv_echo.shape == (4,) and np.all(upper.tv_echo + upper.tv_test <= 1)  # answer != query
    run = replace(upper, tv_dev=np.array([1.0, 0, 0, 0]), tv_test=np.array([0.25, 1, 1, 1]),
                  tv_echo=np.array([0.5, 0, 0, 0]))
    assert run.best_layer == 0 and run.echo_share == pytest.approx(0.5 / 0.75)
    assert np.isnan(replace(run, tv_test=np.ones(4)).echo_share)


def test_final_norm_is_found_or_named(tiny):
    model, _ = tiny
    assert evaluate.final_norm(model) is model.model.norm
    with pytest.raises(ValueError, match="looked for norm, ln_f"):
        evaluate.final_norm(torch.nn.Linear(2, 2))


def test_task_sweep_holds_errors_and_the_layer_is_chosen_on_dev_prompts():
    def run(dev, test, baseline, icl):
        zeros = np.zeros(1, np.float32)
        return evaluate.TaskRun("t", baseline, icl, np.array(dev, np.float32), np.array(test, np.float32), [0],
                                zeros, zeros, zeros, torch.zeros(3, 2), np.zeros(3), 0.0)

    one = run([0.25, 1.0, 1.0], [1.0, 0.5, 0.75], baseline=0.25, icl=1.0)
    assert one.best_layer == 1 and one.tv == 0.5  # chosen on dev (the first of a tie), reported on test
    sweep = evaluate.task_sweep([one, run([1.0, 0.0, 0.0], [0.5, 0.5, 0.5], baseline=0.75, icl=0.5)])
    assert sweep.by_layer.tolist() == [[0.0, 0.5, 0.25], [0.5, 0.5, 0.5]]  # errors: 1 - accuracy
    assert sweep.zero_shot.tolist() == [0.75, 0.25] and sweep.icl.tolist() == [0.0, 0.5]
    assert sweep.dev_by_layer.tolist() == [[0.75, 0.0, 0.0], [0.0, 1.0, 1.0]]
    assert sweep.learned_icl  # mean ICL error 0.25 is half the mean zero-shot error 0.5


def test_directions_table_has_table1_rows_and_the_guard(tiny):
    model, tok = tiny
    cfg = evaluate.EvalConfig(n_shots=2, n_dev=3, n_test=4, n_dummies=2)
    table = evaluate.directions_table(model, tok, ["lower_upper", "copy"], cfg, seeds=[0, 1])
    assert list(zip(table["map"], table["direction"], table["task"])) == [
        ("lower_upper", "X->Y", "lower_upper"), ("lower_upper", "Y->X", "upper_lower"),
        ("lower_upper", "X<->Y", "bij_lower_upper"), ("copy", "X<->Y", "copy")]
    assert table["pairs"].tolist() == [26, 26, 52, 52]
    runs = [evaluate.evaluate_task(model, tok, wordtasks.load_task("upper_lower"), cfg, seed=s, extra_layers=[])
            for s in (0, 1)]
    row = table.iloc[1]
    assert row["ICL"] == pytest.approx(np.mean([r.icl for r in runs]))
    assert row["TaskV std"] == pytest.approx(np.std([r.tv for r in runs]))
    assert row["layers"] == f"{runs[0].best_layer}/{runs[1].best_layer}"
    assert row["learned ICL"] == evaluate.task_sweep(runs).learned_icl
    assert table.loc[3, "echo"] in (0.0,) or np.isnan(table.loc[3, "echo"])  # copy never echoes in error
