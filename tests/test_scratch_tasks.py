"""Task families and prompt layouts: labels, positions, seeding, errors."""

import math

import pytest
import torch

from tvlib.scratch import tasks


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_linear_labels():
    task = tasks.LinearRegression(n_dims=2)
    w = torch.tensor([[1.0, 2.0]])
    xs = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    torch.testing.assert_close(task.label(w, xs), torch.tensor([[3.0, 2.0]]) / math.sqrt(2))


def test_sinusoid_labels():
    task = tasks.Sinusoid()
    params = torch.tensor([[2.0, 1.0, 0.0]])
    xs = torch.tensor([[[math.pi / 2]]])
    torch.testing.assert_close(task.label(params, xs), torch.tensor([[2.0]]))


def test_offset_labels_and_offsets():
    task = tasks.TokenOffset(vocab=5, offsets=(3,))
    assert (task.sample_tasks(10, gen()) == 3).all()
    torch.testing.assert_close(task.label(torch.tensor([3]), torch.tensor([[0, 4]])), torch.tensor([[3, 2]]))
    with pytest.raises(ValueError, match=r"offsets \[7\]"):
        tasks.TokenOffset(vocab=5, offsets=(7,))


def test_triplet_layout_discrete():
    task = tasks.TokenOffset(vocab=8)
    p = tasks.build_prompts(task, "triplet", torch.tensor([[3, 2, 7]]), torch.tensor([[2, 1, 6]]))
    assert p.inputs["input_ids"].tolist() == [[3, 8, 2, 2, 8, 1, 7, 8]]
    assert p.answer_pos.tolist() == [1, 4, 7]


def test_pairwise_layout_continuous():
    task = tasks.LinearRegression(n_dims=2)
    xs = torch.arange(6.0).view(1, 3, 2)
    p = tasks.build_prompts(task, "pairwise", xs, torch.tensor([[10.0, 20.0, 30.0]]))
    assert p.answer_pos.tolist() == [0, 2, 4]
    assert p.inputs["values"][0, :, 0].tolist() == [0.0, 10.0, 2.0, 20.0, 4.0]
    assert not p.inputs["is_arrow"].any()


def test_zero_shot_prompt_ends_at_its_answer():
    p = tasks.sample_prompts(tasks.LinearRegression(), "triplet", 4, 1, gen())
    assert p.inputs["values"].shape == (4, 2, 4)
    assert p.inputs["is_arrow"][:, -1].all() and p.answer_pos.tolist() == [1]


def test_same_seed_same_prompts_and_shared_tasks():
    task = tasks.TokenOffset(vocab=10)
    a = tasks.sample_prompts(task, "triplet", 5, 3, gen(1))
    b = tasks.sample_prompts(task, "triplet", 5, 3, gen(1))
    assert torch.equal(a.inputs["input_ids"], b.inputs["input_ids"])
    params = torch.tensor([1, 2, 3, 4, 5])
    c = tasks.sample_prompts(task, "triplet", 5, 3, gen(2), tasks=params)
    ids = c.inputs["input_ids"]
    assert torch.equal((ids[:, 0] + params) % 10, ids[:, 2])


def test_loss_and_error():
    task = tasks.TokenOffset(vocab=3)
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    assert tasks.error(task, logits, torch.tensor([[0, 2]])).tolist() == [[0.0, 1.0]]
    reg = tasks.LinearRegression()
    assert tasks.loss(reg, torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.5)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="valid tasks: linear, sinusoid, offset"):
        tasks.make_task("parity")
    with pytest.raises(ValueError, match="valid layouts: pairwise, triplet"):
        tasks.sample_prompts(tasks.LinearRegression(), "single", 2, 2, gen())
    with pytest.raises(ValueError, match="k >= 1"):
        tasks.sample_prompts(tasks.LinearRegression(), "triplet", 2, 0, gen())


def simulate(table: list[list[int]], string: list[int]) -> bool:
    """Plain-Python reference: run the DFA (rows: next state per symbol, then accepting) from 0."""
    state = 0
    for symbol in string:
        state = table[state][symbol]
    return bool(table[state][-1])


def test_dfa_labels_match_a_plain_simulation():
    task = tasks.RegularLanguage(n_states=4, n_symbols=3, length=5)
    dfas, xs = task.sample_tasks(30, gen()), task.sample_x(30, 6, gen(1))
    labels = task.label(dfas, xs)
    assert set(labels.unique().tolist()) == {3, 4}  # reject, accept
    for dfa, strings, row in zip(dfas.tolist(), xs.tolist(), labels.tolist()):
        assert row == [3 + simulate(dfa, s) for s in strings]
    parity = torch.tensor([[[0, 1, 0], [1, 0, 1]]])  # accepts an odd number of 1s
    strings = torch.tensor([[[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 1], [1, 1, 1, 1]]])
    assert tasks.RegularLanguage(n_states=2).label(parity, strings).tolist() == [[2, 3, 3, 2]]


