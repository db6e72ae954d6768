"""Unit tests for tvlib.linear: layouts, the model's mask and forward pass, training mechanics,
the closed-form one-layer optimum (by Monte Carlo) and the analysis helpers."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tvlib.linear import analysis as la
from tvlib.linear.data import Prompts, build_prompts, n_tokens, position_signs, sample_prompts, sample_tasks
from tvlib.linear.model import LinearTransformer, ModelConfig
from tvlib.linear.train import TrainConfig, TrainResult, clip_per_seed, dropout_keep, fit, risk, train, weight_decay_left


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def model_for(layout: str, n: int, L: int, S: int = 2, causal: bool = False, std: float = 0.3) -> LinearTransformer:
    return LinearTransformer(ModelConfig(layout, n, L, causal=causal), S, gen(1), init_std=std)


def naive_forward(model: LinearTransformer, Z, signs, keep=None):
    """Reference: the explicit [T, T] score matrix of eq. 5, s_ij = c x_i.x_j + u_i u_j D_ij, on the
    dropped-out input (a dropped token is no source and has no content score), per-layer signs."""
    cfg, d = model.cfg, model.cfg.d
    Z = Z.expand(model.n_seeds, *Z.shape[1:])
    if signs.dim() == Z.dim() - 1:
        signs = signs.unsqueeze(-2).expand(*signs.shape[:-1], cfg.n_layers, signs.shape[-1])
    signs = signs.expand(model.n_seeds, *signs.shape[1:])
    M = torch.ones(cfg.n_tokens, cfg.n_tokens)
    M[-1] = 0.0
    if cfg.causal:
        M = torch.triu(M)
    for l in range(cfg.n_layers):
        k = torch.ones_like(Z[..., :1]) if keep is None else keep[:, :, l, :, None]
        x, u = Z[..., :d] * k, signs[:, :, l]
        s = model.c[:, l, None, None, None] * x @ x.transpose(-1, -2) + u[..., :, None] * u[..., None, :] * model.D[:, None, l]
        s = s * M * k
        out = s.transpose(-1, -2) @ Z
        Z = Z + torch.cat([model.a[:, l, None, None, None] * out[..., :d], model.b[:, l, None, None, None] * out[..., d:]], -1) / cfg.n
    return Z


def test_layouts_place_tokens_as_in_eqs_3_7_9():
    x, y = sample_tasks((1,), 2, 3, gen())
    single = build_prompts(x, y, "single")
    assert single.Z.shape == (1, 3, 6)
    assert torch.equal(single.Z[0, 1], torch.cat([x[0, 1], y[0, 1]]))
    assert torch.equal(single.Z[0, 2], torch.cat([x[0, 2], torch.zeros(3)]))
    pair = build_prompts(x, y, "pairwise")
    assert pair.Z.shape == (1, 6, 6)
    assert torch.equal(pair.Z[0, 2, :3], x[0, 1]) and torch.equal(pair.Z[0, 3, 3:], y[0, 1])
    assert not pair.Z[0, 5].any() and not pair.Z[0, 2, 3:].any()
    trip = build_prompts(x, y, "triplet")
    assert trip.Z.shape == (1, 9, 6)
    assert torch.equal(trip.Z[0, 3, :3], x[0, 1]) and torch.equal(trip.Z[0, 5, 3:], y[0, 1])
    assert not trip.Z[0, 1::3].any() and not trip.Z[0, 7:].any()
    assert torch.equal(trip.y_test, y[:, 2])


def test_bad_inputs_name_the_valid_values():
    with pytest.raises(ValueError, match="'quad'.*single, pairwise, triplet"):
        n_tokens("quad", 3)
    with pytest.raises(ValueError, match="'sparse'.*gaussian, rank_one, bijection"):
        sample_tasks((1,), 2, 2, gen(), family="sparse")
    with pytest.raises(ValueError, match="n=0"):
        n_tokens("pairwise", 0)
    with pytest.raises(ValueError, match=r"\(9, 8\)"):
        model_for("triplet", 2, 1)(torch.zeros(2, 1, 6, 8), torch.ones(2, 1, 6))
    with pytest.raises(ValueError, match="dropout=1.5"):
        TrainConfig(dropout=1.5)


def test_task_families():
    x, y = sample_tasks((50,), 4, 4, gen(), family="rank_one")
    assert torch.linalg.matrix_rank(x[0]).item() == 1 and torch.linalg.matrix_rank(y[0]).item() == 1
    x, y = sample_tasks((50,), 4, 4, gen(), family="bijection")
    W = torch.linalg.lstsq(x[..., :4, :], y[..., :4, :]).solution.transpose(-1, -2)
    assert torch.allclose(W @ W, torch.eye(4).expand(50, 4, 4), atol=1e-3)
    assert not torch.allclose(W, torch.eye(4)) and not torch.allclose(W, -torch.eye(4))


def test_hand_computed_forward_pass():
    """Single layout, n = 1, d = 1: the last token gets b*y1*(c*x1*x2 + u1*D[0, 1]) / n."""
    m = LinearTransformer(ModelConfig("single", 1, 1, d=1), 1, gen())
    with torch.no_grad():
        m.a.fill_(0.5), m.b.fill_(2.0), m.c.fill_(3.0)
        m.D.copy_(torch.tensor([[[[0.7, -1.1], [0.4, 0.9]]]]))
    Z = torch.tensor([[[[2.0, 5.0], [-1.0, 0.0]]]])  # x1=2, y1=5; x2=-1
    signs = torch.tensor([[[-1.0, 1.0]]])
    out = m(Z, signs)[0, 0]
    assert out[1, 1].item() == pytest.approx(2.0 * 5.0 * (3.0 * 2 * -1 + (-1) * (-1.1)))
    assert out[1, 0].item() == pytest.approx(-1 + 0.5 * 2.0 * (3.0 * 2 * -1 + (-1) * (-1.1)))
    # token 1 is a source for itself: s_11 = c x1^2 + D[0,0]
    s11 = 3.0 * 4 + 0.7
    assert out[0].tolist() == pytest.approx([2 + 0.5 * 2 * s11, 5 + 2.0 * 5 * s11])
    assert m.predict(Z, signs)[0, 0, 0].item() == pytest.approx(-out[1, 1].item())


@pytest.mark.parametrize("layout", ["single", "pairwise", "triplet"])
@pytest.mark.parametrize("causal", [False, True])
def test_fast_forward_matches_explicit_scores(layout, causal):
    m = model_for(layout, 3, 3, S=3, causal=causal)
    p = sample_prompts((3, 5), 3, 4, layout, gen(3))
    keep = (torch.rand(3, 5, 3, m.cfg.n_tokens, generator=gen(4)) > 0.3).float()
    per_layer = position_signs((3, 5), 3, layout, 3, gen(5))
    for k in (None, keep):
        for signs in (p.signs, per_layer):
            ref = naive_forward(m, p.Z, signs, k)
            assert torch.allclose(m(p.Z, signs, k), ref, rtol=1e-4, atol=1e-4 * ref.abs().max().item())


def test_last_token_is_never_a_source_and_causal_blocks_the_future():
    m = model_for("triplet", 2, 2)
    p = sample_prompts((2, 3), 2, 4, "triplet", gen())
    Z2 = p.Z.clone()
    Z2[..., -1, :] = 5.0
    assert torch.allclose(m(p.Z, p.signs, upto=1)[..., :-1, :], m(Z2, p.signs, upto=1)[..., :-1, :])
    mc = model_for("triplet", 2, 2, causal=True)
    Z3 = p.Z.clone()
    Z3[..., 4:, :] += 1.0
    assert torch.allclose(mc(p.Z, p.signs)[..., :4, :], mc(Z3, p.signs)[..., :4, :])
    assert not torch.allclose(m(p.Z, p.signs)[..., :4, :], m(Z3, p.signs)[..., :4, :])


def test_seeds_are_independent_and_select_matches():
    m = model_for("pairwise", 3, 2, S=3)
    p = sample_prompts((3, 8), 3, 4, "pairwise", gen())
    risk(m, p).sum().backward()
    one = m.select(1)
    risk(one, Prompts(p.Z[1:2], p.signs[1:2], p.y_test[1:2])).sum().backward()
    assert torch.allclose(one.D.grad[0], m.D.grad[1], atol=1e-6)
    with pytest.raises(ValueError, match="out of range 0..2"):
        m.select(3)


def test_clip_per_seed_leaves_other_seeds_alone():
    m = model_for("single", 2, 1, S=2)
    for prm in m.parameters():
        prm.grad = torch.ones_like(prm)
    m.D.grad[0] *= 1e4
    clip_per_seed(m, 10.0)
    assert m.D.grad[0].norm().item() == pytest.approx(10.0, rel=1e-5)
    assert torch.equal(m.D.grad[1], torch.ones_like(m.D.grad[1]))


def test_dropout_keeps_the_query():
    m = model_for("triplet", 4, 2)
    keep = dropout_keep(m, 100, 0.5, gen())
    assert keep.shape == (2, 100, 2, 15) and (keep[..., -3:] == 1).all()
    assert 0.4 < keep[..., :-3].mean().item() < 0.6
    assert dropout_keep(m, 100, 0.0, gen()) is None


def test_learning_rate_vectorises():
    tcfg = TrainConfig(lr=0.01, halve_every=3)
    assert tcfg.learning_rate(np.arange(7)).tolist() == [tcfg.learning_rate(step) for step in range(7)]


def test_weight_decay_left_is_the_product_over_the_schedule():
    tcfg = TrainConfig(steps=4, halve_every=2, lr=0.1, weight_decay=0.5)
    assert weight_decay_left(tcfg) == pytest.approx((1 - 0.05) * (1 - 0.025) ** 2 * (1 - 0.0125))
    authors = TrainConfig()  # 20,001 steps, halved every 2,500: about 8 % of an untouched weight is left
    assert weight_decay_left(authors) == pytest.approx(np.prod([1 - authors.learning_rate(t) * 0.05
                                                                for t in range(20_001)]))


def test_training_follows_the_schedule(monkeypatch):
    """With the one schedule set to 0, AdamW moves nothing (no step, no decay)."""
    monkeypatch.setattr(TrainConfig, "learning_rate", lambda self, step: 0.0)
    res = fit(ModelConfig("single", 2, 1), TrainConfig(steps=3, batch=4, n_seeds=1, eval_every=1, eval_batch=4))
    assert torch.equal(res.model.D.detach(), res.D_init)


def test_min_risk_is_the_best_seeds_final_risk():
    res = TrainResult(model=model_for("single", 2, 1), D_init=torch.zeros(1), steps=[0, 1, 2],
                      risk=torch.tensor([[9.0, 9.0], [1.0, 4.0], [3.0, 2.0]]), last_k=2, checkpoints=[])
    assert res.final.tolist() == [2.0, 3.0] and res.min_risk == 2.0


def test_fig4ab_cell():
    assert la.fig4ab_passes(single_below=3.0, pairwise=2.0, triplet=2.5, single_above=1.0)
    assert not la.fig4ab_passes(3.0, 2.0, 3.5, 1.0)  # triplet above S(L-1)
    assert not la.fig4ab_passes(3.0, 0.5, 2.0, 1.0)  # pairwise below S(L)
    assert not la.fig4ab_passes(3.0, 1.2, 2.5, 1.0)  # T/P = 2.08 > 1.5
    assert la.fig4ab_passes(3.0, 1.2, 2.5, 1.0, max_ratio=2.5)


def test_single_layer_optimum_by_monte_carlo():
    """Risk per coordinate of y_hat = (gamma/n) W X X^T x, simulated, against d(d+1)/(n+d+1)."""
    n, d, N = 6, 4, 200_000
    gamma, best = la.single_layer_optimum(n, d)
    x, y = sample_tasks((N,), n, d, gen(5))
    X, Y = x[:, :n], y[:, :n]
    est = torch.einsum("bni,bnj,bj->bi", Y, X, x[:, n]) / n

    def mc(g: float) -> float:
        return (g * est - y[:, n]).pow(2).mean().item()

    assert mc(gamma) == pytest.approx(best, rel=0.03)
    assert mc(0.8 * gamma) > mc(gamma) and mc(1.2 * gamma) > mc(gamma)


def test_short_training_approaches_the_one_layer_optimum():
    res = fit(ModelConfig("single", 5, 1), TrainConfig(steps=300, batch=64, n_seeds=2, halve_every=100,
                                                          l1_from=50, eval_every=50, eval_batch=400, last_k=2))
    assert res.risk.shape == (len(res.steps), 2)
    assert res.final.min().item() == pytest.approx(la.single_layer_optimum(5, 4)[1], rel=0.15)


def test_pattern_masks_and_share():
    masks = la.pattern_masks("triplet", 2)
    assert masks["concat"].sum().item() == 3 * 4 and masks["self"].sum().item() == 3
    assert masks["tv"].sum().item() == 6 * 3
    assert la.pattern_masks("pairwise", 3)["concat"].sum().item() == 4 * 4
    D = torch.randn(9, 9) * masks["tv"]
    assert la.pattern_share(D, masks["tv"]).item() == pytest.approx(1.0)
    assert torch.equal(la.lambda4(D), D[0::3, 1::3])
    stacked = torch.randn(2, 9, 9, generator=gen())  # n = 2: x tokens 0 and 3 on the query's arrow, token 7
    assert torch.equal(la.final_arrow_weights(stacked), stacked[:, [0, 3], 7].abs())
    with pytest.raises(ValueError, match="'single'"):
        la.pattern_masks("single", 2)


def test_prop3_stats_vanish_for_an_exact_minimiser():
    Q = torch.linalg.qr(torch.randn(5, 5, generator=gen())).Q
    L4 = torch.cat([2.0 * Q[:4], torch.zeros(1, 5)])
    stats = la.prop3_stats(L4)
    assert all(v.item() < 1e-5 for v in stats.values())
    assert la.prop3_stats(torch.randn(5, 5, generator=gen()))["offdiag"].item() > 0.1


def test_task_vector_injection():
    m = model_for("triplet", 3, 2)
    p = sample_prompts((2, 6), 3, 4, "triplet", gen())
    tv = la.extract_task_vector(m, p.Z)
    assert tv.shape == (2, 6, 8)
    assert torch.allclose(tv.norm(dim=-1).mean(-1), torch.ones(2))
    x_test = p.Z[..., -3, :4]
    assert not la.inject_task_vector(m, torch.zeros_like(tv), x_test).any()
    assert la.inject_task_vector(m, tv, x_test).shape == (2, 6, 4)
    with pytest.raises(ValueError, match="'pairwise' has none"):
        la.extract_task_vector(model_for("pairwise", 3, 2), torch.zeros(2, 1, 8, 8))


def test_normalised_risk_range():
    y = torch.randn(1, 100, 4, generator=gen())
    assert la.normalised_risk(y, y).item() == pytest.approx(0.0, abs=1e-6)
    assert la.normalised_risk(-y, y).item() == pytest.approx(4.0)
    assert la.normalised_risk(torch.zeros_like(y), y).item() == pytest.approx(1.0)


def test_prop4_rank_one_residual():
    rng = np.random.default_rng(0)
    for _ in range(3):
        x, y = rng.standard_normal(4), rng.standard_normal(4)
        sigma2 = np.linalg.svd(np.stack([y, x], 1), compute_uv=False)[1]
        assert la.rank_one_residual(x, y) == pytest.approx(sigma2 ** 2, rel=1e-6)
    assert la.rank_one_residual(x, x) < 1e-20 and la.rank_one_residual(x, -x) < 1e-20
    assert la.rank_one_residual(x, 2 * x) > 0.1


def test_prop5_theory_profile():
    w = la.tv_weight_profile(8, 0.2, causal=True, seed=0)
    assert w.shape == (8,) and np.linalg.norm(w) == pytest.approx(1.0)
    assert np.corrcoef(np.arange(8), w)[0, 1] > 0.5
    with pytest.raises(ValueError, match="p=1.0"):
        la.tv_weight_profile(8, 1.0, causal=True, seed=0)
    assert la.participation(torch.ones(5)).item() == pytest.approx(1.0)
    assert la.participation(torch.tensor([1.0, 0, 0, 0])).item() == pytest.approx(0.25)


def test_train_caches_the_run_and_serves_it_back(tmp_path, monkeypatch):
    """The second call loads the first call's run (models, checkpoints, curve) without training."""
    mcfg, tcfg = ModelConfig("triplet", 2, 2), TrainConfig(steps=4, batch=8, n_seeds=2, eval_every=1, eval_batch=8,
                                                           last_k=2)
    first = train(mcfg, tcfg, cache=tmp_path)
    assert len(list(tmp_path.glob("linear-*.pt"))) == 1
    monkeypatch.setattr("tvlib.linear.train.fit", lambda *a: pytest.fail("a cached run was trained again"))
    again = train(mcfg, tcfg, cache=tmp_path)
    assert again.steps == first.steps and torch.equal(again.risk, first.risk)
    assert torch.equal(again.D_init, first.D_init)
    for a, b in zip([again.model, *again.checkpoints], [first.model, *first.checkpoints], strict=True):
        assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert again.last_k == 2 and not again.checkpoints[0].D.requires_grad


def test_train_cache_key_follows_both_configs_and_training_does_not_depend_on_threads():
    """The key leaves the thread count out: a run trained on one thread equals one trained on two."""
    from tvlib.linear.train import run_key
    mcfg, tcfg = ModelConfig("triplet", 3, 2), TrainConfig(steps=6, batch=64, n_seeds=2, eval_every=2, eval_batch=64,
                                                           l1_from=2, dropout=0.2)
    assert run_key(mcfg, tcfg) != run_key(ModelConfig("triplet", 3, 3), tcfg)
    assert run_key(mcfg, tcfg) != run_key(mcfg, replace(tcfg, steps=7))
    before = torch.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            runs.append(fit(mcfg, tcfg))
    finally:
        torch.set_num_threads(before)
    assert torch.equal(runs[0].risk, runs[1].risk)
    assert all(torch.equal(p, q) for p, q in zip(runs[0].model.parameters(), runs[1].model.parameters()))
