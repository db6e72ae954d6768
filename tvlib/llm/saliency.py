"""How the task vector forms: attention saliency by token role, and demonstration weights (Dong et al., Fig. 3, 5).

Saliency maps come from :func:`tvlib.engine.saliency` (S_l = sum_h |A * dL/dA|, rows are queries,
columns keys). Here they are read by *token role*: each demonstration i has its x_i, arrow and
y_i tokens, the query has its x and the final arrow (:class:`Roles`). Two per-layer shares
quantify the two stages of Theorem 2:

- concatenation share: of the saliency flowing into the y_i tokens, the part that comes from the
  same demonstration's x_i and arrow (embedding concatenation);
- formation share: of the saliency flowing into the final arrow, the part that comes from the
  y_i tokens (task-vector formation).

Demonstration weights (Fig. 3c): corrupt demonstration i's label (the label of another input),
re-extract the task vector with the *same* dummy queries, and measure ``||tv^{-i} - tv||`` on the
whole residual vector (the authors' code draws the queries anew and keeps one head-sized slice).
Helpers serve both the pretrained LLM (word prompts) and tvlib's from-scratch GPT (token prompts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tvlib import engine
from tvlib.analysis import LayerSweep
from tvlib.llm.evaluate import EvalConfig, injection_sweep, predict, prepare, states
from tvlib.llm.wordtasks import (Pair, Prompt, Template, WordTask, answer_first_token, dev_test_prompts,
                                 first_token_filter, load_task, sample_prompts)

STAGES = ("concatenation", "formation")


@dataclass(frozen=True)
class Roles:
    """Token positions of one prompt by role: per demonstration its x, arrow and y tokens; the query."""

    x: tuple[tuple[int, ...], ...]
    arrow: tuple[tuple[int, ...], ...]
    y: tuple[tuple[int, ...], ...]
    query_x: tuple[int, ...]
    final: int  # the final arrow's last token, where the answer is predicted

    @property
    def n(self) -> int:
        return len(self.y)


def _span_tokens(offsets: list[tuple[int, int]], start: int, stop: int) -> tuple[int, ...]:
    """Indices of the tokens overlapping the characters [start, stop)."""
    found = tuple(t for t, (a, b) in enumerate(offsets) if a < stop and b > start)
    if not found:
        raise ValueError(f"no token covers characters {start}:{stop}")
    return found


def word_roles(tokenizer, template: Template, demos: tuple[Pair, ...], query: str) -> Roles:
    """The roles of the tokens of ``template.prompt(demos, query)``, from the tokenizer's offsets."""
    text = template.prompt(demos, query)
    offsets = [tuple(o) for o in tokenizer(text, return_offsets_mapping=True)["offset_mapping"]]
    x, arrow, y, at = [], [], [], 0
    for dx, dy in demos:
        at += len(template.prefix)
        x.append(_span_tokens(offsets, at, at + len(dx)))
        at += len(dx)
        arrow.append(_span_tokens(offsets, at, at + len(template.arrow)))
        at += len(template.arrow)
        y.append(_span_tokens(offsets, at, at + len(dy)))
        at += len(dy) + len(template.separator)
    at += len(template.prefix)
    query_x = _span_tokens(offsets, at, at + len(query))
    return Roles(tuple(x), tuple(arrow), tuple(y), query_x, len(offsets) - 1)


def triplet_roles(n: int) -> Roles:
    """The roles in a from-scratch triplet prompt (x_1, ->, y_1, ..., x_n, ->, y_n, x, ->)."""
    return Roles(tuple((3 * i,) for i in range(n)), tuple((3 * i + 1,) for i in range(n)),
                 tuple((3 * i + 2,) for i in range(n)), (3 * n,), 3 * n + 1)


