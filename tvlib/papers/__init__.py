"""The papers' own numbers as data: one CSV file per table or figure, each with its citation.

Every file in ``tvlib/papers/*.csv`` starts with ``# key: value`` lines -- ``paper``, ``arxiv``,
``source`` (table or figure), ``page``, ``approximate`` (values read off a figure), ``complete``
(whether every cell of the original is there), ``units`` and ``note`` -- then a plain CSV table.
The numbers are transcribed from the project's reference notes on the paper (the ICLR 2026
camera-ready PDF), never computed. :func:`table` loads one with its header in ``df.attrs``.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

HEADER_KEYS = ("paper", "arxiv", "source", "page", "approximate", "complete", "units", "note")


def names() -> list[str]:
    """The names of the shipped tables, e.g. ``dong2025_table1``."""
    return sorted(p.name[:-4] for p in resources.files(__name__).iterdir() if p.name.endswith(".csv"))


def parse_header(lines: list[str], required: tuple[str, ...]) -> dict[str, str]:
    """The ``# key: value`` lines at the top of a CSV file as a dict; every ``required`` key must be there."""
    meta: dict[str, str] = {}
    for line in lines:
        if not line.startswith("# "):
            break
        key, _, value = line[2:].partition(":")
        meta[key.strip()] = value.strip()
    missing = [k for k in required if k not in meta]
    if missing:
        raise ValueError(f"header lacks {', '.join(missing)}")
    return meta


def read_header(lines: list[str]) -> dict[str, object]:
    """A paper table's header as a dict (booleans for yes/no keys, the page as an int)."""
    meta: dict[str, object] = dict(parse_header(lines, HEADER_KEYS))
    for key in ("approximate", "complete"):
        if meta[key] not in ("yes", "no"):
            raise ValueError(f"header key {key!r} must be yes or no, got {meta[key]!r}")
        meta[key] = meta[key] == "yes"
    meta["page"] = int(meta["page"])
    return meta


def table(name: str) -> pd.DataFrame:
    """A paper's table or figure values by name (see :func:`names`).

    ``df.attrs`` holds the file's header plus ``citation``, one line naming paper, arXiv id,
    table or figure, and page (marked "approximate, read off the figure" where that applies).
    """
    valid = names()
    if name not in valid:
        raise ValueError(f"unknown table {name!r}; valid tables: {', '.join(valid)}")
    path = resources.files(__name__) / f"{name}.csv"
    meta = read_header(path.read_text(encoding="utf-8").splitlines())
    with resources.as_file(path) as file:
        df = pd.read_csv(file, comment="#")
    approx = " (approximate, read off the figure)" if meta["approximate"] else ""
    meta["citation"] = f"{meta['paper']}, arXiv:{meta['arxiv']}, {meta['source']}, p. {meta['page']}{approx}"
    df.attrs.update(meta)
    return df
