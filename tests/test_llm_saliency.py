"""Saliency by token role and demonstration weights (tvlib.llm.saliency), and their figures.

That the saliency itself is sum_h |A * dL/dA| and that A * dL/dA matches finite differences
(per head and entrywise) is tested with the hook site in test_engine_attention.py.
"""

from dataclasses import replace

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from tvlib import plotting
from tvlib.llm import load
from tvlib.llm import saliency as sal
from tvlib.llm import wordtasks as wt
from tvlib.scratch.train import OFFSET_RUN, make_model

TEMPLATE = wt.Template()


@pytest.fixture(scope="module")
def smollm2_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(load.cached_model_dir("smollm2-135m"))


def demos_and_query(n: int = 10, seed: int = 0):
    task = wt.load_task("next_letter")
    prompt = wt.sample_prompts(task, (task.pairs[0],), n, 2, np.random.default_rng(seed))[0]
    return task, prompt


def test_word_roles_point_at_their_text(smollm2_tokenizer):
    _, p = demos_and_query()
    text = TEMPLATE.prompt(p.demos, p.query[0])
    ids = smollm2_tokenizer(text)["input_ids"]
    roles = sal.word_roles(smollm2_tokenizer, TEMPLATE, p.demos, p.query[0])
    decode = lambda toks: smollm2_tokenizer.decode([ids[t] for t in toks])  # noqa: E731
    assert roles.n == len(p.demos) and roles.final == len(ids) - 1
    for (x, y), rx, ra, ry in zip(p.demos, roles.x, roles.arrow, roles.y):
        assert (decode(rx), decode(ra), decode(ry)) == (x, "->", y)
    assert decode(roles.query_x) == p.query[0]


@pytest.mark.parametrize("i", [0, 4, 9])
def test_corrupting_a_demonstration_changes_exactly_its_label_tokens(smollm2_tokenizer, i):
    task, p = demos_and_query()
    bad = sal.corrupt_demo(p.demos, i, task.pairs, np.random.default_rng(1))
    assert [d for j, d in enumerate(bad) if j != i] == [d for j, d in enumerate(p.demos) if j != i]
    assert bad[i][0] == p.demos[i][0] and bad[i][1] != p.demos[i][1]
    assert bad[i][1] in task.outputs  # the label of another input
    clean = smollm2_tokenizer(TEMPLATE.prompt(p.demos, p.query[0]))["input_ids"]
    dirty = smollm2_tokenizer(TEMPLATE.prompt(bad, p.query[0]))["input_ids"]
    assert len(clean) == len(dirty)
    changed = {t for t, (a, b) in enumerate(zip(clean, dirty)) if a != b}
    roles = sal.word_roles(smollm2_tokenizer, TEMPLATE, p.demos, p.query[0])
    assert changed == set(roles.y[i])


def test_corrupt_demo_rejects_bad_index():
    task, p = demos_and_query()
    with pytest.raises(ValueError, match="outside 0..9"):
        sal.corrupt_demo(p.demos, 10, task.pairs, np.random.default_rng(0))


def test_corrupt_labels_changes_only_column_i_and_every_row():
    task = OFFSET_RUN.make_task()
    gen = torch.Generator().manual_seed(0)
    params = task.sample_tasks(50, gen)
    xs = task.sample_x(50, 8, gen, params)
    ys = task.label(params, xs)
    bad = sal.corrupt_labels(task, params, xs, ys, 3, gen)
    keep = [j for j in range(8) if j != 3]
    assert torch.equal(bad[:, keep], ys[:, keep]) and (bad[:, 3] != ys[:, 3]).all()


def test_shares_on_hand_built_maps():
    roles = sal.triplet_roles(2)  # x a y x a y xq final: T = 8
    T = 8
    S = torch.zeros(2, T, T)
    S[0, 2, [0, 1]] = 1.0  # layer 0: y_1 reads its own x and arrow only
    S[0, 5, 0] = 1.0  # ... but y_2 reads demo 1's x
    S[1, 7, [2, 5]] = 1.0  # layer 1: the final arrow reads both labels ...
    S[1, 7, 6] = 2.0  # ... and the query's x twice as much
    S[1, [2, 5], 2] = 1.0
    torch.testing.assert_close(sal.concatenation_share(S, roles), torch.tensor([0.5, 0.0]))
    torch.testing.assert_close(sal.formation_share(S, roles), torch.tensor([0.0, 0.5]))
    shares = sal.role_shares(torch.stack([S, S], 1), [roles, roles])
    np.testing.assert_allclose(shares["concatenation"], [0.5, 0.0])
    assert sal.peak_layer(shares["formation"]) == 1


