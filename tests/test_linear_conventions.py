"""The linear-transformer protocol conventions that decide whether Dong et al.'s numbers reproduce.

Each test pins one convention of the authors' code (``LinearTransformer/icl_regression.py`` to
train, ``collect_result.py`` to evaluate), as read side by side in ``benchmarks/linear_parity.py``:
position signs in training only, their learning-rate schedule, the rank-one test family, the
normalised risk, task-vector extraction and injection, and averaging over the last checkpoints.
"""

import numpy as np
import pytest
import torch

from tvlib.linear import analysis as la
from tvlib.linear.data import build_prompts, position_signs, sample_prompts, sample_tasks
from tvlib.linear.model import LinearTransformer, ModelConfig
from tvlib.linear.train import TrainConfig, fit


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_training_signs_as_the_authors_draw_them():
    """One sign per triplet, the query's included, fresh at every layer; x and y share it; arrows +1."""
    u = position_signs((2000,), 3, "triplet", 2, gen())
    assert u.shape == (2000, 2, 12)
    assert torch.equal(u[..., 0::3], u[..., 2::3]) and (u[..., 1::3] == 1).all()
    query = u[..., -3]
    assert 0.45 < (query == 1).float().mean().item() < 0.55
    assert 0.45 < (u[:, 0] == u[:, 1]).float()[:, 0::3].mean().item() < 0.55  # layers independent
    pair = position_signs((500,), 3, "pairwise", 1, gen())
    assert torch.equal(pair[..., 0::2], pair[..., 1::2]) and (pair[..., -1] == -1).any()


def test_the_earlier_sign_reading_is_kept_as_an_option():
    u = position_signs((500,), 3, "triplet", 3, gen(), mode="demos")
    assert (u[..., -3:] == 1).all() and torch.equal(u[:, 0], u[:, 2])
    assert (u[..., 0] == -1).any()
    with pytest.raises(ValueError, match="'both'.*authors, demos"):
        position_signs((5,), 3, "triplet", 1, gen(), mode="both")
    with pytest.raises(ValueError, match="signs='both'.*authors, demos"):
        TrainConfig(signs="both")


def test_evaluation_uses_no_signs():
    """P = I at test time: prompts carry +1 signs, and extraction ignores any signs."""
    p = sample_prompts((2, 7), 3, 4, "triplet", gen())
    assert (p.signs == 1).all()
    m = LinearTransformer(ModelConfig("triplet", 3, 2), 2, gen(1), init_std=0.3)
    Z = p.Z.clone()
    Z[..., -3:, :] = 0.0
    raw = m(Z, torch.ones(2, 7, 12), upto=1)[..., -2, :]
    assert torch.allclose(la.extract_task_vector(m, p.Z, normalise=False), raw)


def test_learning_rate_schedule_is_the_authors_loop():
    """Their loop steps at the current rate, then halves it after every t with t % h == 0 (t = 0 too)."""
    tcfg = TrainConfig(lr=0.01, halve_every=4)
    rate, expected = 0.01, []
    for t in range(15):
        expected.append(rate)
        if t % 4 == 0:
            rate *= 0.5
    assert tcfg.learning_rate(np.arange(15)) == pytest.approx(expected)
    assert tcfg.learning_rate(0) == 0.01 and tcfg.learning_rate(1) == 0.005 and tcfg.learning_rate(5) == 0.0025


def test_rank_one_family_puts_every_input_on_one_line():
    x, y = sample_tasks((20,), 5, 4, gen(), family="rank_one")
    for X, Y in zip(x, y):
        assert torch.linalg.matrix_rank(X).item() == 1 and torch.linalg.matrix_rank(Y).item() == 1
        cos = torch.nn.functional.cosine_similarity(Y[0], Y[1:], dim=-1).abs()
        assert torch.allclose(cos, torch.ones_like(cos), atol=1e-5)
    xg, _ = sample_tasks((20,), 5, 4, gen(), family="gaussian")
    assert torch.linalg.matrix_rank(xg[0]).item() == 4


