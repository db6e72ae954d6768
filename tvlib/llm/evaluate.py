"""Evaluate word tasks in a pretrained LM: zero-shot baseline, n-shot ICL, and task vectors (TV).

As in Hendel et al. (2023) and Dong et al. (2025): the task vector at layer l is the residual
stream (output of block l) at the last ``->`` of n-shot prompts whose query is *not* the test query,
averaged over ``n_dummies`` such queries; it replaces the state at the ``->`` of the zero-shot
prompt at layer l. Accuracy is greedy first-token accuracy (see ``wordtasks.first_token_filter``).
The layer is chosen on dev prompts; accuracy is reported on disjoint test prompts.

The per-layer sweep (layer-l vector at layer l, one position at the last token) runs in the
engine's batched :func:`engine.layer_sweep`. Beyond it, :func:`injection_sweep` also injects at a
window of consecutive layers and at several positions (the template tokens of the query line),
and adds instead of replacing; these probe where the task lives in the model (our reconstruction).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from tvlib import engine
from tvlib.analysis import LayerSweep
from tvlib.llm.wordtasks import (Prompt, Template, WordTask, answer_first_token, dev_test_prompts,
                                 first_token_filter, load_task, table1_columns)


@dataclass(frozen=True)
class EvalConfig:
    """How many prompts, shots and dummy queries; rows per forward pass bounds memory."""

    n_shots: int = 5
    n_dev: int = 16
    n_test: int = 24
    n_dummies: int = 2
    rows_per_pass: int = 256
    template: Template = field(default_factory=Template)


# ----------------------------------------------------------------------------- forward passes


def predict(model: nn.Module, tokenizer, texts: list[str], rows_per_pass: int) -> Tensor:
    """Greedy next token [N] after each text."""
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), rows_per_pass):
            inputs = engine.encode(tokenizer, texts[start:start + rows_per_pass], model)
            out.append(engine.last_logits(model, _on(inputs, model)).argmax(-1).cpu())
    return torch.cat(out)


def states(model: nn.Module, tokenizer, texts: list[str], positions: Tensor, rows_per_pass: int,
           up_to: int | None = None) -> Tensor:
    """Residual stream [L, N, P, D] of every layer at ``positions`` [N, P] (negative: from the end);
    layers 0..``up_to`` only if given (the forward stops there, :func:`tvlib.engine.extract`)."""
    out = []
    for start in range(0, len(texts), rows_per_pass):
        inputs = engine.encode(tokenizer, texts[start:start + rows_per_pass], model)
        out.append(engine.extract(model, _on(inputs, model), positions[start:start + rows_per_pass],
                                  up_to).float().cpu())
    return torch.cat(out, dim=1)


def _on(inputs: dict, model: nn.Module) -> dict:
    """Inputs moved to the model's device."""
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in inputs.items()}


def injection_sweep(model: nn.Module, tokenizer, texts: list[str], positions: Tensor, vectors: Tensor,
                    answers: Tensor, starts: list[int], mode: str = "replace", width: int = 1,
                    rows_per_pass: int = 256) -> np.ndarray:
    """Accuracy [S] of injecting ``vectors`` [L, N, P, D] into ``texts`` at ``positions`` [N, P].

    Entry s injects the layer-l vector at layer l = ``starts[s]``, and for ``width`` > 1 also at
    layers l+1..l+width-1 (each with its own layer's vector; layers past the last are skipped).
    One position at the last token with ``width`` 1 is the engine's per-layer sweep
    (:func:`engine.layer_sweep`, every layer in few batched passes, then the ``starts`` are
    picked); any other variant repeats each prompt once per start layer under
    :func:`engine.inject`, one row per (prompt, start layer).
    """
    n_layers, n, n_starts = vectors.shape[0], len(texts), len(starts)
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    if not all(0 <= l < n_layers for l in starts):
        raise ValueError(f"start layers {starts} must lie in 0..{n_layers - 1}")
    if width == 1 and positions.shape[1] == 1 and bool((positions == -1).all()):
        return _layer_sweep_accuracy(model, tokenizer, texts, vectors[:, :, 0], answers, mode,
                                     rows_per_pass)[starts]
    start = torch.tensor(starts).repeat(n)  # row r = (prompt r // S, start layer starts[r % S])
    prompt = torch.arange(n).repeat_interleave(n_starts)
    correct = torch.zeros(n * n_starts, dtype=torch.bool)
    with torch.no_grad():
        for lo in range(0, n * n_starts, rows_per_pass):
            rows = torch.arange(lo, min(lo + rows_per_pass, n * n_starts))
            inputs = _on(engine.encode(tokenizer, [texts[i] for i in prompt[rows]], model), model)
            with ExitStack() as stack:
                for k in range(width):
                    layer = start[rows] + k
                    valid = layer < n_layers
                    vecs = vectors[layer.clamp(max=n_layers - 1), prompt[rows]]
                    stack.enter_context(engine.inject(model, torch.where(valid, layer, -1), positions[prompt[rows]],
                                                      vecs, mode))
                pred = engine.last_logits(model, inputs).argmax(-1).cpu()
            correct[rows] = pred == answers[prompt[rows]]
    return correct.view(n, n_starts).float().mean(0).numpy()


