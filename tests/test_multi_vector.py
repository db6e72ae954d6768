"""TaskV-M and TaskV-MS: each arrow gets its own vector in order; a prompt's own states change nothing."""

import numpy as np
import pytest
import torch

from tvlib import engine
from tvlib.linear import multi as lmulti
from tvlib.linear.analysis import extract_task_vector, inject_task_vector
from tvlib.linear.data import build_prompts, sample_tasks
from tvlib.linear.model import LinearTransformer, ModelConfig
from tvlib.llm import multi, wordtasks

from test_llm_evaluate import ARROW, tiny  # noqa: F401  (the tiny random Llama and its char tokenizer)

T = wordtasks.Template()
TASK = wordtasks.WordTask("lu", tuple(zip("abcdefghijklmnop", "ABCDEFGHIJKLMNOP")))


def test_arrow_positions_are_the_last_arrows_in_order():
    ids = torch.tensor([[0, ARROW, 5, ARROW, 6, ARROW], [ARROW, 1, 2, ARROW, 3, ARROW]])
    assert multi.arrow_positions(ids, ARROW, 2).tolist() == [[3, 5], [3, 5]]
    assert multi.arrow_positions(ids, ARROW, 3).tolist() == [[1, 3, 5], [0, 3, 5]]
    with pytest.raises(ValueError, match="row 0 has 3 arrow tokens, 4 needed"):
        multi.arrow_positions(ids, ARROW, 4)


def test_each_arrow_gets_its_own_vector_in_order():
    L, B, S, A, D = 3, 2, 4, 4, 5
    states = torch.arange(L * B * S * A * D, dtype=torch.float).view(L, B, S, A, D)
    tv = multi.method_vectors(states, "TaskV", 2)
    m = multi.method_vectors(states, "TaskV-M", 2)
    ms = multi.method_vectors(states, "TaskV-MS", 2)
    assert tv.shape == (L, B, 1, D) and torch.equal(tv[:, :, 0], states[:, :, 0, -1])
    assert m.shape == ms.shape == (L, B, 3, D)
    for t in range(3):
        assert torch.equal(m[:, :, t], states[:, :, t, -1])  # vector t: final arrow of source t
        assert torch.equal(ms[:, :, t], states[:, :, 0, A - 3 + t])  # the last N+1 arrows of one prompt
    with pytest.raises(ValueError, match="needs 5 sources"):
        multi.method_vectors(states, "TaskV-M", 4)
    with pytest.raises(ValueError, match="not one of"):
        multi.method_vectors(states, "TaskV-X", 1)


def test_taskv_ms_states_are_the_prompts_own_arrows(tiny):
    model, tok = tiny
    items = multi.sample_items(TASK, TASK.pairs[:2], 2, 3, 4, 1, np.random.default_rng(0))
    states = multi.source_states(model, tok, T, items, 3)  # one dummy: no averaging
    text = T.prompt(items[1].sources[0], items[1].dummies[0][0])
    inputs = engine.encode(tok, [text], model)
    pos = multi.arrow_positions(inputs["input_ids"], ARROW, 3)
    own = engine.extract(model, inputs, pos)  # [L, 1, 3, D]
    ms = multi.method_vectors(states, "TaskV-MS", 2)
    torch.testing.assert_close(ms[:, 1], own[:, 0], atol=1e-5, rtol=1e-5)
    # and the sources differ: TaskV-M's vectors come from distinct prompts
    assert not torch.allclose(states[:, 1, 0, -1], states[:, 1, 1, -1])


def test_items_keep_the_query_out_of_every_source():
    items = multi.sample_items(TASK, TASK.pairs[:5], 3, 4, 10, 2, np.random.default_rng(1))
    for it in items:
        assert len(it.sources) == 4 and all(len(s) == 10 for s in it.sources)
        inputs = [x for s in it.sources for x, _ in s] + [x for x, _ in it.demos] + [d for ds in it.dummies for d in ds]
        assert it.query[0] not in inputs
        for s, ds in zip(it.sources, it.dummies):
            assert not set(ds) & {x for x, _ in s}