def test_dfa_acceptance_band_and_chance_prior():
    task = tasks.RegularLanguage(n_states=3, n_symbols=2, length=4)
    assert task.strings().tolist()[:3] == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]]
    dfas = task.sample_tasks(300, gen())
    lo, hi = tasks.ACCEPT_BAND
    for dfa in dfas.tolist():
        rate = sum(simulate(dfa, s) for s in task.strings().tolist()) / 16
        assert lo <= rate <= hi
    labels = task.label(dfas, task.sample_x(300, 10, gen(1)))
    assert abs((labels == 3).float().mean().item() - 0.5) < 0.05  # symmetric band: prior 1/2


def test_dfa_prompts_are_seeded():
    task = tasks.RegularLanguage()
    a, b, c = (tasks.sample_prompts(task, "triplet", 8, 4, gen(s)) for s in (1, 1, 2))
    assert torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs["input_ids"], c.inputs["input_ids"])


@pytest.mark.parametrize("layout, ids, answers", [
    ("triplet", [0, 1, 5, 3, 1, 1, 5, 4, 1, 0, 5], [2, 6, 10]),
    ("pairwise", [0, 1, 3, 1, 1, 4, 1, 0], [1, 4, 7]),
])
def test_multi_token_layout(layout, ids, answers):
    task = tasks.RegularLanguage(n_symbols=3, length=2)  # symbols 0-2, reject 3, accept 4, arrow 5
    xs = torch.tensor([[[0, 1], [1, 1], [1, 0]]])
    p = tasks.build_prompts(task, layout, xs, torch.tensor([[3, 4, 3]]))  # the last label is left out
    assert p.inputs["input_ids"].tolist() == [ids]
    assert p.answer_pos.tolist() == answers and answers[-1] == len(ids) - 1
    assert tasks.prompt_length(layout, 3, x_tokens=2) == len(ids)


@pytest.mark.parametrize("kw, match", [
    ({"n_states": 1}, "n_states must be >= 2, got 1"),
    ({"n_symbols": 1}, "n_symbols must be >= 2, got 1"),
    ({"length": 0}, "length must be >= 1, got 0"),
    ({"n_symbols": 3, "length": 8}, r"3\^8 strings must be <= 4096"),
])
def test_bad_dfa_sizes_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        tasks.make_task("dfa", **kw)


# ----------------------------------------------------------------------------- token maps

MAP = dict(vocab=8)  # X = 0..3, Y = 4..7, arrow 8


def map_prompts(kind: str, n: int, k: int, seed: int = 0, vocab: int = 8) -> tasks.Prompts:
    return tasks.sample_prompts(tasks.TokenMap(vocab=vocab, kind=kind), "triplet", n, k, gen(seed))


def demos_and_query(p: tasks.Prompts) -> tuple[torch.Tensor, torch.Tensor]:
    """The demonstrations' inputs ``[n, k-1]`` and the query ``[n]`` of triplet prompts."""
    xs = p.inputs["input_ids"][:, ::3]
    return xs[:, :-1], xs[:, -1]


@pytest.mark.parametrize("kind", tasks.MAP_KINDS)
def test_token_map_tables_are_involutions(kind):
    task = tasks.TokenMap(kind=kind, **MAP)
    partner = task.sample_tasks(200, gen())
    rows = torch.arange(200)[:, None]
    assert torch.equal(partner[rows, partner], torch.arange(8).expand(200, -1))  # partner of partner
    assert task.model_kwargs() == {"vocab_size": 9}


def test_bijection_labels_are_the_partner_in_both_directions():
    task = tasks.TokenMap(kind="bijection", **MAP)
    partner = task.sample_tasks(100, gen())
    assert (partner[:, :4] >= 4).all() and (partner[:, 4:] < 4).all()  # X -> Y and Y -> X
    xs = torch.arange(4).expand(100, -1)
    ys = task.label(partner, xs)
    assert torch.equal(task.label(partner, ys), xs)
    assert sorted(ys[0].tolist()) == [4, 5, 6, 7]  # a bijection X -> Y
    assert len({tuple(r) for r in ys.tolist()}) > 10  # each prompt its own map


def test_one_way_and_inverse_share_a_map_and_undo_each_other():
    one, inv = tasks.TokenMap(kind="one_way", **MAP), tasks.TokenMap(kind="inverse", **MAP)
    partner = one.sample_tasks(50, gen(3))
    assert torch.equal(partner, inv.sample_tasks(50, gen(3)))
    xs = one.sample_x(50, 6, gen(4))
    ys = one.label(partner, xs)
    assert (xs < 4).all() and (ys >= 4).all()
    assert torch.equal(inv.label(partner, ys), xs)
    assert (inv.sample_x(50, 6, gen(4)) >= 4).all()
    assert torch.equal(one.domain, torch.arange(4)) and torch.equal(inv.domain, torch.arange(4, 8))