def word_prompts(name: str, tokenizer, template: Template, n_shots: int, count: int, rng: np.random.Generator
                 ) -> tuple[WordTask, list[Prompt], list[str], Tensor]:
    """``count`` n-shot prompts of word task ``name`` (pairs whose answer starts a token only), with
    two dummy queries each: the task, the prompts, their texts and the answers' first-token ids."""
    task = first_token_filter(load_task(name), tokenizer, template)
    queries = tuple(task.pairs[i] for i in rng.choice(len(task.pairs), count))
    prompts = sample_prompts(task, queries, n_shots, 2, rng)
    answers = torch.tensor([answer_first_token(tokenizer, template, p.query[1]) for p in prompts])
    return task, prompts, [template.prompt(p.demos, p.query[0]) for p in prompts], answers


def graph_tokens(roles: Roles, last: int = 3) -> list[int]:
    """The positions Fig. 3a/b draws: x, arrow and y of the last ``last`` demonstrations, the query's x, the final arrow."""
    if not 1 <= last <= roles.n:
        raise ValueError(f"last={last} must lie in 1..{roles.n} (the number of demonstrations)")
    demo = [t for i in range(roles.n - last, roles.n) for t in roles.x[i] + roles.arrow[i] + roles.y[i]]
    return demo + list(roles.query_x) + [roles.final]


def stage_edges(roles: Roles, stage: str, last: int = 3) -> list[tuple[int, int]]:
    """The (query, key) edges Fig. 3a/b highlights among :func:`graph_tokens`: for concatenation each
    y_i to its own x_i, arrow and y_i; for formation the final arrow to each y_i."""
    if stage not in STAGES:
        raise ValueError(f"stage={stage!r} is not one of {', '.join(STAGES)}")
    demos = range(roles.n - last, roles.n)
    if stage == "concatenation":
        return [(y, k) for i in demos for y in roles.y[i] for k in roles.x[i] + roles.arrow[i] + roles.y[i]]
    return [(roles.final, y) for i in demos for y in roles.y[i]]


# ----------------------------------------------------------------------------- shares


def concatenation_share(S: Tensor, roles: Roles) -> Tensor:
    """``[L]``: mean over demonstrations of the share of y_i's saliency (rows y_i) from its own x_i and arrow."""
    shares = []
    for x, arrow, y in zip(roles.x, roles.arrow, roles.y):
        rows = S[:, list(y)]  # [L, |y|, T]
        shares.append(rows[..., list(x + arrow)].sum((-1, -2)) / rows.sum((-1, -2)).clamp_min(1e-30))
    return torch.stack(shares).mean(0)


def formation_share(S: Tensor, roles: Roles) -> Tensor:
    """``[L]``: the share of the final arrow's saliency (its row) that comes from the y_i tokens."""
    row = S[:, roles.final]  # [L, T]
    ys = [t for y in roles.y for t in y]
    return row[:, ys].sum(-1) / row.sum(-1).clamp_min(1e-30)


def role_shares(maps: Tensor, roles: list[Roles]) -> dict[str, np.ndarray]:
    """Both shares per layer, averaged over prompts: ``maps`` ``[L, B, T, T]``, one :class:`Roles` per row."""
    if maps.shape[1] != len(roles):
        raise ValueError(f"{maps.shape[1]} saliency maps but {len(roles)} role sets")
    concat = torch.stack([concatenation_share(maps[:, b], r) for b, r in enumerate(roles)]).mean(0)
    form = torch.stack([formation_share(maps[:, b], r) for b, r in enumerate(roles)]).mean(0)
    return {"concatenation": concat.numpy(), "formation": form.numpy()}


def mean_map(maps: Tensor, roles: list[Roles]) -> Tensor:
    """``[L, T, T]``: the prompts' mean saliency map (Fig. 5). Only defined where every prompt puts
    every role at the same positions (single-token words); otherwise the mean would mix roles."""
    if maps.shape[1] != len(roles):
        raise ValueError(f"{maps.shape[1]} saliency maps but {len(roles)} role sets")
    moved = [b for b, r in enumerate(roles) if r != roles[0]]
    if moved:
        raise ValueError(f"prompts {moved[:5]} place their roles at other positions than prompt 0; "
                         "a mean map would mix roles")
    return maps.mean(1)


