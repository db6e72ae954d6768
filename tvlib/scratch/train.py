"""Training transformers from scratch on in-context tasks, with the TVP-loss.

* :func:`train` runs (or resumes, or loads from the run cache) one training run of a
  :class:`TrainConfig`. The loss is the ICL loss on every answer position plus, if
  ``tvp_lambda > 0``, the task-vector-prompting loss (TVP-loss) of Yang et al. (2025) at layer
  ``tvp_layer`` -- see :func:`step_losses` for its exact definition (our reconstruction).
* Evaluation lives in :mod:`tvlib.scratch.evaluate`, outside the run cache's key: changing how a
  model is evaluated does not retrain it.

Checkpoints and cached models are written atomically (temp file + ``os.replace``); the run
cache is content-addressed by the full config and the source of the model, task and training
code, under ``$TVLIB_CACHE`` (default ``~/.cache/tvlib``).
"""

from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tvlib import engine
from tvlib.runcache import cache_dir, content_key, one_thread, save_atomic
from tvlib.scratch import tasks
from tvlib.scratch import gpt
from tvlib.scratch.gpt import GPT, GPTConfig, model_inputs, query_positions


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a training run (and hence its cache key)."""

    task: str = "linear"  # a key of tvlib.scratch.tasks.TASKS
    n_dims: int = 4  # linear regression only
    vocab: int = 16  # token offset and token map only (the map's X and Y have vocab / 2 tokens each)
    map_kind: str = "one_way"  # token map only: a kind of tvlib.scratch.tasks.MAP_KINDS
    n_states: int = 3  # dfa only: states of each prompt's automaton
    n_symbols: int = 2  # dfa only: alphabet size
    length: int = 4  # dfa only: symbols per input string
    layout: str = "triplet"  # "pairwise" or "triplet"
    n_layer: int = 4
    n_embd: int = 64
    n_head: int = 4
    block_size: int = 64
    init: str = "gpt2"  # weight initialisation: "gpt2" or "torch" (tvlib.scratch.gpt.gpt)
    n_examples: int = 10  # examples per training prompt
    steps: int = 1000
    batch_size: int = 64
    lr: float = 1e-3
    warmup: int = 100
    seed: int = 0
    tvp_lambda: float = 0.0  # weight of the TVP-loss; 0 = plain ICL training
    tvp_layer: int = -1  # prescribed layer l* of the TVP-loss (-1 = none)

    def __post_init__(self) -> None:
        tasks.check_layout(self.layout)
        if self.task not in tasks.TASKS:
            raise ValueError(f"unknown task {self.task!r}; valid tasks: {', '.join(tasks.TASKS)}")
        if self.tvp_lambda < 0:
            raise ValueError(f"tvp_lambda must be >= 0, got {self.tvp_lambda}")
        if self.tvp_lambda > 0 and not 0 <= self.tvp_layer < self.n_layer:
            raise ValueError(f"tvp_layer {self.tvp_layer} is out of range: with tvp_lambda > 0 it "
                             f"must be in 0..{self.n_layer - 1}")
        if self.init not in gpt.INITS:
            raise ValueError(f"unknown init {self.init!r}; valid: {', '.join(gpt.INITS)}")
        self.make_task()  # a clear error for bad task sizes
        positions = tasks.prompt_length(self.layout, self.n_examples, self.x_tokens)
        if positions > self.block_size:
            raise ValueError(f"{self.n_examples} {self.layout} examples of {self.x_tokens}-token inputs "
                             f"need {positions} positions > block_size {self.block_size}")

    def make_task(self, **overrides) -> tasks.Task:
        """The run's task family; ``overrides`` (e.g. ``x_scale=2``) build a shifted variant."""
        size = {"linear": {"n_dims": self.n_dims}, "offset": {"vocab": self.vocab},
                "map": {"vocab": self.vocab, "kind": self.map_kind},
                "dfa": {"n_states": self.n_states, "n_symbols": self.n_symbols, "length": self.length}}
        return tasks.make_task(self.task, **size.get(self.task, {}) | overrides)

    @property
    def x_tokens(self) -> int:
        """Positions an example's input takes: the string length for the DFA family, else 1."""
        return self.length if self.task == "dfa" else 1


# The chapters' shared run settings (our reconstruction, sized for a 2-core CPU). Chapters set
# steps and seed with dataclasses.replace, so chapters that train the same model share its cache
# entry. Regression uses PyTorch's initialisation: with GPT-2's, width-32 regression models stay
# for thousands of steps on the plateau where they predict 0 (book/emergence_scratch.md).
OFFSET_RUN = TrainConfig(task="offset", vocab=6, n_embd=32, n_head=2, batch_size=32, n_examples=8, lr=3e-3,
                       warmup=100)
REGRESSION_RUN = TrainConfig(task="linear", n_dims=2, n_embd=32, n_head=2, batch_size=128, n_examples=6,
                           lr=3e-3, warmup=100, init="torch")


