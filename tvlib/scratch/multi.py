"""TaskV, TaskV-M and TaskV-MS in GPTs trained from scratch on triplet prompts (our reconstruction).

Dong et al. test multi-vector injection on LLMs only; here it runs on token maps. Each row draws
one map; the injection prompt is N-shot (N demonstrations and the query, N+1 arrows); the source
prompts are ``n_source``-shot prompts of the same map followed by one dummy query (one dummy, not the
authors' two). TaskV: the final arrow of source 0 replaces the query's arrow; TaskV-M: the final
arrow of source t replaces arrow t; TaskV-MS: the last N+1 arrows of source 0 replace the N+1
arrows. Every layer is swept at once by :func:`tvlib.engine.layer_sweep`.
"""

from __future__ import annotations

import numpy as np
import torch

from tvlib import engine
from tvlib.scratch import tasks
from tvlib.scratch.gpt import GPT, model_inputs


@torch.no_grad()
def multi_vector_errors(model: GPT, task: tasks.Task, n_shots: int, n_source: int, n: int,
                        seed: int) -> dict[str, np.ndarray]:
    """Errors of ``n`` rows: "Baseline" (N-shot ICL, [1]) and per method the error by layer [L]."""
    if n_shots < 0 or n_source < n_shots + 1:
        raise ValueError(f"need 0 <= n_shots and n_source >= n_shots + 1, got {n_shots} and {n_source}")
    gen = torch.Generator().manual_seed(seed)
    params = task.sample_tasks(n, gen)
    k = n_shots + 1
    sources = [tasks.sample_prompts(task, "triplet", n, n_source + 1, gen, tasks=params) for _ in range(k)]
    states = []
    for src in sources:  # [L, n, n_source + 1, D]: every arrow of the source, the dummy query's last
        states.append(engine.extract(model, model_inputs(model, src.inputs), src.answer_pos.expand(n, -1)))
    target = tasks.sample_prompts(task, "triplet", n, k, gen, tasks=params)
    inputs = model_inputs(model, target.inputs)
    answer = target.targets[:, -1]
    out = {"Baseline": tasks.error(task, model(**inputs)[:, -1], answer).mean(0, keepdim=True).numpy()}
    vectors = {"TaskV": states[0][:, :, -1:], "TaskV-M": torch.stack([s[:, :, -1] for s in states], 2),
               "TaskV-MS": states[0][:, :, -k:]}
    arrows = target.answer_pos.expand(n, -1)
    for method, vecs in vectors.items():
        if method != "TaskV" and n_shots == 0:
            continue
        pos = arrows[:, -vecs.shape[2]:]
        logits = engine.layer_sweep(model, inputs, pos, vecs, per_layer=True)  # [L, n, V]
        out[method] = tasks.error(task, logits, answer.expand(logits.shape[0], -1)).mean(1).numpy()
    return out
