"""TaskV, TaskV-M and TaskV-MS on word tasks (Dong et al. 2025, Sec. 6.2, App. B.2-B.3).

Every injection prompt is N-shot, ``example:x->y`` lines then the query ``example:x->``; its arrows
are the N demonstrations' and the query's. Vectors are read from 10-shot source prompts whose query
is a dummy input (never the test query), averaged over the dummies, at every layer:

- **TaskV**: the final arrow of source 0 replaces the query's arrow only;
- **TaskV-M**: the final arrow of source t (t = 0..N, independently drawn demonstrations, the same
  test query excluded) replaces arrow t of the N-shot prompt, in order, all at one layer;
- **TaskV-MS**: the last N+1 arrows of source 0 replace the N+1 arrows, in order.

Our reconstruction: each item draws ``n_sources`` source prompts once, and every N uses the first
N+1 of them (the authors draw them afresh per N). The layer is chosen on dev items; the tables
print the best dev accuracy over layers, which :class:`MultiRun` also keeps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from tvlib import engine
from tvlib.llm.wordtasks import Pair, Template, WordTask, answer_first_token

METHODS = ("Baseline", "TaskV", "TaskV-M", "TaskV-MS")
# Dong et al.'s Table 2 categories for our word tasks (ours; the paper's task lists differ).
CATEGORIES = {"country_capital": "Knowledge", "lower_upper": "Algorithmic", "upper_lower": "Algorithmic",
              "next_letter": "Algorithmic", "prev_letter": "Algorithmic", "copy": "Algorithmic",
              "list_first": "Algorithmic", "list_last": "Algorithmic",
              "english_french": "Translation", "french_english": "Translation", "english_spanish": "Translation",
              "spanish_english": "Translation", "present_past": "Linguistic", "past_present": "Linguistic",
              "singular_plural": "Linguistic", "plural_singular": "Linguistic", "present_gerund": "Linguistic",
              "gerund_present": "Linguistic", "antonym": "Linguistic"}


def category(task: str) -> str:
    """The Table 2 category of a word task: bijections are "Bijection", the rest by :data:`CATEGORIES`."""
    if task.startswith("bij_"):
        return "Bijection"
    if task not in CATEGORIES:
        raise ValueError(f"task {task!r} has no category; categorised: {', '.join(CATEGORIES)} and bij_*")
    return CATEGORIES[task]
ARROWS = ("all", "demos", "query")  # which arrows of the N-shot prompt receive TaskV-M's vectors


def arrow_id(tokenizer, template: Template) -> int:
    """The arrow's token id; the arrow must be one token (as the authors' code assumes)."""
    ids = tokenizer(template.arrow, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"the arrow {template.arrow!r} must be one token, got {ids}")
    return ids[0]


def arrow_positions(input_ids: Tensor, arrow: int, count: int) -> Tensor:
    """Columns [B, count] of the last ``count`` arrow tokens of every row, left to right."""
    found = [torch.nonzero(row == arrow).squeeze(1)[-count:] for row in input_ids]
    short = [i for i, f in enumerate(found) if len(f) != count]
    if short:
        raise ValueError(f"row {short[0]} has {len(found[short[0]])} arrow tokens, {count} needed")
    return torch.stack(found)


@dataclass(frozen=True)
class Item:
    """One test query with its N-shot demonstrations and the source prompts' demonstrations."""

    query: Pair
    demos: tuple[Pair, ...]  # the longest injection prompt's demonstrations; N-shot uses the first N
    sources: tuple[tuple[Pair, ...], ...]  # n_sources demonstration sets of n_source_shots pairs
    dummies: tuple[tuple[str, ...], ...]  # per source, the dummy queries the vectors are read with


