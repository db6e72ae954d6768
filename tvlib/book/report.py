"""Read executed notebooks back: claim verdicts for the ledger, run settings for the report.

Chapters emit both as display data with custom MIME types (``tvlib.book.chapter``), so the
executed notebooks are the only source of truth: no side files that could go stale.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tvlib.book.chapter import CLAIM_MIME, RUN_MIME
from tvlib.book.claims import load_claims

NOT_TESTED = "not yet tested"


def _payloads(notebook: Path, mime: str) -> Iterator[dict]:
    nb = json.loads(notebook.read_text())
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if mime in data:
                yield data[mime]


def executed_notebooks(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    """The executed notebooks in ``folder`` (sorted), except the named chapters."""
    return [p for p in sorted(folder.glob("*.ipynb")) if p.stem not in exclude]


def recorded_claims(notebooks: list[Path]) -> list[dict]:
    """Every verdict recorded by ``tvlib.book.claim`` in these notebooks, in order."""
    return [payload for nb in notebooks for payload in _payloads(nb, CLAIM_MIME)]


def run_records(notebooks: list[Path]) -> list[dict]:
    """The run-settings record of each notebook; a notebook without one is an error."""
    records = []
    for nb in notebooks:
        found = list(_payloads(nb, RUN_MIME))
        if len(found) != 1:
            raise ValueError(f"{nb.name} has {len(found)} run-settings records, expected 1 "
                             "(end every chapter with tvbook.run_settings())")
        records.append(found[0])
    return records


def ledger_rows(notebooks: list[Path]) -> list[dict]:
    """One row per registered claim: its recorded verdicts, or 'not yet tested'."""
    recorded: dict[str, list[dict]] = {}
    for rec in recorded_claims(notebooks):
        recorded.setdefault(rec["id"], []).append(rec)
    rows = []
    for claim in load_claims().values():
        for rec in recorded.get(claim.id) or [{"chapter": None, "measured": "", "verdict": NOT_TESTED}]:
            rows.append({"claim": f"{claim.paper}, {claim.where}", "statement": claim.statement,
                         "chapter": rec["chapter"] or claim.chapter, "tested": rec["chapter"] is not None,
                         "measured": rec["measured"], "verdict": rec["verdict"]})
    return rows


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A MyST/CommonMark table of ``rows`` with ``columns`` mapping keys to headers."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[k]) for k in columns) + " |" for row in rows]
    return "\n".join(lines)
