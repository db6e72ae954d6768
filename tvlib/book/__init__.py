"""What a chapter calls: start a run, record claim verdicts, end with the run-settings box.

Build tooling (executing chapters, reading executed notebooks back) lives in
``tvlib.book.execute`` and ``tvlib.book.report``.
"""

from tvlib.book.chapter import CLAIM_MIME, RUN_MIME, VERDICTS, claim, grade, run_settings, start
from tvlib.book.claims import Claim, load_claims

__all__ = [
    "CLAIM_MIME",
    "RUN_MIME",
    "VERDICTS",
    "Claim",
    "claim",
    "grade",
    "load_claims",
    "run_settings",
    "start",
]
