"""Budget studies: a chapter's claim metrics against its training budget, from a cached CSV.

``scripts/budget_study.py`` runs a chapter outside the book at several budgets (profile
overrides such as ``steps=2400``), reads the ``metrics`` of every claim it records and writes
one row per (budget, claim, metric) to ``tvlib/book/budgets/<chapter>.csv``, behind ``# key:
value`` lines that say how the file was made. The chapter loads it with :func:`load`, draws it
with :func:`tvlib.plotting.budget_study` and states from :func:`settled` where its metrics have
stopped moving at the profile's budget.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path

import pandas as pd

from tvlib.analysis import settled  # noqa: F401 (the study rule, used by summary and re-exported)
from tvlib.book.execute import write_if_changed
from tvlib.papers import parse_header

TAG = "budget-study"  # the chapter cells that draw a study; a study's own runs leave them out
HEADER_KEYS = ("chapter", "command", "runtime", "machine", "date")
COLUMNS = ("order", "budget", "overrides", "claim", "metric", "value", "verdict", "wall_s")


def rows(records: Sequence[Mapping], order: int, budget: str, overrides: Mapping[str, object],
         wall_s: float) -> list[dict]:
    """Rows of one budget's run: every metric of every claim record (``tvlib.book.claim(metrics=)``)."""
    text = ",".join(f"{k}={v}" for k, v in overrides.items())
    out, seen = [], set()
    for rec in records:
        if not rec.get("metrics"):
            raise ValueError(f"claim {rec['id']!r} records no metrics: pass metrics= to tvlib.book.claim")
        repeated = seen & {(rec["id"], name) for name in rec["metrics"]}
        if repeated:
            raise ValueError(f"metric(s) {sorted(m for _, m in repeated)} of claim {rec['id']!r} are recorded twice: "
                             "name each record's metrics apart")
        seen |= {(rec["id"], name) for name in rec["metrics"]}
        out += [{"order": order, "budget": budget, "overrides": text, "claim": rec["id"], "metric": name,
                 "value": value, "verdict": rec["verdict"], "wall_s": round(wall_s, 1)}
                for name, value in rec["metrics"].items()]
    return out


def write(path: Path, table: pd.DataFrame, meta: Mapping[str, str]) -> None:
    """Write a study with its header, atomically (``write_if_changed``: temp file + rename)."""
    missing = [k for k in HEADER_KEYS if k not in meta]
    if missing:
        raise ValueError(f"header lacks {', '.join(missing)}")
    body = io.StringIO()
    table.loc[:, list(COLUMNS)].to_csv(body, index=False)
    write_if_changed(path, "".join(f"# {k}: {meta[k]}\n" for k in HEADER_KEYS) + body.getvalue())


def studies() -> list[str]:
    """Chapters with a shipped budget study."""
    folder = resources.files(__package__) / "budgets"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".csv"))


def read(text: str) -> pd.DataFrame:
    """A study from its file's text; ``df.attrs`` holds the header (command, runtime, machine, date)."""
    meta = parse_header(text.splitlines(), HEADER_KEYS)
    table = pd.read_csv(io.StringIO(text), comment="#", keep_default_na=False)
    table.attrs.update(meta)
    return table


def load(chapter: str) -> pd.DataFrame:
    """The shipped budget study of ``chapter`` (see :func:`read`)."""
    valid = studies()
    if chapter not in valid:
        raise ValueError(f"no budget study for chapter {chapter!r}; studies exist for: {', '.join(valid) or 'none'}")
    return read((resources.files(__package__) / "budgets" / f"{chapter}.csv").read_text(encoding="utf-8"))


def summary(table: pd.DataFrame, budget: str) -> str:
    """One sentence: how many metrics have stopped moving at ``budget`` and which have not."""
    if budget not in set(table["budget"]):
        return (f"this profile's budget {budget} is not in the study (budgets: "
                f"{', '.join(dict.fromkeys(table['budget']))}), so the study says nothing about it")
    got = settled(table, budget)
    moving = got[~got["settled"]]
    listed = ", ".join(f"{r.claim} {r.metric} ({r.here:.3f} here, {r.largest:.3f} at the largest)"
                       for r in moving.itertuples())
    return (f"at {budget}: {int(got['settled'].sum())} of {len(got)} metrics have stopped moving; "
            f"still moving: {listed or 'none'}")