def _layer_sweep_accuracy(model: nn.Module, tokenizer, texts: list[str], vectors: Tensor, answers: Tensor,
                          mode: str, rows_per_pass: int) -> np.ndarray:
    """Accuracy [L] of injecting the layer-l vector of ``vectors`` [L, N, D] at layer l, last token."""
    preds = layer_sweep_predictions(model, tokenizer, texts, vectors, mode, rows_per_pass)
    return (preds == answers).float().mean(1).numpy()


def layer_sweep_predictions(model: nn.Module, tokenizer, texts: list[str], vectors: Tensor, mode: str,
                            rows_per_pass: int) -> Tensor:
    """Greedy next token [L, N] after injecting the layer-l vector of ``vectors`` [L, N, D] at layer l, last token."""
    preds = []
    for lo in range(0, len(texts), rows_per_pass):
        inputs = _on(engine.encode(tokenizer, texts[lo:lo + rows_per_pass], model), model)
        logits = engine.layer_sweep(model, inputs, torch.full((inputs["input_ids"].shape[0],), -1),
                                    vectors[:, lo:lo + rows_per_pass], mode=mode, per_layer=True,
                                    rows_per_pass=rows_per_pass)  # [L, B, V]
        preds.append(logits.argmax(-1).cpu())
    return torch.cat(preds, dim=1)


# ----------------------------------------------------------------------------- one task


def query_line_positions(tokenizer, template: Template, query: str) -> list[int]:
    """Negative positions of the query line's template tokens: the prefix (``example``, ``:``), then the arrow.

    The arrow's last token comes last (-1): that is where the task vector is read and written.
    The line is assumed to tokenize the same inside a prompt as alone (true after a newline for
    BPE tokenizers that split on it); the prefix must tokenize to the line's first tokens.
    """
    line = tokenizer(template.line(query), add_special_tokens=False)["input_ids"]
    prefix = tokenizer(template.prefix, add_special_tokens=False)["input_ids"]
    if line[:len(prefix)] != prefix:
        raise ValueError(f"the prefix {template.prefix!r} does not tokenize to the start of {template.line(query)!r}")
    return [j - len(line) for j in range(len(prefix))] + [-1]


@dataclass
class TaskRun:
    """Everything measured for one task and one seed; accuracies are fractions in [0, 1].

    Curves are indexed by injection layer: every layer for ``tv_dev``/``tv_test``, the layers
    ``extra_layers`` for the other variants.
    """

    task: str
    baseline: float
    icl: float
    tv_dev: np.ndarray  # [L] TaskV, replace at the arrow, dev prompts
    tv_test: np.ndarray  # [L] same on test prompts
    extra_layers: list[int]
    add_test: np.ndarray  # add the ICL-induced shift at the arrow
    window_test: np.ndarray  # replace at the arrow at layers l..l+width-1
    positions_test: np.ndarray  # replace at the query line's template tokens (example, :, ->)
    mean_tv: Tensor  # [L, D] task vector averaged over test prompts (for decoding)
    tv_echo: np.ndarray  # [L] TaskV on test prompts: fraction of wrong answers that are the query's own first token
    icl_echo: float  # the same for n-shot ICL

    @property
    def sweep(self) -> LayerSweep:
        """TaskV by layer as the book's errors, ``1 - accuracy``, with the dev errors that choose the layer."""
        return LayerSweep(1 - self.tv_test, 1 - np.array([self.baseline]), 1 - np.array([self.icl]),
                          dev_by_layer=1 - self.tv_dev)

    @property
    def best_layer(self) -> int:
        """Injection layer chosen on dev prompts (the first best): the sweep's rule."""
        return self.sweep.best_layer

    @property
    def tv(self) -> float:
        """Test accuracy of TaskV at the dev-chosen layer."""
        return float(self.tv_test[self.best_layer])

    @property
    def echo_share(self) -> float:
        """Share of TaskV's test errors (dev-chosen layer) that repeat the query itself; NaN without errors.

        On lower<->upper an echo is the right letter in the wrong case; on a word bijection, the
        query's own form: the right item in the wrong direction, what a rank-one map predicts.
        """
        errors = 1 - self.tv
        return float("nan") if errors == 0 else float(self.tv_echo[self.best_layer] / errors)


