"""Training throughput of the seed-vectorised linear-transformer trainer against a loop over seeds.

Measures seed-steps per second on one configuration (triplet prompts, n = 10, L = 2): the same
number of seeds and steps is trained once as one stacked tensor program (``train`` with
``n_seeds = S``) and once as S separate runs of ``train`` with one seed each. Prints both
throughputs, their ratio (measured side by side in this run) and the peak resident memory of the
process. One torch thread, as in the chapter. Run at several batch sizes: the gain from stacking
seeds is the per-operation overhead it amortises, so it shrinks as the batch (the work per
operation) grows.
"""

from __future__ import annotations

import argparse
import resource
import time
from dataclasses import replace

import torch

from tvlib.linear.model import ModelConfig
from tvlib.linear.train import TrainConfig, fit


def seed_steps_per_s(mcfg: ModelConfig, tcfg: TrainConfig, vectorised: bool) -> float:
    """Train tcfg.n_seeds seeds for tcfg.steps steps, stacked or one at a time; seed-steps per second."""
    start = time.perf_counter()
    if vectorised:
        fit(mcfg, tcfg)
    else:
        for s in range(tcfg.n_seeds):
            fit(mcfg, replace(tcfg, n_seeds=1, seed=s))
    return tcfg.n_seeds * tcfg.steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=16)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, nargs="+", default=[16, 128])
    args = parser.parse_args()
    torch.set_num_threads(1)
    mcfg = ModelConfig("triplet", 10, 2)
    print(f"triplet n=10 L=2, {args.seeds} seeds x {args.steps} steps (seed-steps per second)")
    print(f"{'batch':>6} {'loop':>10} {'vectorised':>11} {'speed-up':>9}")
    for batch in args.batch:
        tcfg = TrainConfig(steps=args.steps, batch=batch, n_seeds=args.seeds, eval_every=args.steps, eval_batch=batch)
        loop = seed_steps_per_s(mcfg, tcfg, vectorised=False)
        vec = seed_steps_per_s(mcfg, tcfg, vectorised=True)
        print(f"{batch:>6} {loop:>10.1f} {vec:>11.1f} {vec / loop:>8.2f}x")
    print(f"peak RSS of the process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
