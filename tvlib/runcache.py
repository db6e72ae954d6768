"""The on-disk run cache shared by the model families that train (linear transformers, GPTs).

A run is content-addressed: its key hashes the run's configs and the source of the modules that
train it, so editing that code retrains and nothing stale is ever served. Files are written
atomically (temp file + ``os.replace``), so a killed build leaves no half-written model behind.
The cache lives in ``$TVLIB_CACHE`` (default ``~/.cache/tvlib``).
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import torch


def cache_dir() -> Path:
    """Where runs are cached: ``$TVLIB_CACHE`` or ``~/.cache/tvlib``."""
    return Path(os.environ.get("TVLIB_CACHE", Path.home() / ".cache" / "tvlib"))


def content_key(configs: dict[str, Any], modules: tuple[ModuleType, ...]) -> str:
    """Content address of a run: its configs (JSON-able dicts) and the source of ``modules``."""
    h = hashlib.sha256(json.dumps(configs, sort_keys=True, default=str).encode())
    for module in modules:
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()[:16]


def save_atomic(obj: object, path: Path) -> None:
    """torch.save to a temp file in the same folder, then rename: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one CPU thread inside the block, then restore the caller's count.

    A CPU matmul's reduction order depends on the thread count, so a model trained on two threads
    differs in the last bits from one trained on one, and the run cache (keyed on the config and
    the code, not on the machine's threads) would serve whichever was trained first.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