def sample_items(task: WordTask, queries: tuple[Pair, ...], max_shots: int, n_sources: int, n_source_shots: int,
                 n_dummies: int, rng: np.random.Generator) -> list[Item]:
    """One item per query; everything drawn from the other pairs, demonstrations of one source distinct."""
    need = n_source_shots + n_dummies + 1
    if len(task.pairs) < max(need, max_shots + 1):
        raise ValueError(f"task {task.name!r} has {len(task.pairs)} pairs; {n_source_shots} source shots + "
                         f"{n_dummies} dummies + the query need {need}")
    items = []
    for query in queries:
        others = [p for p in task.pairs if p[0] != query[0]]
        demos = tuple(others[i] for i in rng.choice(len(others), size=max_shots, replace=False))
        sources, dummies = [], []
        for _ in range(n_sources):
            pick = [others[i] for i in rng.choice(len(others), size=n_source_shots + n_dummies, replace=False)]
            sources.append(tuple(pick[:n_source_shots]))
            dummies.append(tuple(x for x, _ in pick[n_source_shots:]))
        items.append(Item(query, demos, tuple(sources), tuple(dummies)))
    return items


def _encode(model: nn.Module, tokenizer, texts: list[str]) -> dict:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in engine.encode(tokenizer, texts, model).items()}


def source_states(model: nn.Module, tokenizer, template: Template, items: list[Item], n_arrows: int,
                  rows_per_pass: int = 64) -> Tensor:
    """States [L, B, S, n_arrows, D] of the last ``n_arrows`` arrows of every source, mean over dummies."""
    arrow = arrow_id(tokenizer, template)
    texts = [template.prompt(src, d) for it in items for src, ds in zip(it.sources, it.dummies) for d in ds]
    out = []
    for lo in range(0, len(texts), rows_per_pass):
        inputs = _encode(model, tokenizer, texts[lo:lo + rows_per_pass])
        pos = arrow_positions(inputs["input_ids"].cpu(), arrow, n_arrows)
        out.append(engine.extract(model, inputs, pos).float().cpu())
    states = torch.cat(out, dim=1)
    n_src, n_dum = len(items[0].sources), len(items[0].dummies[0])
    return states.view(states.shape[0], len(items), n_src, n_dum, n_arrows, -1).mean(3)


def method_vectors(states: Tensor, method: str, n_shots: int) -> Tensor:
    """Vectors [L, B, P, D] for the arrows of an N-shot prompt (P = 1 for TaskV, else N+1), in order.

    ``states`` [L, B, S, A, D] as from :func:`source_states` (A arrows per source, the last = final).
    """
    k = n_shots + 1
    if method == "TaskV":
        return states[:, :, 0, -1:]
    if method == "TaskV-M":
        if states.shape[2] < k:
            raise ValueError(f"TaskV-M with {n_shots} shots needs {k} sources, got {states.shape[2]}")
        return states[:, :, :k, -1]
    if method == "TaskV-MS":
        if states.shape[3] < k:
            raise ValueError(f"TaskV-MS with {n_shots} shots needs {k} arrows per source, got {states.shape[3]}")
        return states[:, :, 0, -k:]
    raise ValueError(f"method {method!r} is not one of {', '.join(METHODS[1:])}")


def sweep_accuracy(model: nn.Module, tokenizer, template: Template, texts: list[str], answers: Tensor,
                   vectors: Tensor, arrows: str = "all", rows_per_pass: int = 256) -> np.ndarray:
    """Accuracy [L] of injecting ``vectors`` [L, B, P, D] at layer l into the last P arrows of ``texts``.

    ``arrows`` = "demos" keeps only the first P-1 (the demonstration arrows), "query" only the last.
    """
    if arrows not in ARROWS:
        raise ValueError(f"arrows {arrows!r} is not one of {', '.join(ARROWS)}")
    inputs = _encode(model, tokenizer, texts)
    pos = arrow_positions(inputs["input_ids"].cpu(), arrow_id(tokenizer, template), vectors.shape[2])
    keep = {"all": slice(None), "demos": slice(0, -1), "query": slice(-1, None)}[arrows]
    pos, vectors = pos[:, keep], vectors[:, :, keep]
    if pos.shape[1] == 0:
        raise ValueError("no demonstration arrows to inject into: a 0-shot prompt has only the query's arrow")
    logits = engine.layer_sweep(model, inputs, pos, vectors, per_layer=True, rows_per_pass=rows_per_pass)
    return (logits.argmax(-1).cpu() == answers).float().mean(1).numpy()


def plain_correct(model: nn.Module, tokenizer, texts: list[str], answers: Tensor) -> np.ndarray:
    """Per prompt, whether greedy first-token decoding is right on plain prompts (the Baseline)."""
    with torch.no_grad():
        pred = engine.last_logits(model, _encode(model, tokenizer, texts)).argmax(-1).cpu()
    return (pred == answers).numpy()


