"""Compare the claim records of two builds: same measured values and verdicts, claim by claim.

    .venv/bin/python scripts/compare_ledgers.py OLD_DIR NEW_DIR

OLD_DIR and NEW_DIR hold executed notebooks (e.g. ``_build/executed/cpu/book`` of two checkouts).
Records are matched by claim id and order within a chapter. Prints every difference and a tally
of verdicts on each side; exits 1 if any measured value or verdict differs.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from tvlib.book.report import executed_notebooks, recorded_claims


def keyed(folder: Path) -> dict[tuple[str, str, int], dict]:
    """Claim records keyed by (chapter, claim id, occurrence)."""
    seen: Counter = Counter()
    out = {}
    for rec in recorded_claims(executed_notebooks(folder)):
        key = (rec["chapter"], rec["id"])
        out[(*key, seen[key])] = rec
        seen[key] += 1
    return out


def main(old_dir: str, new_dir: str) -> int:
    old, new = keyed(Path(old_dir)), keyed(Path(new_dir))
    differ = 0
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if a is None or b is None:
            print(f"{key}: only in {'new' if a is None else 'old'}")
            differ += 1
        elif (a["measured"], a["verdict"]) != (b["measured"], b["verdict"]):
            differ += 1
            print(f"{key}:\n  old {a['verdict']}: {a['measured']}\n  new {b['verdict']}: {b['measured']}")
    for name, recs in (("old", old), ("new", new)):
        print(f"{name}: " + ", ".join(f"{v} {n}" for v, n in sorted(Counter(r["verdict"] for r in recs.values()).items())))
    print(f"all {len(old)} records identical" if not differ else f"{differ} record(s) differ")
    return 1 if differ else 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
