"""The claims registry and the chapters agree: a chapter records only the claims planned for it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tvlib.book.claims import load_claims

BOOK = Path(__file__).resolve().parents[1] / "book"
CLAIM_CALL = re.compile(r"""tvbook\.claim\(\s*["']([\w-]+)["']""")


def recorded_ids(chapter: Path) -> set[str]:
    """Claim ids that a chapter passes to tvbook.claim literally."""
    return set(CLAIM_CALL.findall(chapter.read_text()))


@pytest.mark.parametrize("chapter", sorted(BOOK.glob("*.md")), ids=lambda p: p.stem)
def test_a_chapter_records_only_claims_planned_for_it(chapter):
    claims = load_claims()
    for claim_id in recorded_ids(chapter):
        assert claim_id in claims, f"{chapter.name} records unknown claim {claim_id!r}"
        assert claims[claim_id].chapter == chapter.stem, (
            f"{chapter.name} records {claim_id!r}, which claims.yaml plans for chapter {claims[claim_id].chapter!r}")


def test_the_claim_pattern_finds_calls():
    assert CLAIM_CALL.findall('tvbook.claim("dong-fig4c", measured=...)\ntvbook.claim(\n  "yang-weak", x)') == [
        "dong-fig4c", "yang-weak"]