def layer_correct(model: nn.Module, tokenizer, template: Template, texts: list[str], answers: Tensor,
                  vectors: Tensor, layer: int, arrows: str = "all") -> np.ndarray:
    """Per prompt, whether the answer is right with ``vectors`` [L, B, P, D] injected at ``layer`` only
    (one forward: the test items need the dev-chosen layer, not a sweep)."""
    if arrows not in ARROWS:
        raise ValueError(f"arrows {arrows!r} is not one of {', '.join(ARROWS)}")
    if not 0 <= layer < vectors.shape[0]:
        raise ValueError(f"layer {layer} is not in 0..{vectors.shape[0] - 1}")
    inputs = _encode(model, tokenizer, texts)
    pos = arrow_positions(inputs["input_ids"].cpu(), arrow_id(tokenizer, template), vectors.shape[2])
    keep = {"all": slice(None), "demos": slice(0, -1), "query": slice(-1, None)}[arrows]
    with torch.no_grad(), engine.inject(model, layer, pos[:, keep], vectors[layer][:, keep]):
        pred = engine.last_logits(model, inputs).argmax(-1).cpu()
    return (pred == answers).numpy()


@dataclass
class MultiRun:
    """One task, one trial: the Baseline and the vector methods on test items (per item, right or
    not); the vector methods' dev accuracy by layer and the layer it chooses."""

    task: str
    baseline: dict[int, np.ndarray]  # N -> [n_test] N-shot ICL right or not
    dev: dict[tuple[str, int], np.ndarray]  # (method or method/arrows, N) -> [L] dev accuracy
    test: dict[tuple[str, int], np.ndarray]  # same keys -> [n_test] right or not at the chosen layer

    def layer(self, key: tuple[str, int]) -> int:
        """The layer chosen on dev (the first best, as the authors' argmax)."""
        return int(np.argmax(self.dev[key]))

    def chosen(self, key: tuple[str, int]) -> float:
        """Test accuracy at the layer chosen on dev."""
        return float(np.mean(self.test[key]))

    def best_dev(self, key: tuple[str, int]) -> float:
        """The paper's number: the best dev accuracy over layers."""
        return float(self.dev[key].max())