def task_sweep(runs: Sequence[TaskRun]) -> LayerSweep:
    """One task's runs (one per seed) as one sweep of errors; its guard says whether ICL solves the task."""
    return LayerSweep.over_seeds([r.sweep for r in runs])


def _answers(tokenizer, template: Template, prompts: list[Prompt]) -> Tensor:
    """First-token ids [N] of the prompts' answers."""
    return torch.tensor([answer_first_token(tokenizer, template, p.query[1]) for p in prompts])


def _echoes(tokenizer, template: Template, prompts: list[Prompt]) -> Tensor:
    """First-token ids [N] of the queries themselves written as answers (-1 where none: never predicted)."""
    first = [answer_first_token(tokenizer, template, p.query[0]) for p in prompts]
    return torch.tensor([-1 if t is None else t for t in first])


@dataclass
class Split:
    """One split's zero-shot prompts, answers, and task vectors at the query line's template tokens."""

    zero_shot: list[str]
    answers: Tensor  # [N]
    positions: Tensor  # [N, P] in the zero-shot prompts; the last one is the arrow
    vectors: Tensor  # [L, N, P, D] n-shot states, mean over dummy queries
    shift: Tensor  # [L, N, P, D] n-shot minus zero-shot states (what the demonstrations add)


def prepare(model: nn.Module, tokenizer, prompts: list[Prompt], cfg: EvalConfig) -> Split:
    """Read task vectors from n-shot prompts with dummy queries (never the test query), one pass each."""
    t = cfg.template
    dummies = [(p, d) for p in prompts for d in p.dummies]
    pos = torch.tensor([query_line_positions(tokenizer, t, d) for _, d in dummies])
    n_shot = states(model, tokenizer, [t.prompt(p.demos, d) for p, d in dummies], pos, cfg.rows_per_pass)
    zero = states(model, tokenizer, [t.prompt((), d) for _, d in dummies], pos, cfg.rows_per_pass)

    def per_prompt(x: Tensor) -> Tensor:
        return x.view(x.shape[0], len(prompts), cfg.n_dummies, *x.shape[2:]).mean(2)

    return Split(zero_shot=[t.prompt((), p.query[0]) for p in prompts], answers=_answers(tokenizer, t, prompts),
                 positions=torch.tensor([query_line_positions(tokenizer, t, p.query[0]) for p in prompts]),
                 vectors=per_prompt(n_shot), shift=per_prompt(n_shot - zero))


def evaluate_task(model: nn.Module, tokenizer, task: WordTask, cfg: EvalConfig, seed: int,
                  extra_layers: list[int], width: int = 3) -> TaskRun:
    """Baseline, ICL and the TV variants for one task and seed (dev picks the layer, test reports)."""
    dev_prompts, test_prompts = dev_test_prompts(task, cfg.n_dev, cfg.n_test, cfg.n_shots, cfg.n_dummies, seed)
    dev, test = prepare(model, tokenizer, dev_prompts, cfg), prepare(model, tokenizer, test_prompts, cfg)
    all_layers = list(range(engine.num_layers(model)))

    def sweep(split: Split, layers: list[int], vectors: Tensor, at_template: bool = False, **kw) -> np.ndarray:
        keep = slice(None) if at_template else slice(-1, None)
        return injection_sweep(model, tokenizer, split.zero_shot, split.positions[:, keep], vectors[:, :, keep],
                               split.answers, layers, rows_per_pass=cfg.rows_per_pass, **kw)

    def accuracy(texts: list[str]) -> float:
        return float((predict(model, tokenizer, texts, cfg.rows_per_pass) == test.answers).float().mean())

    echoes = _echoes(tokenizer, cfg.template, test_prompts)
    icl_pred = predict(model, tokenizer, [cfg.template.prompt(p.demos, p.query[0]) for p in test_prompts],
                       cfg.rows_per_pass)
    tv_pred = layer_sweep_predictions(model, tokenizer, test.zero_shot, test.vectors[:, :, -1], "replace",
                                      cfg.rows_per_pass)  # [L, N]
    return TaskRun(
        task=task.name,
        baseline=accuracy(test.zero_shot),
        icl=float((icl_pred == test.answers).float().mean()),
        tv_dev=sweep(dev, all_layers, dev.vectors),
        tv_test=(tv_pred == test.answers).float().mean(1).numpy(),
        extra_layers=extra_layers,
        add_test=sweep(test, extra_layers, test.shift, mode="add"),
        window_test=sweep(test, extra_layers, test.vectors, width=width),
        positions_test=sweep(test, extra_layers, test.vectors, at_template=True),
        mean_tv=test.vectors[:, :, -1].mean(1),
        tv_echo=((tv_pred == echoes) & (tv_pred != test.answers)).float().mean(1).numpy(),
        icl_echo=float(((icl_pred == echoes) & (icl_pred != test.answers)).float().mean()),
    )