def uniform_shares(maps: Tensor, roles: list[Roles]) -> dict[str, float]:
    """Both shares if every key a row can see got equal saliency: the level each share has by chance."""
    T = maps.shape[-1]
    flat = torch.ones(T, T).tril().expand(1, len(roles), T, T)
    return {key: float(value[0]) for key, value in role_shares(flat, roles).items()}


def peak_layer(curve: np.ndarray) -> int:
    """The layer where a per-layer curve is largest."""
    return int(np.argmax(curve))


# ----------------------------------------------------------------------------- corrupting demonstrations


def corrupt_demo(demos: tuple[Pair, ...], i: int, pairs: tuple[Pair, ...], rng: np.random.Generator
                 ) -> tuple[Pair, ...]:
    """``demos`` with demonstration i's label replaced by the label of another input (Fig. 3c).

    The other input is drawn from ``pairs`` among those whose label differs from y_i, so the
    demonstration is really wrong; every other demonstration is unchanged.
    """
    if not 0 <= i < len(demos):
        raise ValueError(f"demonstration index {i} is outside 0..{len(demos) - 1}")
    x, y = demos[i]
    others = [b for a, b in pairs if a != x and b != y]
    if not others:
        raise ValueError(f"no other input of the task has a label different from {y!r}")
    return demos[:i] + ((x, others[rng.integers(len(others))]),) + demos[i + 1:]


def corrupt_labels(task, params: Tensor, xs: Tensor, ys: Tensor, i: int, gen: torch.Generator) -> Tensor:
    """Token prompts' labels ``ys`` [B, k] with label i of every row replaced by the label of another input."""
    B, vocab = ys.shape[0], task.vocab
    other = (xs[:, i] + torch.randint(1, vocab, (B,), generator=gen)) % vocab  # an input different from x_i
    out = ys.clone()
    out[:, i] = task.label(params, other[:, None])[:, 0]
    return out


def _shared_prefix_vectors(model: nn.Module, tokenizer, template: Template, rows: list[tuple[tuple[Pair, ...], tuple[str, ...]]],
                           layer: int, rows_per_pass: int) -> Tensor | None:
    """``[N, M, D]``: the state after block ``layer`` at the final arrow of ``template.prompt(demos, q)``
    for each row's M dummy queries q, one forward over the demonstrations (:func:`engine.extract_continuations`).
    None where the texts do not split into a prefix and a query line of equal token lengths
    (e.g. multi-token words): then the caller runs the whole texts."""
    prefixes = [tokenizer(template.prompt(demos, "")[:-len(template.line(""))])["input_ids"] for demos, _ in rows]
    lines = [[tokenizer(template.line(q))["input_ids"] for q in dummies] for _, dummies in rows]
    if len({len(p) for p in prefixes}) != 1 or any(len({len(ls[j]) for ls in lines}) != 1 for j in range(len(lines[0]))):
        return None
    for (demos, dummies), prefix, ls in zip(rows, prefixes, lines):
        if any(tokenizer(template.prompt(demos, q))["input_ids"] != prefix + line for q, line in zip(dummies, ls)):
            return None
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(rows), rows_per_pass):
        stop = min(start + rows_per_pass, len(rows))
        conts = [torch.tensor([ls[j] for ls in lines[start:stop]], device=device) for j in range(len(lines[0]))]
        states_ = engine.extract_continuations(model, torch.tensor(prefixes[start:stop], device=device), conts, layer)
        out.append(states_.transpose(0, 1).float().cpu())
    return torch.cat(out)