def evaluate_multi(model: nn.Module, tokenizer, task: WordTask, shots: list[int], n_dev: int, n_test: int,
                   seed: int, template: Template = Template(), n_source_shots: int = 10, n_dummies: int = 2,
                   diagnose: tuple[int, ...] = (), rows_per_pass: int = 256) -> MultiRun:
    """Baseline, TaskV, TaskV-M and TaskV-MS for N in ``shots`` on dev and test items of one task.

    Dev items are swept over every layer; test items run at the dev-chosen layer only. For N in
    ``diagnose`` (N >= 1), TaskV-M's vectors are also injected at the demonstration arrows only
    ("TaskV-M/demos") and at the query arrow alone ("TaskV-M/query").
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(task.pairs))
    half = len(order) // 2
    max_n = max(shots)
    splits = {}
    for name, pool, n in (("dev", order[:half], n_dev), ("test", order[half:], n_test)):
        idx = rng.choice(pool, size=n, replace=n > len(pool))
        items = sample_items(task, tuple(task.pairs[i] for i in idx), max_n, max_n + 1, n_source_shots,
                             n_dummies, rng)
        states = source_states(model, tokenizer, template, items, max_n + 1)
        answers = torch.tensor([answer_first_token(tokenizer, template, it.query[1]) for it in items])
        splits[name] = (items, states, answers)
    run = MultiRun(task.name, {}, {}, {})
    for n_shots in shots:
        texts = {name: [template.prompt(it.demos[:n_shots], it.query[0]) for it in items]
                 for name, (items, _, _) in splits.items()}
        run.baseline[n_shots] = plain_correct(model, tokenizer, texts["test"], splits["test"][2])
        methods = [("TaskV", "all")] + ([("TaskV-M", "all"), ("TaskV-MS", "all")] if n_shots else [])
        if n_shots in diagnose and n_shots:
            methods += [("TaskV-M", "demos"), ("TaskV-M", "query")]
        for method, arrows in methods:
            key = (method if arrows == "all" else f"{method}/{arrows}", n_shots)
            _, states, answers = splits["dev"]
            run.dev[key] = sweep_accuracy(model, tokenizer, template, texts["dev"], answers,
                                          method_vectors(states, method, n_shots), arrows, rows_per_pass)
            _, states, answers = splits["test"]
            run.test[key] = layer_correct(model, tokenizer, template, texts["test"], answers,
                                          method_vectors(states, method, n_shots), run.layer(key), arrows)
    return run


def paired_gain(runs: dict[str, list[MultiRun]], method: str, over: str, shots: list[int],
                tasks: list[str] | None = None) -> tuple[float, float, int]:
    """Points gained by ``method`` over ``over`` on the same test items, pooled over ``tasks`` (default
    all), trials and N in ``shots``: (mean, its standard error, number of paired items).

    Both methods answer the same items, so the per-item difference (-1, 0 or +1) carries the
    comparison's uncertainty; ``over`` may be "Baseline".
    """
    diffs = []
    for task in runs if tasks is None else tasks:
        for run in runs[task]:
            for n in shots:
                if (method, n) not in run.test:
                    raise ValueError(f"{method!r} has no test results at N = {n} for {task!r}")
                other = run.baseline[n] if over == "Baseline" else run.test[(over, n)]
                diffs.append(run.test[(method, n)].astype(float) - other.astype(float))
    d = np.concatenate(diffs) if diffs else np.zeros(0)
    if d.size < 2:
        raise ValueError(f"need at least 2 paired items, got {d.size}")
    return 100 * float(d.mean()), 100 * float(d.std(ddof=1) / np.sqrt(d.size)), int(d.size)


def table(runs: dict[str, list[MultiRun]], categories: dict[str, str], model: str,
          value: str = "chosen") -> "pd.DataFrame":
    """Rows (model, n_shots, method, category, mean, std) in percent, as ``tvlib.papers`` tables.

    ``runs``: task -> one MultiRun per trial; ``categories``: task -> category. Per trial the tasks
    of a category are averaged, then mean and std over trials (the paper's order); "Average" is
    the mean of the categories. ``value``: "chosen" (test at the dev-chosen layer) or "best_dev"
    (the paper's number: the best dev accuracy over layers). The Baseline is test accuracy.
    """
    import pandas as pd

    if value not in ("chosen", "best_dev"):
        raise ValueError(f"value {value!r} is not one of chosen, best_dev")
    trials = {len(r) for r in runs.values()}
    if len(trials) != 1:
        raise ValueError(f"every task needs the same number of trials, got {sorted(trials)}")
    first = next(iter(runs.values()))[0]
    keys = sorted({("Baseline", n) for n in first.baseline} | set(first.test), key=lambda k: (k[1], k[0]))
    cats = list(dict.fromkeys(categories[t] for t in runs))
    rows = []
    for method, n in keys:
        per_cat = []
        for cat in cats:
            def score(r: MultiRun) -> float:
                if method == "Baseline":
                    return float(np.mean(r.baseline[n]))
                return r.chosen((method, n)) if value == "chosen" else r.best_dev((method, n))
            per_cat.append(np.mean([[score(r) for r in runs[t]] for t in runs if categories[t] == cat], axis=0))
        for cat, vals in zip(cats + ["Average"], per_cat + [np.mean(per_cat, axis=0)]):
            rows.append({"model": model, "n_shots": n, "method": method, "category": cat,
                         "mean": 100 * float(np.mean(vals)), "std": 100 * float(np.std(vals))})
    return pd.DataFrame(rows)


def gain(frame: "pd.DataFrame", method: str, over: str, category: str = "Average") -> dict[int, float]:
    """Points gained by ``method`` over ``over`` per N (rows of :func:`table` or a paper table)."""
    sub = frame[frame.category == category].pivot_table(index="n_shots", columns="method", values="mean")
    sub = sub.dropna(subset=[c for c in (method, over) if c in sub])
    if method not in sub or over not in sub:
        raise ValueError(f"methods {method!r} and {over!r} must both be in the table, got {list(sub.columns)}")
    return {int(n): float(sub.loc[n, method] - sub.loc[n, over]) for n in sub.index}
