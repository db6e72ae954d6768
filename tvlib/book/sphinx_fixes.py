"""A Sphinx extension for the book's HTML (``sphinx.extra_extensions`` in ``_config.yml``).

Each page includes every script once. Sphinx 7.4 registers an inline script that an extension
adds after the builder started twice (once named ``None``, once ``''``), so every page declared
sphinx-thebe's ``const THEBE_JS_URL`` twice and logged a SyntaxError in the reader's console.
"""

from __future__ import annotations

from typing import Any


def unique_scripts(scripts: list) -> list:
    """``scripts`` (Sphinx's ``_JavaScript`` assets) without repeats, first occurrence kept.

    Two assets are the same when their file (``None`` and ``''`` both meaning inline), priority and
    attributes, the inline body included, are equal.
    """
    seen = set()
    out = []
    for js in scripts:
        key = (str(js.filename or ""), js.priority, tuple(sorted(js.attributes.items())))
        if key not in seen:
            seen.add(key)
            out.append(js)
    return out


def _dedupe_page_scripts(app, pagename: str, templatename: str, context: dict[str, Any], doctree) -> None:
    if "script_files" in context:
        context["script_files"] = unique_scripts(context["script_files"])


def setup(app) -> dict[str, Any]:
    app.connect("html-page-context", _dedupe_page_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