@pytest.mark.parametrize("arrows", ["all", "demos", "query"])
def test_injecting_a_prompts_own_arrow_states_changes_nothing(tiny, arrows):
    model, tok = tiny
    texts = [T.prompt(TASK.pairs[i:i + 2], TASK.pairs[i + 3][0]) for i in range(3)]
    inputs = engine.encode(tok, texts, model)
    pos = multi.arrow_positions(inputs["input_ids"], ARROW, 3)
    own = engine.extract(model, inputs, pos)  # [L, B, 3, D]
    pred = engine.last_logits(model, inputs).argmax(-1)
    acc = multi.sweep_accuracy(model, tok, T, texts, pred, own, arrows)
    assert acc.tolist() == [1.0] * engine.num_layers(model)
    # another prompt's state at the query arrow of the last layer gives that prompt's prediction
    assert multi.sweep_accuracy(model, tok, T, texts, pred.flip(0), own.flip(1), "query")[-1] == 1.0


def test_linear_arrows_in_order_and_k_bounds():
    cfg = ModelConfig("triplet", 3, 2)
    model = LinearTransformer(cfg, 2, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(1)
    x, y = sample_tasks((2, 4), 3, cfg.d, g)
    p = build_prompts(x, y, "triplet")
    raw = lmulti.arrow_states(model, p.Z)
    Zq = p.Z.clone()
    Zq[..., -3:, :] = 0
    full = model(Zq, p.signs, upto=1)
    assert raw.shape == (2, 4, 4, 2 * cfg.d)
    for i in range(4):
        torch.testing.assert_close(raw[:, :, i], full[:, :, 3 * i + 1])
    scaled = lmulti.arrow_states(model, p.Z, normalise=True)
    torch.testing.assert_close(scaled[:, :, -1].norm(dim=-1).mean(1), torch.ones(2))
    with pytest.raises(ValueError, match="do not fit"):
        lmulti.inject_arrows(model, raw.repeat(1, 1, 2, 1), x[..., -1, :])
    with pytest.raises(ValueError, match="injection site 'middle'"):
        lmulti.inject_arrows(model, raw, x[..., -1, :], site="middle")
    risks = lmulti.k_vector_risks([model, model], "gaussian", 8, g)
    assert list(risks) == ["n-shot", "0-shot", "k=1", "k=2", "k=3", "k=4"]


def test_linear_one_input_vector_is_the_emergence_chapters_task_vector():
    cfg = ModelConfig("triplet", 3, 2)
    model = LinearTransformer(cfg, 2, torch.Generator().manual_seed(0))
    x, y = sample_tasks((2, 5), 3, cfg.d, torch.Generator().manual_seed(1))
    p = build_prompts(x, y, "triplet")
    tv = extract_task_vector(model, p.Z)
    torch.testing.assert_close(lmulti.arrow_states(model, p.Z, normalise=True)[:, :, -1], tv)
    torch.testing.assert_close(lmulti.inject_arrows(model, tv[:, :, None], x[..., -1, :], site="input"),
                               inject_task_vector(model, tv, x[..., -1, :]))


@pytest.mark.parametrize("site,start", [("layer1", 1), ("input", 0)])
def test_linear_k_vectors_go_into_the_last_k_arrows(site, start):
    cfg = ModelConfig("triplet", 3, 2)
    model = LinearTransformer(cfg, 1, torch.Generator().manual_seed(0))
    vecs = torch.randn(1, 2, 2, 2 * cfg.d)
    seen = []
    original = model.forward

    def spy(Z, signs, keep=None, upto=None, start=0):
        seen.append((Z.clone(), start))
        return original(Z, signs, keep, upto, start)

    model.forward = spy
    pred = lmulti.inject_arrows(model, vecs, torch.ones(1, 2, cfg.d), site=site)
    Z, got_start = seen[-1]
    assert got_start == start and pred.shape == (1, 2, cfg.d)
    torch.testing.assert_close(Z[..., [7, 10], :], vecs)
    assert Z[..., 9, :cfg.d].abs().sum() > 0
    if site == "input":
        assert Z[..., [0, 1, 2, 3, 4, 5, 6, 8, 11], :].abs().sum() == 0


def test_linear_own_layer1_states_reproduce_the_prompt_and_n_plus_1_vectors_recover_icl():
    """Writing a prompt's own layer-1 states back changes nothing. On a model built with Prop. 3's
    structure (C_1 = 0, Lambda_4's rows orthonormal, layer 2 reads the arrows), the n+1 arrow vectors
    injected into a prompt with no demonstrations give exactly the n-shot prediction; one does not."""
    cfg = ModelConfig("triplet", 3, 2)
    model = LinearTransformer(cfg, 1, torch.Generator().manual_seed(0))
    x, y = sample_tasks((1, 6), 3, cfg.d, torch.Generator().manual_seed(2))
    p = build_prompts(x, y, "triplet")
    n, T = cfg.n, cfg.n_tokens
    with torch.no_grad():
        own = model(p.Z, p.signs, upto=1)
        torch.testing.assert_close(-model(own, p.signs, start=1)[..., -1, cfg.d:], model.predict(p.Z, p.signs))
        model.a.copy_(torch.tensor([[1.0, 0.0]]))
        model.b.copy_(torch.tensor([[1.0, -1.0]]))
        model.c.copy_(torch.tensor([[0.0, 1.0]]))
        beta = torch.linalg.qr(torch.randn(n + 1, n + 1, generator=torch.Generator().manual_seed(3)))[0][:n]
        D = torch.zeros(1, 2, T, T)
        for i in range(n):  # demo i's x and y tokens feed arrow j with weight beta[i, j]
            D[0, 0, 3 * i, 1::3] = D[0, 0, 3 * i + 2, 1::3] = beta[i]
        D[0, 0, T - 3, T - 1] = 1.0  # x_test moves into the slot
        model.D.copy_(D)
        icl = model.predict(p.Z, p.signs)
        states = lmulti.arrow_states(model, p.Z)
        full = lmulti.inject_arrows(model, states, x[..., -1, :])
        one = lmulti.inject_arrows(model, states[:, :, -1:], x[..., -1, :])
    torch.testing.assert_close(full, icl)
    assert (one - icl).abs().max() > 1e-3 * icl.abs().max()


def _items(p: float) -> np.ndarray:
    """Five test items, a fraction ``p`` of them right."""
    return np.arange(5) < round(5 * p)


def _run(task: str, base: float, tv: float, tvm: float) -> multi.MultiRun:
    dev = {("TaskV", 1): np.array([0.0, 1.0, 0.5]), ("TaskV-M", 1): np.array([0.9, 0.2, 0.1])}
    test = {("TaskV", 1): _items(tv), ("TaskV-M", 1): _items(tvm)}
    return multi.MultiRun(task, {1: _items(base)}, dev, test)


def test_paired_gain_pools_items_and_gives_a_standard_error():
    runs = {"lower_upper": [_run("lower_upper", 0.2, 0.6, 0.8), _run("lower_upper", 0.4, 0.8, 1.0)],
            "bij_lower_upper": [_run("bij_lower_upper", 0.0, 0.2, 0.4)]}
    mean, se, n = multi.paired_gain(runs, "TaskV-M", "TaskV", [1])
    d = np.array([0, 0, 0, 1, 0] + [0, 0, 0, 0, 1] + [0, 1, 0, 0, 0], float)
    assert n == 15 and mean == pytest.approx(100 * d.mean()) and se == pytest.approx(100 * d.std(ddof=1) / np.sqrt(15))
    assert multi.paired_gain(runs, "TaskV", "Baseline", [1], ["bij_lower_upper"])[0] == pytest.approx(20.0)
    with pytest.raises(ValueError, match="no test results at N = 2"):
        multi.paired_gain(runs, "TaskV-M", "TaskV", [2])


def test_layer_correct_with_own_states_matches_the_plain_prompt(tiny):
    model, tok = tiny
    texts = [T.prompt(TASK.pairs[i:i + 2], TASK.pairs[i + 3][0]) for i in range(3)]
    inputs = engine.encode(tok, texts, model)
    own = engine.extract(model, inputs, multi.arrow_positions(inputs["input_ids"], ARROW, 3))
    pred = engine.last_logits(model, inputs).argmax(-1)
    assert multi.plain_correct(model, tok, texts, pred).all()
    for layer in range(engine.num_layers(model)):
        assert multi.layer_correct(model, tok, T, texts, pred, own, layer, "demos").all()
    with pytest.raises(ValueError, match="layer 9 is not in"):
        multi.layer_correct(model, tok, T, texts, pred, own, 9)


def test_table_averages_tasks_then_trials_and_reports_both_numbers():
    runs = {"lower_upper": [_run("lower_upper", 0.2, 0.6, 0.8), _run("lower_upper", 0.4, 0.8, 1.0)],
            "bij_lower_upper": [_run("bij_lower_upper", 0.0, 0.2, 0.4)] * 2}
    cats = {t: multi.category(t) for t in runs}
    assert cats == {"lower_upper": "Algorithmic", "bij_lower_upper": "Bijection"}
    frame = multi.table(runs, cats, "m")
    row = frame.set_index(["method", "category"])
    assert row.loc[("TaskV", "Algorithmic"), "mean"] == pytest.approx(70.0)  # dev picks layer 1
    assert row.loc[("TaskV", "Algorithmic"), "std"] == pytest.approx(10.0)
    assert row.loc[("TaskV-M", "Average"), "mean"] == pytest.approx((90.0 + 40.0) / 2)  # dev picks layer 0
    best = multi.table(runs, cats, "m", value="best_dev").set_index(["method", "category"])
    assert best.loc[("TaskV-M", "Bijection"), "mean"] == pytest.approx(90.0)
    assert multi.gain(frame, "TaskV-M", "TaskV") == {1: pytest.approx(65.0 - 45.0)}
    with pytest.raises(ValueError, match="no category"):
        multi.category("made_up")
    with pytest.raises(ValueError, match="value"):
        multi.table(runs, cats, "m", value="best")


def test_methods_by_shots_draws_one_line_per_method_and_panel():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tvlib import papers, plotting

    frame = papers.table("dong2025_table7")
    fig, axes = plt.subplots(1, 2)
    plotting.methods_by_shots(axes, frame, ["Bijection", "Average"], title="Llama")
    assert axes[0].get_title() == "Llama: Bijection"
    lines = {l.get_label(): l for l in axes[0].get_lines()}
    assert set(lines) == {"Baseline", "TaskV", "TaskV-M", "TaskV-MS"}
    assert list(lines["TaskV-MS"].get_xdata()) == [1, 2, 3, 4]
    assert lines["TaskV-MS"].get_ydata()[-1] == pytest.approx(72.09)
    with pytest.raises(ValueError, match="not in the table"):
        plotting.methods_by_shots(axes, frame, ["Bijection", "Nope"])
    plt.close(fig)


def test_scratch_methods_by_layer_and_bad_shots():
    from tvlib.scratch import multi as smulti
    from tvlib.scratch import train as strain

    cfg = strain.TrainConfig(task="map", vocab=8, n_embd=16, n_head=2, n_layer=2, n_examples=6)
    torch.manual_seed(0)
    model = strain.make_model(cfg).eval()
    task = cfg.make_task()
    out = smulti.multi_vector_errors(model, task, 2, 5, 16, 0)
    assert list(out) == ["Baseline", "TaskV", "TaskV-M", "TaskV-MS"]
    assert out["Baseline"].shape == (1,) and all(out[m].shape == (2,) for m in ("TaskV", "TaskV-M", "TaskV-MS"))
    assert list(smulti.multi_vector_errors(model, task, 0, 5, 8, 0)) == ["Baseline", "TaskV"]
    with pytest.raises(ValueError, match="n_source >= n_shots"):
        smulti.multi_vector_errors(model, task, 3, 3, 8, 0)