def directions_table(model: nn.Module, tokenizer, maps: Sequence[str], cfg: EvalConfig,
                     seeds: Sequence[int]) -> pd.DataFrame:
    """Dong et al.'s Table 1 layout on one model: a row per map and direction (``table1_columns``).

    Each task is first-token filtered (``pairs``: what survives) and run once per seed
    (:func:`evaluate_task`, the layer chosen on dev prompts per seed). Columns: zero-shot, ICL and
    TaskV accuracy (mean and std over seeds), TaskV/ICL of the means, ``echo``: the share of TaskV's
    test errors that repeat the query itself (the right item in the wrong direction), ``ICL echo``
    the fraction of ICL answers that do, ``layers`` the chosen layer per seed, and ``learned ICL``,
    the book's guard on the seed means (:func:`task_sweep`).
    """
    rows = []
    for name in maps:
        for direction, task_name in table1_columns(name).items():
            task = first_token_filter(load_task(task_name), tokenizer, cfg.template)
            runs = [evaluate_task(model, tokenizer, task, cfg, seed=s, extra_layers=[]) for s in seeds]
            icl, tv = np.array([r.icl for r in runs]), np.array([r.tv for r in runs])
            errors = sum(1 - r.tv for r in runs)
            echoes = sum(float(r.tv_echo[r.best_layer]) for r in runs)
            rows.append({"map": name, "direction": direction, "task": task_name, "pairs": len(task.pairs),
                         "zero-shot": float(np.mean([r.baseline for r in runs])),
                         "ICL": icl.mean(), "ICL std": icl.std(), "TaskV": tv.mean(), "TaskV std": tv.std(),
                         "TaskV/ICL": tv.mean() / icl.mean() if icl.mean() > 0 else float("nan"),
                         "echo": echoes / errors if errors > 0 else float("nan"),
                         "ICL echo": float(np.mean([r.icl_echo for r in runs])),
                         "layers": "/".join(str(r.best_layer) for r in runs),
                         "learned ICL": task_sweep(runs).learned_icl})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- decoding


def final_norm(model: nn.Module) -> nn.Module:
    """The norm applied after the last block (Llama ``norm``, GPT-2 ``ln_f``, NeoX ``final_layer_norm``)."""
    base = getattr(model, "base_model", model)
    for name in ("norm", "ln_f", "final_layer_norm", "final_norm"):
        if isinstance(getattr(base, name, None), nn.Module):
            return getattr(base, name)
    raise ValueError(f"found no final norm on {type(base).__name__}; looked for norm, ln_f, "
                     "final_layer_norm, final_norm")


def decode(model: nn.Module, vectors: Tensor, k: int) -> Tensor:
    """Top-k token ids [L, k] of vectors [L, D] read through the final norm and the unembedding."""
    weight = next(model.parameters())
    with torch.no_grad():
        normed = final_norm(model)(vectors.to(weight.device, weight.dtype))
        return model.get_output_embeddings()(normed).topk(k, dim=-1).indices.cpu()


def output_space_fraction(tokenizer, template: Template, task: WordTask, top: Tensor) -> np.ndarray:
    """Per layer, the fraction of decoded top-k tokens that begin one of the task's answers.

    A token counts if its text without surrounding spaces equals that of some answer's first
    token (so ' Paris' counts for Paris, but 'a' does not count for 'A'; our reconstruction).
    """
    def norm(token_id: int) -> str:
        return tokenizer.decode([token_id]).strip()

    space = {norm(answer_first_token(tokenizer, template, y)) for y in task.outputs}
    return np.array([[norm(int(i)) in space for i in row] for row in top]).mean(1)
