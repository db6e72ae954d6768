"""Task families and prompt layouts: labels, positions, seeding, errors."""

import math

import pytest
import torch

from tvlib import tasks as T


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_linear_labels():
    task = T.LinearRegression(n_dims=2)
    w = torch.tensor([[1.0, 2.0]])
    xs = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]])
    torch.testing.assert_close(task.label(w, xs), torch.tensor([[3.0, 2.0]]) / math.sqrt(2))


def test_sinusoid_labels():
    task = T.Sinusoid()
    params = torch.tensor([[2.0, 1.0, 0.0]])
    xs = torch.tensor([[[math.pi / 2]]])
    torch.testing.assert_close(task.label(params, xs), torch.tensor([[2.0]]))


def test_offset_labels_and_offsets():
    task = T.TokenOffset(vocab=5, offsets=(3,))
    assert (task.sample_tasks(10, gen()) == 3).all()
    torch.testing.assert_close(task.label(torch.tensor([3]), torch.tensor([[0, 4]])), torch.tensor([[3, 2]]))
    with pytest.raises(ValueError, match=r"offsets \[7\]"):
        T.TokenOffset(vocab=5, offsets=(7,))


def test_triplet_layout_discrete():
    task = T.TokenOffset(vocab=8)
    p = T.layout(task, "triplet", torch.tensor([[3, 2, 7]]), torch.tensor([[2, 1, 6]]))
    assert p.inputs["input_ids"].tolist() == [[3, 8, 2, 2, 8, 1, 7, 8]]
    assert p.answer_pos.tolist() == [1, 4, 7]


def test_pairwise_layout_continuous():
    task = T.LinearRegression(n_dims=2)
    xs = torch.arange(6.0).view(1, 3, 2)
    p = T.layout(task, "pairwise", xs, torch.tensor([[10.0, 20.0, 30.0]]))
    assert p.answer_pos.tolist() == [0, 2, 4]
    assert p.inputs["values"][0, :, 0].tolist() == [0.0, 10.0, 2.0, 20.0, 4.0]
    assert not p.inputs["is_arrow"].any()


def test_zero_shot_prompt_ends_at_its_answer():
    p = T.sample_prompts(T.LinearRegression(), "triplet", 4, 1, gen())
    assert p.inputs["values"].shape == (4, 2, 4)
    assert p.inputs["is_arrow"][:, -1].all() and p.answer_pos.tolist() == [1]


def test_same_seed_same_prompts_and_shared_tasks():
    task = T.TokenOffset(vocab=10)
    a = T.sample_prompts(task, "triplet", 5, 3, gen(1))
    b = T.sample_prompts(task, "triplet", 5, 3, gen(1))
    assert torch.equal(a.inputs["input_ids"], b.inputs["input_ids"])
    params = torch.tensor([1, 2, 3, 4, 5])
    c = T.sample_prompts(task, "triplet", 5, 3, gen(2), tasks=params)
    ids = c.inputs["input_ids"]
    assert torch.equal((ids[:, 0] + params) % 10, ids[:, 2])


def test_loss_and_error():
    task = T.TokenOffset(vocab=3)
    logits = torch.tensor([[[5.0, 0.0, 0.0], [0.0, 5.0, 0.0]]])
    assert T.error(task, logits, torch.tensor([[0, 2]])).tolist() == [[0.0, 1.0]]
    reg = T.LinearRegression()
    assert T.loss(reg, torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 1.0]])).item() == pytest.approx(2.5)


def test_bad_names_are_rejected():
    with pytest.raises(ValueError, match="valid tasks: linear, sinusoid, offset"):
        T.make_task("parity")
    with pytest.raises(ValueError, match="valid formats: pairwise, triplet"):
        T.sample_prompts(T.LinearRegression(), "single", 2, 2, gen())
    with pytest.raises(ValueError, match="k >= 1"):
        T.sample_prompts(T.LinearRegression(), "triplet", 2, 0, gen())