def llm_demo_weights(model: nn.Module, tokenizer, task: WordTask, prompts: list[Prompt], layer: int,
                     template: Template, seed: int, rows_per_pass: int = 64) -> np.ndarray:
    """``[P, n]``: ``||tv^{-i} - tv||`` at ``layer`` for each prompt and corrupted demonstration i.

    The task vector is the state after block ``layer`` at the final arrow, averaged over the
    prompt's dummy queries; clean and corrupted vectors use the same dummies. Where every text
    splits into equal-length token blocks, the demonstrations run once for all dummies (KV cache).
    """
    rng = np.random.default_rng(seed)
    rows = [(demos, p.dummies) for p in prompts
            for demos in [p.demos] + [corrupt_demo(p.demos, i, task.pairs, rng) for i in range(len(p.demos))]]
    n, m = len(prompts[0].demos), len(prompts[0].dummies)
    tv = _shared_prefix_vectors(model, tokenizer, template, rows, layer, rows_per_pass)
    if tv is None:
        texts = [template.prompt(demos, q) for demos, dummies in rows for q in dummies]
        last = torch.full((len(texts), 1), -1, dtype=torch.long)
        tv = states(model, tokenizer, texts, last, rows_per_pass, up_to=layer)[layer, :, 0]  # [N * M, D]
    tv = tv.reshape(len(prompts), n + 1, m, -1).mean(2)
    return (tv[:, 1:] - tv[:, :1]).norm(dim=-1).numpy()


@torch.no_grad()
def scratch_demo_weights(model: nn.Module, task, layout: str, k: int, n_prompts: int, layer: int,
                         seed: int) -> np.ndarray:
    """``[P, k-1]``: the same on tvlib's GPT, k-example token prompts (the last x is the dummy query)."""
    from tvlib.scratch import tasks as scratch_tasks
    from tvlib.scratch.gpt import model_inputs, query_positions

    gen = torch.Generator().manual_seed(seed)
    params = task.sample_tasks(n_prompts, gen)
    xs = task.sample_x(n_prompts, k, gen, params)
    ys = task.label(params, xs)
    variants = [ys] + [corrupt_labels(task, params, xs, ys, i, gen) for i in range(k - 1)]

    def vector(labels: Tensor) -> Tensor:
        inputs = model_inputs(model, scratch_tasks.build_prompts(task, layout, xs, labels).inputs)
        return engine.extract(model, inputs, query_positions(n_prompts)[:, None])[layer, :, 0]

    tv = torch.stack([vector(v) for v in variants], 1)  # [P, k, D]
    return (tv[:, 1:] - tv[:, :1]).norm(dim=-1).numpy()


def dev_sweep(model: nn.Module, tokenizer, task: WordTask, cfg: EvalConfig, seed: int) -> LayerSweep:
    """TaskV, zero-shot and ICL *errors* on the dev prompts of :func:`tvlib.llm.evaluate.evaluate_task`
    (same prompts, same vectors): its layer choice alone, as a one-seed :class:`LayerSweep`."""
    dev_prompts, _ = dev_test_prompts(task, cfg.n_dev, 1, cfg.n_shots, cfg.n_dummies, seed)
    dev = prepare(model, tokenizer, dev_prompts, cfg)
    layers = list(range(engine.num_layers(model)))
    curve = injection_sweep(model, tokenizer, dev.zero_shot, dev.positions[:, -1:], dev.vectors[:, :, -1:],
                            dev.answers, layers, rows_per_pass=cfg.rows_per_pass)

    def error(texts: list[str]) -> float:
        return float((predict(model, tokenizer, texts, cfg.rows_per_pass) != dev.answers).float().mean())

    icl = error([cfg.template.prompt(p.demos, p.query[0]) for p in dev_prompts])
    return LayerSweep(1 - np.asarray(curve)[None], [error(dev.zero_shot)], [icl])


def vector_works(sweep: LayerSweep, min_recovery: float = 0.5) -> bool:
    """The precondition for reading demonstration weights off a task vector: the model learned ICL
    (:func:`tvlib.analysis.learned_icl`) and the vector at the best layer closes at least
    ``min_recovery`` of the zero-shot-to-ICL gap."""
    return bool(sweep.learned_icl and sweep.recovery() >= min_recovery)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two profiles."""
    from scipy.stats import spearmanr

    return float(spearmanr(np.asarray(a), np.asarray(b)).statistic)


__all__ = ["STAGES", "Roles", "concatenation_share", "corrupt_demo", "corrupt_labels", "dev_sweep", "formation_share",
           "graph_tokens", "llm_demo_weights", "mean_map", "peak_layer", "role_shares", "scratch_demo_weights", "spearman",
           "stage_edges", "triplet_roles", "vector_works", "word_prompts", "word_roles"]