def test_normalised_risk_is_the_authors_scaled_loss():
    """Their scaled_loss: both directions rescaled to norm sqrt(d), squared error averaged over the
    coordinates and the batch; the model's output is minus the prediction."""
    pred, y = torch.randn(1, 50, 4, generator=gen()), torch.randn(1, 50, 4, generator=gen(1))
    out, d = -pred, 4
    scaled = ((out / out.norm(dim=-1, keepdim=True) * d ** 0.5 + y / y.norm(dim=-1, keepdim=True) * d ** 0.5) ** 2).mean()
    assert la.normalised_risk(pred, y).item() == pytest.approx(scaled.item(), rel=1e-5)


def test_injection_is_a_zero_shot_prompt_of_full_length():
    m = LinearTransformer(ModelConfig("triplet", 3, 3), 2, gen(1), init_std=0.3)
    tv, x_test = torch.randn(2, 5, 8, generator=gen(2)), torch.randn(2, 5, 4, generator=gen(3))
    Z = torch.zeros(2, 5, 12, 8)
    Z[..., 9, :4], Z[..., 10, :] = x_test, tv
    assert torch.allclose(la.inject_task_vector(m, tv, x_test), m.predict(Z, torch.ones(2, 5, 12)))


def test_training_keeps_the_last_checkpoints_and_risks_average_over_them():
    res = fit(ModelConfig("triplet", 2, 2), TrainConfig(steps=6, batch=8, n_seeds=2, eval_every=1, eval_batch=8,
                                                          last_k=3))
    assert len(res.checkpoints) == 3 and res.steps[-3:] == [3, 4, 5]
    assert torch.equal(res.checkpoints[-1].D, res.model.D.detach())
    assert not torch.equal(res.checkpoints[0].D, res.checkpoints[1].D)
    one = fit(ModelConfig("triplet", 1, 2), TrainConfig(steps=6, batch=8, n_seeds=2, eval_every=1, eval_batch=8,
                                                          last_k=3))
    each = [la.task_vector_risks([a], [b], "rank_one", 16, gen(9)) for a, b in zip(res.checkpoints, one.checkpoints)]
    mean = la.task_vector_risks(res.checkpoints, one.checkpoints, "rank_one", 16, gen(9))
    for key, value in mean.items():
        assert torch.allclose(value, torch.stack([e[key] for e in each]).mean(0))
    with pytest.raises(ValueError, match="got 3 and 1"):
        la.task_vector_risks(res.checkpoints, one.checkpoints[:1], "rank_one", 16, gen(9))


def test_layouts_carry_plus_one_signs():
    x, y = sample_tasks((3,), 2, 4, gen())
    for layout in ("single", "pairwise", "triplet"):
        assert (build_prompts(x, y, layout).signs == 1).all()


def test_task_vector_table_is_the_min_over_seeds_then_the_mean_over_n():
    tcfg = TrainConfig(steps=4, batch=8, n_seeds=2, eval_every=1, eval_batch=8, last_k=2)
    triplet = {(2, n): fit(ModelConfig("triplet", n, 2), tcfg) for n in (2, 3)}
    one = {2: fit(ModelConfig("triplet", 1, 2), tcfg)}
    table = la.task_vector_table(triplet, one, ["rank_one", "bijection"], 16, gen(5))
    g = gen(5)
    want = {(f, n): la.task_vector_risks(triplet[(2, n)].checkpoints, one[2].checkpoints, f, 16, g)
            for f in ("rank_one", "bijection") for n in (2, 3)}
    for f in ("rank_one", "bijection"):
        for prompt in ("n-shot", "task vector", "1-shot"):
            mean = np.mean([want[(f, n)][prompt].min().item() for n in (2, 3)])
            assert table.loc[(f, 2), prompt] == pytest.approx(mean)
