"""Wall time of the quick book build from clean versus a rebuild with nothing changed.

Usage: .venv/bin/python benchmarks/bench_build.py   (deletes and rebuilds the quick profile's
_build/executed/quick and _build/jb/quick). Prints both times and their ratio; the rebuild
target is at most 30 s, because make re-executes only chapters whose source, profile section or
tvlib changed.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_build() -> float:
    start = time.perf_counter()
    subprocess.run(["make", "--no-print-directory", "book", "PROFILE=quick"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    for folder in ("_build/executed/quick", "_build/jb/quick"):
        shutil.rmtree(ROOT / folder, ignore_errors=True)
    clean = timed_build()
    rebuild = timed_build()
    print(f"quick build from clean:        {clean:8.1f} s")
    print(f"rebuild with nothing changed:  {rebuild:8.1f} s")
    print(f"ratio clean / rebuild:         {clean / rebuild:8.1f}x")


if __name__ == "__main__":
    main()
