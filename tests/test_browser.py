"""The real-browser check of the built book: what it finds, and that it can fail.

The tests that open pages need Debian's chromium and chromium-driver; without them they are
skipped, except under CI=true, where a missing browser is a failure (CI installs it).
"""

import os
from pathlib import Path

import pytest

from tvlib.book import browser

NAV = '<nav class="bd-links bd-docs-nav"><a href="good.html">Good</a><a href="bad.html">Bad</a></nav>'


def page(body: str, nav: str = NAV) -> str:
    return f"<!DOCTYPE html><html><head><meta charset='utf-8'></head><body>{nav}{body}</body></html>"


@pytest.fixture
def site(tmp_path):
    """A tiny built book: a redirect stub, a clean page, a broken page, a page no sidebar links to."""
    (tmp_path / "_static").mkdir()
    (tmp_path / "_static" / "asset.html").write_text("<p>not a page</p>")
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=good.html" />')
    (tmp_path / "genindex.html").write_text(page(""))
    (tmp_path / "good.html").write_text(page(
        '<h1 id="top">Good</h1><p>Prose, and <code>\\(not math\\)</code> in code.</p>'
        '<a href="bad.html#bad-top">a link</a><a href="https://example.org/x">an external link</a>'))
    (tmp_path / "bad.html").write_text(page(
        '<h1 id="bad-top">Bad</h1><p>Raw math: \\(x^2\\) and $$y$$.</p>'
        '<img src="missing.png" alt="a figure">'
        '<a href="nowhere.html">dead</a><a href="good.html#no-such-anchor">dead anchor</a>'
        '<script>throw new Error("boom from the page")</script>'))
    (tmp_path / "orphan.html").write_text(page("<h1>Orphan</h1>", nav=""))
    return tmp_path


def test_content_pages_skip_assets_special_pages_and_redirects(site):
    assert [p.name for p in browser.content_pages(site)] == ["bad.html", "good.html", "orphan.html"]
    assert browser.redirects(site) == {site / "index.html": "good.html"}


def test_link_problems_name_missing_files_and_anchors(site):
    hrefs = ["nowhere.html", "good.html#no-such-anchor", "good.html#top", "https://example.org/", "#bad-top",
             "mailto:a@b.c", (site / "good.html").as_uri()]
    problems = browser.link_problems(site / "bad.html", hrefs, site)
    assert [p.detail for p in problems] == ["nowhere.html (no such file)",
                                            "good.html#no-such-anchor (no anchor #no-such-anchor in good.html)"]
    assert {p.kind for p in problems} == {"broken link"} and {p.page for p in problems} == {"bad.html"}


def test_toc_problems_name_pages_no_sidebar_links_to(site):
    pages = browser.content_pages(site)
    problems = browser.toc_problems(pages, {site / "good.html", site / "bad.html"}, site)
    assert [(p.page, p.kind) for p in problems] == [("orphan.html", "not in toc")]


def test_missing_browser_skips_in_one_line_or_fails_when_required(monkeypatch, capsys, site):
    monkeypatch.setattr(browser, "find_browser", lambda: None)
    with pytest.raises(SystemExit) as skipped:
        browser.main([str(site)])
    out = capsys.readouterr().out.strip().splitlines()
    assert skipped.value.code == 0 and len(out) == 1
    assert "skipped" in out[0] and "chromium chromium-driver" in out[0]
    with pytest.raises(SystemExit) as failed:
        browser.main([str(site), "--require"])
    assert failed.value.code == 1 and "FAILED" in capsys.readouterr().out


@pytest.fixture
def chromium():
    found = browser.find_browser()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but no chromium/chromedriver: install the Debian packages {browser.PACKAGES}")
        pytest.skip(f"no chromium/chromedriver (Debian packages: {browser.PACKAGES})")
    return found


def test_browser_reports_raw_math_a_broken_image_and_a_js_error(site, chromium, tmp_path_factory):
    shots = tmp_path_factory.mktemp("shots")
    pages, problems = browser.check_book(site, chromium, shots)
    assert [p.name for p in pages] == ["bad.html", "good.html", "orphan.html"]
    found = {(p.page, p.kind) for p in problems}
    assert ("bad.html", "untypeset math") in found
    assert ("bad.html", "broken image") in found
    assert any(p.kind == "console error" and "boom from the page" in p.detail for p in problems)
    assert ("bad.html", "broken link") in found and ("orphan.html", "not in toc") in found
    assert not [p for p in problems if p.page == "good.html"], "a clean page (math only in code) passes"
    raw = [p.detail for p in problems if p.kind == "untypeset math"]
    assert any("\\(x^2\\)" in d for d in raw) and any("$$y$$" in d for d in raw)
    assert (shots / "good.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_browser_refuses_the_network(tmp_path, chromium):
    """A page that needs the internet fails here as it fails for a reader offline."""
    (tmp_path / "p.html").write_text(page('<script src="https://cdn.example.org/lib.js"></script>',
                                          nav='<nav class="bd-docs-nav"><a href="p.html">P</a></nav>'))
    _, problems = browser.check_book(tmp_path, chromium)
    assert [p.kind for p in problems] == ["console error"]
    assert "cdn.example.org" in problems[0].detail
