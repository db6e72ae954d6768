"""Benchmark: a TaskV-M layer sweep on SmolLM2-135M, batched engine vs the per-layer loop.

TaskV-M (Dong et al. 2025, Sec. 6.2) injects N+1 vectors, one per arrow of an N-shot prompt (the
N demonstrations' arrows, then the query's), all at the same layer l; the layer sweep does this for
every l. Measured side by side in one run, on N >= 50 prompts of one word task (``lower_upper``),
N = 4 shots, the vectors the last N+1 arrow states of a 10-shot prompt (TaskV-MS; which vectors are
injected does not change the cost):

- *Dong et al.'s loop*, reimplemented (no code copied) from ``multi_task_vector_accuracy_by_layer``
  and ``modulated_forward`` (Yuxin-Dong/ICL-TaskVector@5fd7aac): per layer, one forward of the
  whole batch, ``use_cache=False``, logits of every position;
- ``engine.layer_sweep_loop``, our strict loop (whole prompt per layer, last-position logits);
- ``engine.layer_sweep(method="cached")``: the columns before the first injected arrow once, with a
  KV cache, then the rest of the prompt for every layer in batches, hooks injecting;
- ``engine.layer_sweep``'s default (here the truncated stack: one clean forward gives every block's
  output states; for layer l the rest of the prompt enters as the clean states after block l with
  the vectors written in, and runs blocks l+1.. only, one forward per layer), timed on its first
  use on a model (it checks a sample of its own rows against hooks; the time in every ratio) and
  once the model is checked.

No exact method can reach the strict loop's cost divided by much more than the work ratio printed
below: for layer l the columns from the first injected arrow on (column 3 here) must run through
blocks l+1.. whatever is shared, about L(L-1)/2 of the strict loop's L^2 block passes.

Every method runs ``--repeats`` times, round-robin; the minimum is reported. Prints each speed-up,
the ratio of the work in token-block evaluations (the LM head in block equivalents), and checks
that predictions equal the strict loop's.

Run: ``.venv/bin/python benchmarks/bench_multi.py [--prompts 50] [--threads 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import torch
from bench_sweep import best_of, block_equivalents

from tvlib import engine
from tvlib.llm import load, wordtasks


@dataclass
class BenchConfig:
    """What to sweep: task, prompts, shots of the injection prompt and of the extraction prompt."""

    task: str = "lower_upper"
    n_prompts: int = 50
    n_shots: int = 4
    n_source: int = 10
    seed: int = 0
    rows_per_pass: int = 256


def arrow_positions(inputs: dict, arrow_id: int, count: int) -> torch.Tensor:
    """Columns [B, count] of the last `count` arrow tokens of every row (left-padded inputs)."""
    ids = inputs["input_ids"]
    found = [torch.nonzero(row == arrow_id).squeeze(1)[-count:] for row in ids]
    if any(len(f) != count for f in found):
        raise ValueError(f"every prompt needs {count} arrows")
    return torch.stack(found)


def sweep_inputs(model, tokenizer, cfg: BenchConfig) -> tuple[dict, torch.Tensor, torch.Tensor, torch.Tensor]:
    """N-shot inputs, their arrow columns [B, N+1], vectors [L, B, N+1, D] and answer ids [B]."""
    template = wordtasks.Template()
    task = wordtasks.first_token_filter(wordtasks.load_task(cfg.task), tokenizer, template)
    rng = np.random.default_rng(cfg.seed)
    queries = tuple(task.pairs[i] for i in rng.choice(len(task.pairs), size=cfg.n_prompts))
    source = wordtasks.sample_prompts(task, queries, cfg.n_source, n_dummies=1, rng=rng)
    target = wordtasks.sample_prompts(task, queries, cfg.n_shots, n_dummies=1, rng=rng)
    arrow = tokenizer(template.arrow, add_special_tokens=False)["input_ids"]
    if len(arrow) != 1:
        raise ValueError(f"the arrow {template.arrow!r} must be one token, got {arrow}")
    n_vectors = cfg.n_shots + 1
    src = engine.encode(tokenizer, [template.prompt(p.demos, p.dummies[0]) for p in source], model)
    vectors = engine.extract(model, src, arrow_positions(src, arrow[0], n_vectors))
    inputs = engine.encode(tokenizer, [template.prompt(p.demos, p.query[0]) for p in target], model)
    answers = torch.tensor([wordtasks.answer_first_token(tokenizer, template, p.query[1]) for p in target])
    return inputs, arrow_positions(inputs, arrow[0], n_vectors), vectors, answers


def dong_loop(model, inputs: dict, positions: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Dong et al.'s TaskV-M sweep: per layer, the whole prompt without a cache, logits of every position."""
    out = []
    with torch.no_grad():
        for layer in range(engine.num_layers(model)):
            with engine.inject(model, layer, positions, vectors[layer]):
                out.append(model(**inputs, use_cache=False).logits[:, -1])
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=BenchConfig.n_prompts)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3, help="runs per method; the minimum is reported")
    parser.add_argument("--skip-dong", action="store_true", help="leave out Dong et al.'s loop and the cached path "
                        "(the slowest; the strict loop stays, as the reference of the predictions)")
    args = parser.parse_args()
    if args.prompts < 1 or args.repeats < 1:
        raise SystemExit(f"--prompts and --repeats must be >= 1, got {args.prompts} and {args.repeats}")
    torch.set_num_threads(args.threads)
    cfg = BenchConfig(n_prompts=args.prompts)
    model, tokenizer = load.load_llm()
    inputs, positions, vectors, answers = sweep_inputs(model, tokenizer, cfg)
    n_layers, head = engine.num_layers(model), block_equivalents(model)
    seq_len, cut = inputs["input_ids"].shape[1], int(positions.min())
    rest = seq_len - cut
    print(f"TaskV-M sweep: task {cfg.task}, {cfg.n_prompts} prompts x {n_layers} layers, {cfg.n_shots}-shot prompts of "
          f"{seq_len} tokens, {cfg.n_shots + 1} vectors each (first arrow at column {cut}), {args.threads} threads, "
          f"best of {args.repeats}")
    # Work per prompt in token-block evaluations, the LM head counted as `head` blocks per token.
    work = {
        "Dong et al. loop": n_layers * seq_len * (n_layers + head),
        "strict loop": n_layers * (seq_len * n_layers + head),
        "cached": cut * n_layers + n_layers * (rest * n_layers + head),
        "default": seq_len * n_layers + rest * n_layers * (n_layers - 1) / 2 + n_layers * head,
    }
    sweep = dict(per_layer=True, rows_per_pass=cfg.rows_per_pass)

    def first_use() -> torch.Tensor:
        engine.forget_truncation_check(model)  # as on a freshly loaded model: the sweep checks itself
        return engine.layer_sweep(model, inputs, positions, vectors, **sweep)

    methods = {
        "Dong et al. loop": lambda: dong_loop(model, inputs, positions, vectors),
        "strict loop": lambda: engine.layer_sweep_loop(model, inputs, positions, vectors, per_layer=True),
        "cached": lambda: engine.layer_sweep(model, inputs, positions, vectors, method="cached", **sweep),
        "default, first use": first_use,
        "default": lambda: engine.layer_sweep(model, inputs, positions, vectors, **sweep),
    }
    if args.skip_dong:
        methods = {k: v for k, v in methods.items() if k not in ("Dong et al. loop", "cached")}
    results, seconds = best_of(args.repeats, methods)
    ok, reason = engine.truncation_verdict(model, kind="span")
    print(f"default path: {'truncated' if ok else 'cached (truncation rejected: ' + reason + ')'}; first use "
          f"{seconds['default, first use']:.2f} s (checks a sample of its own rows against hooks), model already "
          f"checked {seconds['default']:.2f} s; the first-use time is the one in every ratio below")
    t_default = seconds["default, first use"]
    for name in [m for m in ("Dong et al. loop", "strict loop", "cached") if m in seconds]:
        print(f"{name:17s} {seconds[name]:6.2f} s -> default {t_default:5.2f} s is {seconds[name] / t_default:4.1f}x "
              f"faster ({seconds[name] / seconds['default']:.1f}x once checked; work ratio "
              f"{work[name] / work['default']:.1f}x)")
    for name in [m for m in ("Dong et al. loop", "strict loop") if m in seconds]:
        ratio = seconds[name] / t_default
        print(f"target >= 3x over {name}: {ratio:.1f}x, {'met' if ratio >= 3 else 'NOT met'}")
    reference = results["strict loop"].argmax(-1)
    for name, out in results.items():
        if name != "strict loop":
            print(f"{name} vs strict loop: identical predictions: {torch.equal(reference, out.argmax(-1))}; max "
                  f"|logit difference| {(results['strict loop'] - out).abs().max().item():.2e}")
    accuracy = (reference == answers.unsqueeze(0)).float().mean(1)
    print(f"TaskV-MS accuracy by layer: {' '.join(f'{a:.2f}' for a in accuracy.tolist())}")


if __name__ == "__main__":
    main()
