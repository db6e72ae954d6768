"""Per-chapter helpers: seeding and timing a run, claim verdicts, the run-settings box.

A chapter calls :func:`start` right after its parameters cell, :func:`claim` wherever it
reaches a verdict, and :func:`run_settings` in its last cell. Verdicts and run settings are
emitted as display data with a custom MIME type next to their Markdown rendering, so that the
introduction's claims ledger and the reproducibility report can read them back from the
executed notebooks (``tvlib.book.report``) without any side files.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from tvlib.book.claims import load_claims

PROFILES = ("quick", "cpu", "full")
VERDICTS = ("reproduced", "partly reproduced", "not reproduced")
CLAIM_MIME = "application/vnd.tvbook.claim+json"
RUN_MIME = "application/vnd.tvbook.run+json"


@dataclass
class Run:
    """What :func:`start` records about the current chapter run."""

    chapter: str
    profile: str
    device: str
    seed: int
    started: float = field(default_factory=time.perf_counter)


_RUN: Run | None = None


def _check_device(device: str) -> None:
    import torch

    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not one of 'cpu', 'cuda', 'cuda:N', 'mps'")
    if kind == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no CUDA device here")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was asked for, but torch sees no MPS device here")


def start(chapter: str, profile: str, device: str, seed: int, *, threads: int | None = None) -> Run:
    """Validate the run's settings, seed every generator and set the plotting theme.

    ``threads``: if given, torch's CPU thread count. The from-scratch chapters pass 1: their
    models are so small that one thread is the fastest (more only contend, badly so on a shared
    machine), and with one thread a run's numbers do not depend on how many cores it ran on.
    """
    global _RUN
    if profile not in PROFILES:
        raise ValueError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be >= 1 (or None to keep torch's default), got {threads}")
    _check_device(device)
    import numpy as np
    import torch

    from tvlib import plotting

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if threads is not None:
        torch.set_num_threads(threads)
    plotting.set_theme()
    _RUN = Run(chapter=chapter, profile=profile, device=device, seed=seed)
    return _RUN


def grade(reproduced: bool, partly: bool = False) -> str:
    """Map the outcome of a chapter's stated test to a verdict string."""
    if reproduced:
        return VERDICTS[0]
    return VERDICTS[1] if partly else VERDICTS[2]


def _display(markdown: str, mime: str, payload: dict) -> None:
    from IPython.display import display

    display({"text/markdown": markdown, "text/plain": markdown, mime: payload}, raw=True)


def claim(claim_id: str, measured: str, verdict: str, criterion: str,
          metrics: Mapping[str, float] | None = None) -> None:
    """Show a verdict box for a registered claim and emit it for the claims ledger.

    ``measured`` states the numbers this run computed, ``criterion`` the test that turned them
    into ``verdict`` (use :func:`grade`; never type a verdict by hand). ``metrics`` are the
    criterion's inputs as numbers, read back by budget studies (``scripts/budget_study.py``).
    """
    claims = load_claims()
    if claim_id not in claims:
        raise KeyError(f"unknown claim {claim_id!r}; registered claims: {', '.join(claims)}")
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {', '.join(VERDICTS)}")
    if _RUN is None:
        raise RuntimeError("call tvlib.book.start(...) before recording a claim")
    c = claims[claim_id]
    payload = {"id": claim_id, "chapter": _RUN.chapter, "measured": measured,
               "verdict": verdict, "criterion": criterion}
    if metrics:
        payload["metrics"] = {name: float(value) for name, value in metrics.items()}
    markdown = (f"**Claim ({c.paper}, {c.where}).** {c.statement}\n\n"
                f"**Measured:** {measured}\n\n**Test:** {criterion}\n\n**Verdict: {verdict}.**")
    _display(markdown, CLAIM_MIME, payload)


def _machine(device: str) -> str:
    import os

    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.machine()}, {os.cpu_count()} CPUs"


def run_settings() -> dict:
    """Show the run-settings box (profile, device, seed, versions, wall time) and return it."""
    if _RUN is None:
        raise RuntimeError("call tvlib.book.start(...) at the top of the chapter")
    import torch
    import transformers

    import tvlib

    settings = asdict(_RUN)
    settings.pop("started")
    settings |= {
        "machine": _machine(_RUN.device),
        "wall_time_s": round(time.perf_counter() - _RUN.started, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tvlib": tvlib.__version__,
    }
    shown = {k: v for k, v in settings.items() if k not in ("chapter", "wall_time_s")}
    line = " · ".join(f"{k} `{v}`" for k, v in shown.items())
    markdown = (f"```{{admonition}} Run settings\n:class: note\n{line} · "
                f"wall time **{settings['wall_time_s']} s**\n```")
    _display(markdown, RUN_MIME, settings)
    return settings