def test_uniform_shares_count_visible_keys():
    roles = sal.triplet_roles(1)  # x a y xq final: y sees 3 keys (2 its own), final sees 5 (1 label)
    chance = sal.uniform_shares(torch.zeros(3, 1, 5, 5), [roles])
    assert chance == pytest.approx({"concatenation": 2 / 3, "formation": 1 / 5})


def test_role_shares_needs_one_role_set_per_map():
    with pytest.raises(ValueError, match="3 saliency maps but 2"):
        sal.role_shares(torch.zeros(2, 3, 5, 5), [sal.triplet_roles(1)] * 2)


def test_scratch_demo_weights_shape_and_sensitivity():
    cfg = replace(OFFSET_RUN, n_layer=2)
    model, task = make_model(cfg).eval(), cfg.make_task()
    w = sal.scratch_demo_weights(model, task, "triplet", 5, 16, layer=1, seed=0)
    assert w.shape == (16, 4) and np.isfinite(w).all() and (w > 0).all()
    again = sal.scratch_demo_weights(model, task, "triplet", 5, 16, layer=1, seed=0)
    np.testing.assert_array_equal(w, again)


def test_spearman_of_monotone_profiles():
    assert sal.spearman(np.arange(5), np.arange(5) ** 2) == pytest.approx(1.0)
    assert sal.spearman(np.arange(5), -np.arange(5.0)) == pytest.approx(-1.0)


# ----------------------------------------------------------------------------- figures


def test_saliency_figures_draw_and_check_shapes():
    S = torch.rand(5, 5).tril().numpy()
    fig, axes = plt.subplots(1, 3)
    plotting.saliency_map(axes[0], S, list("abcde"), "m")
    assert axes[0].get_title() == "m"
    plotting.token_graph(axes[1], S, [0, 2, 4], ["a", "c", "e"], [(4, 2)], "g")
    assert any(line.get_color() == "tab:orange" for line in axes[1].lines)
    plotting.demo_weight_bars(axes[2], np.ones((3, 4)) * np.arange(1, 5), np.arange(1, 5) / 4)
    assert len(axes[2].patches) == 4
    with pytest.raises(ValueError, match="one label per token"):
        plotting.saliency_map(axes[0], S, list("abc"), "m")
    with pytest.raises(ValueError, match="theory profile"):
        plotting.demo_weight_bars(axes[2], np.ones(4), np.ones(3))
    plt.close(fig)


# ----------------------------------------------------------------------------- prompts, graphs, guards


def test_word_prompts_answers_are_the_first_tokens_of_the_labels(smollm2_tokenizer):
    task, prompts, texts, answers = sal.word_prompts("next_letter", smollm2_tokenizer, TEMPLATE, 10, 3,
                                                     np.random.default_rng(0))
    assert len(prompts) == len(texts) == len(answers) == 3
    for p, text, answer in zip(prompts, texts, answers):
        assert len(p.demos) == 10 and len(p.dummies) == 2 and text == TEMPLATE.prompt(p.demos, p.query[0])
        assert p.query[0] not in {x for x, _ in p.demos} | set(p.dummies)
        prompt_ids = smollm2_tokenizer(text)["input_ids"]
        full_ids = smollm2_tokenizer(text + p.query[1])["input_ids"]  # the answer continues the prompt
        assert full_ids[:len(prompt_ids)] == prompt_ids and full_ids[len(prompt_ids)] == int(answer)


def test_graph_tokens_and_stage_edges_on_triplet_roles():
    r = sal.triplet_roles(4)  # x 0 3 6 9, arrows 1 4 7 10, y 2 5 8 11, query 12, final 13
    assert sal.graph_tokens(r, last=2) == [6, 7, 8, 9, 10, 11, 12, 13]
    assert sal.stage_edges(r, "concatenation", last=2) == [(8, 6), (8, 7), (8, 8), (11, 9), (11, 10), (11, 11)]
    assert sal.stage_edges(r, "formation", last=2) == [(13, 8), (13, 11)]
    with pytest.raises(ValueError, match="stage='saliency' is not one of concatenation, formation"):
        sal.stage_edges(r, "saliency")
    with pytest.raises(ValueError, match=r"last=5 must lie in 1..4"):
        sal.graph_tokens(r, last=5)


