"""Benchmark: a full task-vector layer sweep on SmolLM2-135M, batched engine vs per-layer loop.

Measures, side by side in one run:

1. Model load time: the first load (GGUF file dequantized, converted and cached by
   ``tvlib.llm.load_llm`` into a fresh temporary cache) versus a second, cached load; and the ratio.
2. The layer sweep of Hendel et al. (2023) for one word task (``lower_upper``): for each of
   N >= 50 prompts, the task vector of every layer l (residual stream at the last ``->`` of a
   5-shot prompt with another query) replaces the state at the ``->`` of the zero-shot query
   prompt at layer l; accuracy is the greedy first token per layer. Timed for
   the anchor-style loop (one forward per layer computing the logits of every position, as
   Hendel et al.'s ``batch_forward`` does with ``model(**inputs)``),
   ``engine.layer_sweep_loop`` (one forward per layer, logits of the last position only: a
   stricter baseline),
   ``engine.layer_sweep(method="cached")`` (the previous default: KV-cached prefix, the last token
   through all blocks for every layer) and ``engine.layer_sweep`` with its default method
   (``"auto"``: here the truncated stack, the injected vector through blocks l+1.. only; its
   one-off per-model check, ``engine.supports_truncation``, is timed separately and included in
   the default's ratios). Prints the times, the speed-ups over the loop and over the cached path,
   and checks that the per-layer predictions and accuracies are identical.

Run: ``.venv/bin/python benchmarks/bench_sweep.py [--prompts 52] [--threads 2] [--skip-load]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

from tvlib import engine, llm, wordtasks


@dataclass
class BenchConfig:
    """What to sweep: task, prompts, shots; seed fixes the prompts."""

    task: str = "lower_upper"
    n_prompts: int = 52
    n_shots: int = 5
    seed: int = 0
    rows_per_pass: int = 256


def timed(fn, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def anchor_loop(model, inputs: dict, positions, vectors) -> torch.Tensor:
    """The prior code's sweep: per layer, one forward with all-position logits, then the last row."""
    out = []
    with torch.no_grad():
        for layer in range(engine.num_layers(model)):
            with engine.inject(model, layer, positions, vectors[layer]):
                out.append(model(**inputs).logits[:, -1])
    return torch.stack(out)


def load_times() -> tuple[float, float]:
    """Seconds for a first (GGUF -> converted cache) and a second (cached) load_llm."""
    cache = tempfile.mkdtemp(prefix="tvlib-bench-cache-")
    old = os.environ.get(llm.CACHE_ENV)
    os.environ[llm.CACHE_ENV] = cache
    try:
        _, first = timed(llm.load_llm)
        _, cached = timed(llm.load_llm)
    finally:
        shutil.rmtree(cache, ignore_errors=True)
        if old is None:
            os.environ.pop(llm.CACHE_ENV)
        else:
            os.environ[llm.CACHE_ENV] = old
    return first, cached