def test_copy_and_involution_labels():
    p = map_prompts("copy", 50, 5)
    assert torch.equal(p.targets, p.inputs["input_ids"][:, ::3])
    task = tasks.TokenMap(kind="involution", **MAP)
    partner = task.sample_tasks(500, gen())
    assert (partner != torch.arange(8)).all()  # no fixed points
    within_x = (partner[:, :4] < 4).any(1)
    assert 0.2 < within_x.float().mean() < 1.0  # pairs are not forced across X and Y
    p = map_prompts("involution", 50, 5)
    xs = p.inputs["input_ids"][:, ::3]
    assert (p.targets != xs).all()


@pytest.mark.parametrize("kind", tasks.EXCLUDES_INVERSE_PAIR)
def test_the_querys_inverse_pair_is_never_a_demonstration(kind):
    n, k = 4000, 8
    task = tasks.TokenMap(kind=kind, **MAP)
    partner = task.sample_tasks(n, gen(1))
    p = tasks.sample_prompts(task, "triplet", n, k, gen(2), tasks=partner)
    demos, query = demos_and_query(p)
    answer = p.targets[:, -1]
    assert torch.equal(answer, partner.gather(1, query[:, None])[:, 0])
    ids = p.inputs["input_ids"]
    demo_pairs = torch.stack([ids[:, 0:-2:3], ids[:, 2::3]], dim=-1)  # (x_i, y_i) of the demonstrations
    inverse_pair = torch.stack([answer, query], dim=-1)[:, None]
    assert not (demo_pairs == inverse_pair).all(-1).any()  # never (partner(q) -> q) ...
    assert not (demos == answer[:, None]).any()  # ... nor any demonstration of input partner(q)
    own_pair = (demos == query[:, None]).any(1).float().mean()
    assert abs(own_pair - (1 - (6 / 7) ** (k - 1))) < 0.03  # demos uniform over the 7 other tokens
    counts = torch.bincount(demos.flatten(), minlength=8).float()
    assert counts.min() / counts.max() > 0.9 and torch.bincount(query, minlength=8).min() > 400


def test_without_exclusion_the_inverse_pair_would_occur():
    """The check above can fail: one-way-style sampling over X u Y does show inverse pairs."""
    task = tasks.TokenMap(kind="bijection", **MAP)
    partner = task.sample_tasks(1000, gen(1))
    xs = tasks.TokenMap(kind="copy", **MAP).sample_x(1000, 8, gen(2))  # uniform over X u Y
    answer = partner.gather(1, xs[:, -1:])
    assert (xs[:, :-1] == answer).any(1).float().mean() > 0.5


@pytest.mark.parametrize("kind", tasks.MAP_KINDS)
def test_token_map_prompts_are_seeded(kind):
    a, b, c = (map_prompts(kind, 16, 6, seed) for seed in (1, 1, 2))
    assert torch.equal(a.inputs["input_ids"], b.inputs["input_ids"]) and torch.equal(a.targets, b.targets)
    assert not torch.equal(a.inputs["input_ids"], c.inputs["input_ids"])
    zero = map_prompts(kind, 16, 1, 1)  # zero-shot: the query alone, no table needed
    assert zero.inputs["input_ids"].shape == (16, 2) and (zero.inputs["input_ids"][:, -1] == 8).all()


@pytest.mark.parametrize("kw, match", [
    ({"kind": "antonym"}, "unknown map kind 'antonym'; valid kinds: one_way, inverse, bijection, copy, involution"),
    ({"vocab": 7}, "vocab must be even and >= 4.*got 7"),
    ({"vocab": 2}, "vocab must be even and >= 4.*got 2"),
])
def test_bad_token_map_sizes_and_kinds_are_rejected(kw, match):
    with pytest.raises(ValueError, match=match):
        tasks.make_task("map", **kw)


def test_bijection_inputs_need_the_maps():
    with pytest.raises(ValueError, match="'bijection' keeps each query's inverse pair.*needs the 5 prompts'"):
        tasks.TokenMap(kind="bijection").sample_x(5, 3, gen())


def test_token_map_trains_and_evaluates_from_a_config(tmp_path):
    from conftest import TINY_RUN

    from tvlib.scratch import evaluate, train

    with pytest.raises(ValueError, match="valid kinds: one_way"):
        train.TrainConfig(task="map", map_kind="swap", **TINY_RUN)
    cfg = train.TrainConfig(task="map", map_kind="bijection", vocab=8, steps=3, **TINY_RUN)
    assert cfg.make_task() == tasks.TokenMap(vocab=8, kind="bijection")
    model, log = train.train(cfg, cache=tmp_path)
    assert len(log) == 3 and all(math.isfinite(r["icl"]) for r in log)
    result = evaluate.tv_errors(model, cfg.make_task(), cfg.layout, k=4, n=16, seed=0)
    assert result.curve.shape == (cfg.n_layer,) and 0 <= result.icl_mean <= 1
