"""The registry of the papers' claims that the book tests (``claims.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

CLAIMS_FILE = Path(__file__).with_name("claims.yaml")


@dataclass(frozen=True)
class Claim:
    """One claim of one paper, and the chapter planned to test it."""

    id: str
    paper: str
    where: str
    statement: str
    chapter: str


@cache
def load_claims() -> dict[str, Claim]:
    """All registered claims, keyed by id, in ledger order."""
    rows = yaml.safe_load(CLAIMS_FILE.read_text())
    claims = {row["id"]: Claim(**row) for row in rows}
    if len(claims) != len(rows):
        raise ValueError(f"duplicate claim ids in {CLAIMS_FILE}")
    return claims