def sweep_inputs(model, tokenizer, cfg: BenchConfig) -> tuple[dict, torch.Tensor, torch.Tensor]:
    """Zero-shot query inputs, per-layer task vectors [L, N, D] and answer token ids [N]."""
    template = wordtasks.Template()
    task = wordtasks.first_token_filter(wordtasks.load_task(cfg.task), tokenizer, template)
    rng = np.random.default_rng(cfg.seed)
    queries = tuple(task.pairs[i] for i in rng.choice(len(task.pairs), size=cfg.n_prompts))
    prompts = wordtasks.sample_prompts(task, queries, cfg.n_shots, n_dummies=1, rng=rng)
    last = torch.full((cfg.n_prompts,), -1)
    icl = engine.encode(tokenizer, [template.prompt(p.demos, p.dummies[0]) for p in prompts], model)
    vectors = engine.extract(model, icl, last)
    zero = engine.encode(tokenizer, [template.prompt((), p.query[0]) for p in prompts], model)
    answers = torch.tensor([wordtasks.answer_first_token(tokenizer, template, p.query[1]) for p in prompts])
    return zero, vectors, answers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=BenchConfig.n_prompts)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--skip-load", action="store_true", help="skip the GGUF load-time measurement")
    args = parser.parse_args()
    if args.prompts < 1:
        raise SystemExit(f"--prompts must be >= 1, got {args.prompts}")
    torch.set_num_threads(args.threads)
    cfg = BenchConfig(n_prompts=args.prompts)

    if not args.skip_load:
        first, cached = load_times()
        print(f"model load: first (GGUF, converted and cached) {first:.1f} s, cached {cached:.1f} s, "
              f"ratio {first / cached:.1f}x")
    model, tokenizer = llm.load_llm()
    zero, vectors, answers = sweep_inputs(model, tokenizer, cfg)
    last = torch.full((cfg.n_prompts,), -1)
    n_layers = engine.num_layers(model)
    seq_len = zero["input_ids"].shape[1]
    print(f"sweep: task {cfg.task}, {cfg.n_prompts} prompts x {n_layers} layers, "
          f"query length {seq_len} tokens, {args.threads} threads")
    # Work in token x block evaluations: the loop runs every token through every block once per
    # injection layer; the cached path runs the prefix once and the last token through all blocks
    # once per layer; the truncated path runs the last token through blocks l+1.. only.
    loop_work, cached_work = n_layers * seq_len * n_layers, (seq_len - 1 + n_layers) * n_layers
    trunc_work = (seq_len - 1) * n_layers + n_layers * (n_layers - 1) // 2
    print(f"token-block evaluations per prompt: loop {loop_work}, cached {cached_work}, truncated {trunc_work} "
          f"(bounds on the speed-up from them: {loop_work / cached_work:.1f}x, {loop_work / trunc_work:.1f}x; "
          "the LM head, once per prompt and layer on every path, lowers both)")

    anchor, t_anchor = timed(anchor_loop, model, zero, last, vectors)
    loop, t_loop = timed(engine.layer_sweep_loop, model, zero, last, vectors, per_layer=True)
    cached, t_cached = timed(engine.layer_sweep, model, zero, last, vectors, per_layer=True,
                             rows_per_pass=cfg.rows_per_pass, method="cached")
    ok, t_check = timed(engine.supports_truncation, model)
    fast, t_fast = timed(engine.layer_sweep, model, zero, last, vectors, per_layer=True,
                         rows_per_pass=cfg.rows_per_pass)
    t_default = t_fast + t_check
    print(f"per-layer loop {t_loop:.2f} s; cached (previous default) {t_cached:.2f} s, "
          f"{t_loop / t_cached:.1f}x; default ({'truncated' if ok else 'cached: truncation rejected'}) "
          f"{t_fast:.2f} s + one-off check {t_check:.2f} s = {t_default:.2f} s, "
          f"{t_loop / t_default:.1f}x over the loop ({t_loop / t_fast:.1f}x without the check), "
          f"{t_cached / t_default:.1f}x over cached")
    print(f"anchor-style loop (all-position logits) {t_anchor:.2f} s: default is {t_anchor / t_default:.1f}x "
          f"faster ({t_anchor / t_fast:.1f}x without the check); identical predictions: "
          f"{torch.equal(anchor.argmax(-1), fast.argmax(-1))}")
    answers_row = answers.unsqueeze(0)
    accs = {name: (out.argmax(-1) == answers_row).float().mean(1)
            for name, out in (("loop", loop), ("cached", cached), ("default", fast))}
    for name, out in (("cached", cached), ("default", fast)):
        print(f"{name} vs loop: identical predictions: {torch.equal(loop.argmax(-1), out.argmax(-1))}; "
              f"identical accuracies: {torch.equal(accs['loop'], accs[name])}; "
              f"max |logit difference| {(loop - out).abs().max().item():.2e}")
    acc_fast = accs["default"]
    best = int(acc_fast.argmax())
    print(f"TV accuracy by layer: {' '.join(f'{a:.2f}' for a in acc_fast.tolist())} "
          f"(best layer {best}: {acc_fast[best]:.2f})")


if __name__ == "__main__":
    main()