def test_vector_works_needs_learned_icl_and_recovery():
    from tvlib.analysis import LayerSweep

    def sweep(tv_errors, zero_shot, icl):
        return LayerSweep(np.array([tv_errors]), [zero_shot], [icl])

    assert sal.vector_works(sweep([0.9, 0.3, 0.6], 0.9, 0.1))  # recovery 0.75
    assert not sal.vector_works(sweep([0.9, 0.6, 0.8], 0.9, 0.1))  # recovery 0.375
    assert not sal.vector_works(sweep([0.9, 0.5, 0.8], 0.9, 0.6))  # ICL not learned (0.6 > 0.45)
    assert sal.vector_works(sweep([0.9, 0.6, 0.8], 0.9, 0.1), min_recovery=0.3)


def test_mean_map_refuses_prompts_whose_roles_move():
    maps = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(sal.mean_map(maps, [sal.triplet_roles(2)] * 3), maps.mean(1))
    moved = sal.Roles(((0,),), ((1,),), ((2, 3),), (4,), 5)
    with pytest.raises(ValueError, match=r"prompts \[2\] place their roles"):
        sal.mean_map(maps[:, :3, :6, :6], [sal.triplet_roles(1)] * 2 + [moved])


@pytest.mark.parametrize("profile", ["quick", "cpu", "full"])
def test_chapter_reuses_the_emergence_chapters_models(profile):
    """The saliency chapter's linear and from-scratch models are the emergence chapters' (same
    configuration in every profile), so the run caches return them and nothing trains twice."""
    import yaml
    from pathlib import Path

    chapters = yaml.safe_load((Path(__file__).parents[1] / "params" / f"{profile}.yaml").read_text())["chapters"]
    mine, linear = chapters["saliency"], chapters["emergence_linear"]
    same = {"linear_n": "n_fig", "linear_steps": "steps", "linear_batch": "batch", "linear_seeds": "n_seeds",
            "linear_halve_every": "halve_every", "linear_l1_from": "l1_from", "linear_eval_every": "eval_every",
            "linear_eval_batch": "eval_batch", "linear_last_k": "last_k", "linear_dropout": "dropout_p"}
    assert {k: mine[k] for k in same} == {k: linear[v] for k, v in same.items()}
    assert mine["scratch_steps"] == chapters["emergence_scratch"]["steps"]


class _Chars:
    """One token per character (ids = code points), pads with 0: every letter is one token."""

    pad_token_id = eos_token_id = 0

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict:
        return {"input_ids": [ord(c) for c in text]}


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    return LlamaForCausalLM(config).eval()


def test_llm_demo_weights_cached_prefix_equals_whole_texts(tiny_llama, monkeypatch):
    task = wt.load_task("next_letter")
    prompts = wt.sample_prompts(task, task.pairs[:3], 10, 2, np.random.default_rng(0))
    rows = [(p.demos, p.dummies) for p in prompts]
    assert sal._shared_prefix_vectors(tiny_llama, _Chars(), TEMPLATE, rows, 2, 4) is not None  # the fast path runs
    fast = sal.llm_demo_weights(tiny_llama, _Chars(), task, prompts, 2, TEMPLATE, seed=0, rows_per_pass=4)
    monkeypatch.setattr(sal, "_shared_prefix_vectors", lambda *args: None)
    whole = sal.llm_demo_weights(tiny_llama, _Chars(), task, prompts, 2, TEMPLATE, seed=0, rows_per_pass=4)
    assert fast.shape == (3, 10) and (whole > 0).all()
    np.testing.assert_allclose(fast, whole, rtol=1e-4)


def test_shared_prefix_needs_equal_token_lengths(tiny_llama):
    rows = [((("a", "b"), ("c", "d")), ("e", "f")), ((("a", "b"), ("cc", "d")), ("e", "f"))]  # prefixes differ in length
    assert sal._shared_prefix_vectors(tiny_llama, _Chars(), TEMPLATE, rows, 1, 8) is None
    rows = [((("a", "b"),), ("e", "ff"))]  # the two query lines differ in length: fine, each is its own block
    assert sal._shared_prefix_vectors(tiny_llama, _Chars(), TEMPLATE, rows, 1, 8).shape == (1, 2, 32)
