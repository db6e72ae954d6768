"""Side by side: Dong et al.'s own linear-transformer code and ``tvlib.linear`` on one configuration.

    .venv/bin/python benchmarks/linear_parity.py --authors PATH [--L 2 3] [--n 10] [--steps 5001]
        [--batch 1000] [--seeds 0 1] [--device cpu]

PATH is a checkout of github.com/Yuxin-Dong/ICL-TaskVector (the folder holding ``LinearTransformer/``);
nothing of it is copied here or changed. Their training script runs once per seed and
configuration, as they run it (``icl_regression.py -m triple``, in a scratch folder), and their
own evaluation functions (``collect_result.py``: ``task_vector_loss`` on rank-one tasks, and
``scaled_loss`` for the 1-shot models trained with N = 1) score its checkpoints exactly as
``collect_tv_result`` does: the mean over the last five checkpoints, per seed. ``tvlib.linear``
trains the same configuration with the seeds stacked and scores it with
``analysis.task_vector_risks``. Printed: Fig. 4c's two risks per seed and their minimum over
seeds for both, the same for ``tvlib.linear`` with our earlier sign reading (``signs="demos"``:
query sign fixed, signs shared by the layers) to show what that difference does, and the
training throughput of both in seed-steps per second, measured in this run. Whether the per-seed
risks of the two codes agree within seed noise is judged by a two-sided Mann-Whitney U test
(agree at p >= 0.05); use at least 5 seeds for it to have any power.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import mannwhitneyu

from tvlib.linear import analysis as la
from tvlib.linear.model import ModelConfig
from tvlib.linear.train import TrainConfig, fit


def authors_train(script: Path, workdir: Path, L: int, n: int, steps: int, batch: int, seed: int) -> float:
    """Run the authors' training script once; returns its wall time in seconds."""
    start = time.perf_counter()
    subprocess.run([sys.executable, str(script), "-L", str(L), "--N", str(n), "-m", "triple", "--seed", str(seed),
                    "--max_iters", str(steps), "--B", str(batch)], cwd=workdir, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def load_authors_eval(folder: Path):
    """The authors' ``collect_result`` module, imported from their checkout (their code, unchanged)."""
    sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location("authors_collect_result", folder / "collect_result.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def authors_risks(cr, workdir: Path, L: int, n: int, seeds: list[int]) -> tuple[list[float], list[float]]:
    """Per-seed task-vector risk (N = n) and 1-shot risk (N = 1) of the authors' checkpoints, scored
    by their functions on their fixed rank-one test batches (seed 99, 1000 prompts)."""
    old = os.getcwd()
    os.chdir(workdir)
    try:
        out = []
        for N, loss in ((n, cr.task_vector_loss), (1, cr.scaled_loss)):
            np.random.seed(99)
            torch.manual_seed(99)
            Z, Y_test = cr.generate_data("triple", N, 4, 1000, rankone=True)
            model = cr.Transformer_F(L, 4, (N + 1) * 3).to(cr.device)
            out.append([cr.get_loss(L, N, 4, "triple", s, model, Z, Y_test, loss) for s in seeds])
        return out[0], out[1]
    finally:
        os.chdir(old)


def ours(L: int, n: int, steps: int, batch: int, seeds: list[int], signs: str, device: str):
    """tvlib.linear on the same configuration; per-seed TV and 1-shot risks and the training wall time."""
    tcfg = TrainConfig(steps=steps, batch=batch, n_seeds=len(seeds), seed=seeds[0], signs=signs, device=device)
    start = time.perf_counter()
    run_n, run_1 = fit(ModelConfig("triplet", n, L), tcfg), fit(ModelConfig("triplet", 1, L), tcfg)
    wall = time.perf_counter() - start
    gen = torch.Generator(device=device).manual_seed(99)
    r = la.task_vector_risks(run_n.checkpoints, run_1.checkpoints, "rank_one", 1000, gen)
    return r["task vector"].tolist(), r["1-shot"].tolist(), wall


def row(label: str, tv: list[float], one: list[float]) -> str:
    per_seed = " ".join(f"{t:.3f}/{o:.3f}" for t, o in zip(tv, one))
    return f"  {label:<34} min TV {min(tv):.3f}  min 1-shot {min(one):.3f}  ratio {min(tv) / min(one):5.2f}  (per seed TV/1-shot: {per_seed})"


def agreement(theirs: list[float], mine: list[float]) -> str:
    """Whether two sets of per-seed risks could come from one distribution: a two-sided Mann-Whitney U
    test, "agree within seed noise" at p >= 0.05 (the criterion, fixed before the runs)."""
    p = mannwhitneyu(theirs, mine, alternative="two-sided").pvalue
    return f"medians {np.median(theirs):.3f} vs {np.median(mine):.3f}, Mann-Whitney p = {p:.2f}: " + (
        "agree within seed noise" if p >= 0.05 else "DIFFER")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--authors", type=Path, required=True, help="checkout of Yuxin-Dong/ICL-TaskVector")
    parser.add_argument("--L", type=int, nargs="+", default=[2, 3])
    parser.add_argument("--n", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5001)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    if args.steps % 2500 != 1:
        raise SystemExit(f"--steps {args.steps}: the authors' script writes its checkpoints to disk only at "
                         "steps t with t % 2500 == 0, so use 2500k + 1 steps (2501, 5001, ..., 20001)")
    folder = args.authors / "LinearTransformer"
    if not (folder / "icl_regression.py").is_file():
        raise SystemExit(f"--authors {args.authors}: no LinearTransformer/icl_regression.py there")
    cr = load_authors_eval(folder)
    print(f"Fig. 4c, triplet n={args.n}, {args.steps} steps, batch {args.batch}, seeds {args.seeds}; "
          f"normalised risk on rank-one W (chance 2), mean of the last 5 checkpoints per seed")
    their_work = our_work = their_wall = our_wall = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        for L in args.L:
            for N in (args.n, 1):
                for s in args.seeds:
                    their_wall += authors_train(folder / "icl_regression.py", workdir, L, N, args.steps, args.batch, s)
                    their_work += args.steps
            their_tv, their_one = authors_risks(cr, workdir, L, args.n, args.seeds)
            print(f"L = {L}")
            print(row("authors' code", their_tv, their_one))
            for signs in ("authors", "demos"):
                tv, one, wall = ours(L, args.n, args.steps, args.batch, args.seeds, signs, args.device)
                print(row(f"tvlib.linear, signs={signs!r}", tv, one))
                print(f"    vs the authors' code: TV {agreement(their_tv, tv)}; 1-shot {agreement(their_one, one)}")
                if signs == "authors":
                    our_wall, our_work = our_wall + wall, our_work + 2 * args.steps * len(args.seeds)
    theirs, mine = their_work / their_wall, our_work / our_wall
    print(f"training throughput: authors' code {theirs:.1f} seed-steps/s (one process per seed), "
          f"tvlib.linear {mine:.1f} seed-steps/s (seeds stacked): {mine / theirs:.2f}x")


if __name__ == "__main__":
    main()
