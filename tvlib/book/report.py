"""Read executed notebooks back: claim verdicts for the ledger, run settings for the report.

Chapters emit both as display data with custom MIME types (``tvlib.book.chapter``), so the
executed notebooks are the only source of truth: no side files that could go stale. Each verdict
is found under a heading of its chapter; the ledger links to that section.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from tvlib.book.chapter import CLAIM_MIME, RUN_MIME, VERDICTS
from tvlib.book.claims import load_claims

NOT_TESTED = "not yet tested"
LEDGER_VERDICTS = (*VERDICTS, NOT_TESTED)
# Headings down to this level get anchors (``parse.myst_heading_anchors`` in _config.yml).
ANCHOR_LEVELS = 3


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


def _headings(markdown: str) -> list[tuple[int, str, str]]:
    """(level, source text, anchor text) of each heading of a Markdown cell, code fences skipped.

    The anchor text is what MyST slugs: the heading's plain text and inline code, without markup
    or math.
    """
    from markdown_it import MarkdownIt
    from mdit_py_plugins.dollarmath import dollarmath_plugin

    tokens = MarkdownIt("commonmark").use(dollarmath_plugin).parse(markdown)
    out = []
    for opening, inline in zip(tokens, tokens[1:]):
        if opening.type == "heading_open":
            text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
            out.append((int(opening.tag[1]), inline.content, text))
    return out


def _slug(text: str, taken: set[str]) -> str:
    """MyST's anchor for a heading (``myst_heading_anchors``), unique within its page."""
    from myst_parser.mdit_to_docutils.base import default_slugify

    slug, i = default_slugify(text), 1
    while slug in taken:
        slug, i = f"{default_slugify(text)}-{i}", i + 1
    taken.add(slug)
    return slug


def recorded_claims(notebooks: list[Path]) -> list[dict]:
    """Every verdict recorded by ``tvlib.book.claim`` in these notebooks, in order.

    Each record gains where it was found: ``notebook`` (the page's name), ``section`` (the nearest
    heading above the cell, down to ANCHOR_LEVELS; None under the title) and its ``anchor``.
    """
    records = []
    for notebook in notebooks:
        taken: set[str] = set()
        section = anchor = None
        for cell in json.loads(notebook.read_text()).get("cells", []):
            if cell["cell_type"] == "markdown":
                source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
                for level, title, text in _headings(source):
                    if level <= ANCHOR_LEVELS:
                        slug = _slug(text, taken)
                        section, anchor = (title, slug) if level > 1 else (None, None)
            for output in cell.get("outputs", []):
                if CLAIM_MIME in output.get("data", {}):
                    records.append({**output["data"][CLAIM_MIME], "notebook": notebook.stem,
                                    "section": section, "anchor": anchor})
    return records


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
    """One row per registered claim: its recorded verdicts, or 'not yet tested'.

    A tested row says where: the page (``notebook``), the ``section`` and its ``anchor``.
    """
    recorded: dict[str, list[dict]] = {}
    for rec in recorded_claims(notebooks):
        recorded.setdefault(rec["id"], []).append(rec)
    untested = {"chapter": None, "notebook": None, "section": None, "anchor": None, "measured": "", "verdict": NOT_TESTED}
    rows = []
    for claim in load_claims().values():
        for rec in recorded.get(claim.id) or [untested]:
            rows.append({"claim": f"{claim.paper}, {claim.where}", "paper": claim.paper.split(" (")[0],
                         "statement": claim.statement, "chapter": rec["chapter"] or claim.chapter,
                         "tested": rec["chapter"] is not None, "notebook": rec["notebook"],
                         "section": rec["section"], "anchor": rec["anchor"],
                         "measured": rec["measured"], "verdict": rec["verdict"]})
    return rows


def where_tested(row: dict) -> str:
    """The ledger's 'tested in' cell: a MyST link to the section (or page) that tested the claim,
    or the planned chapter's name in plain text for a claim not tested yet."""
    if not row["tested"]:
        return f"planned: {row['chapter']}"
    target = f"{row['notebook']}.ipynb" + (f"#{row['anchor']}" if row["anchor"] else "")
    text = f"{row['notebook']} § {row['section']}" if row["section"] else row["notebook"]
    return f"[{text}]({target})"


def verdict_counts(rows: list[dict]):
    """A table of verdict counts: one row per (paper, chapter) in ledger order, one column per
    verdict (LEDGER_VERDICTS)."""
    import pandas as pd

    frame = pd.DataFrame(rows, columns=["paper", "chapter", "verdict"])
    counts = pd.crosstab([frame["paper"], frame["chapter"]], frame["verdict"], dropna=False)
    order = list(dict.fromkeys(zip(frame["paper"], frame["chapter"])))
    return counts.reindex(index=order, columns=list(LEDGER_VERDICTS), fill_value=0)


def verdict_figure(counts):
    """Stacked horizontal bars of ``verdict_counts``: one bar per paper and chapter, each verdict
    a colour-blind-safe colour, each segment labelled with its count."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    palette = sns.color_palette("colorblind")  # blues for (partly) reproduced, vermillion for not
    colours = dict(zip(LEDGER_VERDICTS, (palette[0], palette[9], palette[3], (0.85, 0.85, 0.85))))
    labels = [f"{paper}: {chapter}" for paper, chapter in counts.index]
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(counts) + 1.0))
    left = [0] * len(counts)
    for verdict in LEDGER_VERDICTS:
        widths = counts[verdict].tolist()
        bars = ax.barh(labels, widths, left=left, color=colours[verdict], label=verdict)
        ax.bar_label(bars, labels=[str(w) if w else "" for w in widths], label_type="center", fontsize="small")
        left = [a + b for a, b in zip(left, widths)]
    ax.invert_yaxis()
    ax.set(xlabel="claims")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(ncols=len(LEDGER_VERDICTS), loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize="small", frameon=False)
    fig.tight_layout()
    return fig


def markdown_table(rows: list[dict], columns: dict[str, str]) -> str:
    """A MyST/CommonMark table of ``rows`` with ``columns`` mapping keys to headers."""
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[k]) for k in columns) + " |" for row in rows]
    return "\n".join(lines)
