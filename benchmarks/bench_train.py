"""Training throughput of the from-scratch GPT against this machine's matrix-multiply peak.

Measures, in one run on the same threads: (1) steps/s and tokens/s of training steps of the
cpu-profile model of book/emergence_scratch.md (ICL loss, and ICL + TVP-loss), and (2) the FLOP
rate of a large square fp32 matrix multiply (the practical peak). Prints the achieved training
FLOP rate -- counted as 6 x parameters x tokens plus the attention score/value matmuls -- as a
fraction of that peak. The same recipe at larger widths (``--widths``) shows how much of the gap is
the width-32 model's size: its matrix products are too small to keep the cores busy, so a step
costs mostly per-operation overhead.

    .venv/bin/python benchmarks/bench_train.py [--steps 30] [--threads 2] [--widths 32,128,256]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch

from tvlib.scratch.train import OFFSET_RUN, make_model, sample_batch, step_losses

CPU_MODEL = replace(OFFSET_RUN, tvp_lambda=1.0, tvp_layer=2)  # the chapters' token-offset model


def matmul_peak(n: int = 1024, reps: int = 10) -> float:
    """FLOP/s of an n x n fp32 matrix multiply (best of ``reps``)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    best = min(_timed(lambda: a @ b) for _ in range(reps))
    return 2 * n**3 / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def train_flops(cfg: TrainConfig, n_params: int, seq_len: int, tvp: bool) -> float:
    """Forward + backward FLOPs of one step: 6 N per token plus attention, for each pass."""
    def one_pass(batch: int, t: int) -> float:
        attention = 2 * 2 * cfg.n_layer * t * t * cfg.n_embd  # QK^T and AV, full square
        return 3 * batch * (2 * n_params * t + attention)

    zero_shot = one_pass(cfg.batch_size, 2) if tvp else 0.0  # the zero-shot prompt (x, ->)
    return one_pass(cfg.batch_size, seq_len) + zero_shot


def train_rate(cfg: TrainConfig, tvp: bool, steps: int) -> tuple[float, float, float]:
    """(steps/s, tokens/s, FLOP/s) of training steps (after two warm-up steps)."""
    model, task = make_model(cfg), cfg.make_task()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    gen = torch.Generator().manual_seed(0)
    lam = cfg.tvp_lambda if tvp else 0.0

    def step() -> int:
        icl, zero = sample_batch(task, cfg, gen)
        icl_loss, tvp_loss = step_losses(model, task, icl, zero, cfg.tvp_layer, lam)
        opt.zero_grad(set_to_none=True)
        (icl_loss + lam * tvp_loss).backward()
        opt.step()
        return icl.inputs["input_ids"].shape[1]

    step(), step()
    t = time.perf_counter()
    seq_len = [step() for _ in range(steps)][0]
    dt = time.perf_counter() - t
    n_params = sum(p.numel() for name, p in model.named_parameters() if name != "wpe.weight")
    flops = train_flops(cfg, n_params, seq_len, tvp) * steps
    return steps / dt, steps * cfg.batch_size * seq_len / dt, flops / dt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--widths", default="32,128,256", help="model widths (32: the cpu profile's)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    widths = [int(w) for w in args.widths.split(",")]
    peak = matmul_peak()
    print(f"threads {args.threads}; matmul peak {peak / 1e9:.1f} GFLOP/s (1024^2 fp32)")
    for width in widths:
        cfg = replace(CPU_MODEL, n_embd=width)
        label = "cpu-profile model" if cfg == CPU_MODEL else "same recipe"
        for tvp in (False, True):
            steps_s, tokens_s, flops_s = train_rate(cfg, tvp, args.steps)
            name = "ICL + TVP-loss" if tvp else "ICL loss      "
            print(f"width {width:3d} ({label}), {name}: {steps_s:.1f} steps/s, {tokens_s:,.0f} tokens/s, "
                  f"{flops_s / 1e9:.1f} GFLOP/s = {flops_s / peak:.0%} of the matmul peak")
    print(f"(peak re-measured after training: {matmul_peak() / 1e9:.1f} GFLOP/s)")

if __name__ == "__main__":
    main()