def make_model(cfg: TrainConfig) -> GPT:
    """A freshly initialised model, seeded by ``cfg.seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return GPT(GPTConfig(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                             block_size=cfg.block_size, init=cfg.init, **cfg.make_task().model_kwargs()))


# ----------------------------------------------------------------------------- losses


def step_losses(model: GPT, task: tasks.Task, icl: tasks.Prompts, zero: tasks.Prompts,
                tvp_layer: int, tvp_lambda: float) -> tuple[Tensor, Tensor]:
    """The ICL loss and the TVP-loss of one batch (the TVP-loss is 0 and not computed if λ = 0).

    ICL loss: mean loss over every answer position of the ICL prompts ``icl``.
    TVP-loss (our reconstruction of Yang et al.): v = h_{l*}(icl, last position), the residual
    stream after block l* at the last (query) answer position of the same forward pass; it
    replaces h_{l*} at the answer position of the zero-shot prompt ``zero`` (same task, a fresh
    query x'), and the loss is that of predicting f(x'). Gradients flow through v into the ICL
    pass as well as through the zero-shot pass.
    """
    B = icl.targets.shape[0]
    with engine.capture(model, query_positions(B)) as cap:
        out = model(**model_inputs(model, icl.inputs))
    icl_loss = tasks.loss(task, tasks.answers(task, out, icl.answer_pos), icl.targets)
    if tvp_lambda == 0:
        return icl_loss, torch.zeros(())
    v = cap.states[tvp_layer]
    with engine.inject(model, tvp_layer, query_positions(B), v):
        out0 = model(**model_inputs(model, zero.inputs))
    return icl_loss, tasks.loss(task, tasks.answers(task, out0, zero.answer_pos[-1:]), zero.targets[:, -1:])


def sample_batch(task: tasks.Task, cfg: TrainConfig, gen: torch.Generator) -> tuple[tasks.Prompts, tasks.Prompts]:
    """ICL prompts of ``cfg.n_examples`` examples and zero-shot prompts of the same tasks."""
    params = task.sample_tasks(cfg.batch_size, gen)
    icl = tasks.sample_prompts(task, cfg.layout, cfg.batch_size, cfg.n_examples, gen, tasks=params)
    zero = tasks.sample_prompts(task, cfg.layout, cfg.batch_size, 1, gen, tasks=params)
    return icl, zero


def lr_at(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to 10 % of the peak learning rate."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.45 * (1 + math.cos(math.pi * t)))


# ----------------------------------------------------------------------------- training


def run_key(cfg: TrainConfig) -> str:
    """Content address of a run: the config and the source of the code that trains it."""
    return content_key(asdict(cfg), (gpt, tasks, sys.modules[__name__]))


def train(cfg: TrainConfig, cache: Path | None = None, ckpt_every: int = 200,
          stop_after: int | None = None) -> tuple[GPT, list[dict]]:
    """Train (or resume, or load) the run ``cfg``; returns the model and its loss log.

    The finished model is cached at ``<cache>/<run_key>.pt``. While training, a checkpoint
    (model, optimizer, data generator, step, log) is written every ``ckpt_every`` steps to
    ``<cache>/<run_key>.ckpt``, so a killed run resumes where it was. ``stop_after`` ends the run
    early after that many steps in total (for tests of resuming); nothing is cached then. Training
    runs on one CPU thread (:func:`one_thread`), so the cached model does not depend on the caller.
    """
    with one_thread():
        return _train(cfg, cache, ckpt_every, stop_after)


def _train(cfg: TrainConfig, cache: Path | None, ckpt_every: int,
           stop_after: int | None) -> tuple[GPT, list[dict]]:
    cache = cache_dir() if cache is None else Path(cache)
    key = run_key(cfg)
    final, ckpt = cache / f"{key}.pt", cache / f"{key}.ckpt"
    model = make_model(cfg)
    if final.exists():
        state = torch.load(final, weights_only=True)
        model.load_state_dict(state["model"])
        return model.eval(), state["log"]
    task = cfg.make_task()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)
    step, log = 0, []
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        gen.set_state(state["gen"])
        step, log = state["step"], state["log"]
    end = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    model.train()
    for step in tqdm(range(step, end), initial=step, total=cfg.steps, desc=f"train {key[:8]}",
                     disable=None, leave=False):
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, step)
        icl, zero = sample_batch(task, cfg, gen)
        icl_loss, tvp_loss = step_losses(model, task, icl, zero, cfg.tvp_layer, cfg.tvp_lambda)
        opt.zero_grad(set_to_none=True)
        (icl_loss + cfg.tvp_lambda * tvp_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        log.append({"step": step, "icl": icl_loss.item(), "tvp": tvp_loss.item()})
        if (step + 1) % ckpt_every == 0 and step + 1 < cfg.steps:
            save_atomic({"model": model.state_dict(), "opt": opt.state_dict(), "gen": gen.get_state(),
                         "step": step + 1, "log": log}, ckpt)
    model.eval()
    if end == cfg.steps:
        save_atomic({"model": model.state_dict(), "log": log}, final)
        ckpt.unlink(missing_ok=True)
    return model, log
