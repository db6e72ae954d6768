"""Run a chapter at several training budgets and cache its claims' metrics for the chapter's figure.

    .venv/bin/python scripts/budget_study.py book/emergence_linear.md \
        --budget "cpu:" --budget "2x steps:steps=2400,halve_every=600,l1_from=240" [--profile cpu]

Each ``--budget LABEL:NAME=VALUE,...`` is one run of the chapter, in the given order (smallest
first, largest last), with those overrides on top of the profile (``LABEL:`` alone is the profile
itself). Every claim the chapter records must carry ``metrics``; the chapter's cells tagged
``budget-study`` (those that draw this study) are left out of these runs. The study is written to
``tvlib/book/budgets/<chapter>.csv`` (atomically), headed by the exact command, its runtime and
the machine; the chapter draws it with ``tvlib.plotting.budget_study``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

from tvlib.book import budget
from tvlib.book.execute import run_chapter
from tvlib.book.report import recorded_claims

ROOT = Path(__file__).resolve().parents[1]


def parse_budget(text: str) -> tuple[str, dict[str, object]]:
    """'LABEL:a=1,b=2' -> ('LABEL', {'a': 1, 'b': 2})."""
    label, sep, rest = text.partition(":")
    if not sep or not label:
        raise SystemExit(f"--budget {text!r}: expected LABEL:NAME=VALUE,... (or LABEL: for the profile)")
    overrides = {}
    for pair in filter(None, rest.split(",")):
        name, eq, value = pair.partition("=")
        if not eq:
            raise SystemExit(f"--budget {text!r}: {pair!r} is not NAME=VALUE")
        overrides[name.strip()] = yaml.safe_load(value)
    return label, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("chapter", type=Path)
    parser.add_argument("--budget", action="append", required=True, help="LABEL:NAME=VALUE,... (repeatable)")
    parser.add_argument("--profile", default="cpu")
    args = parser.parse_args()
    budgets = [parse_budget(b) for b in args.budget]
    start, table = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as tmp:
        for order, (label, overrides) in enumerate(budgets):
            out = Path(tmp) / f"{order}.ipynb"
            t0 = time.perf_counter()
            run_chapter(args.chapter, args.profile, out, ROOT / "params", overrides, Path(tmp) / "scratch",
                        skip_tags=frozenset({budget.TAG}))
            wall = time.perf_counter() - t0
            table += budget.rows(recorded_claims([out]), order, label, overrides, wall)
            print(f"{label}: {wall:.0f} s", flush=True)
    runtime = time.perf_counter() - start
    meta = {"chapter": args.chapter.stem,
            "command": ".venv/bin/python scripts/budget_study.py " + shlex.join(sys.argv[1:]),
            "runtime": f"{runtime / 60:.1f} min", "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, on top of the {args.profile} profile", "date": datetime.date.today().isoformat()}
    path = ROOT / "tvlib" / "book" / "budgets" / f"{args.chapter.stem}.csv"
    path.parent.mkdir(exist_ok=True)
    budget.write(path, pd.DataFrame(table), meta)
    print(f"wrote {path.relative_to(ROOT)} ({len(table)} rows, {runtime / 60:.1f} min)")


if __name__ == "__main__":
    main()
