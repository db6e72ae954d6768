"""Open every page of a built book in headless Chromium, as a reader would, and report what is broken.

Command line (``make test`` runs it on the quick build)::

    python -m tvlib.book.browser HTML_DIR [--screenshots DIR] [--require]

Each page is opened from disk with every network request refused, so a page that needs the
internet to show its math or figures fails here exactly as it fails for a reader offline. A page
fails on: a JavaScript error in the console (this includes a file that did not load), an image
that did not load (``naturalWidth == 0``), untypeset math (``\\(``, ``\\[``, ``$$`` or
``\\begin{`` in the visible text outside code), a MathJax error, a link to a missing page or
anchor of the book, and a page that no sidebar links to (missing from the table of contents).
A full-page screenshot of each page is saved so that a person can look.

The browser is Debian's ``chromium`` driven through ``chromium-driver`` (Selenium); nothing is
downloaded. Without them the check is skipped with one line that names the packages, unless
``--require`` (``make test`` passes it under ``CI=true``) makes that a failure.
"""

from __future__ import annotations

import argparse
import base64
import re
import shutil
import sys
from dataclasses import dataclass
from functools import cache
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

KINDS = ("console error", "broken image", "untypeset math", "math error", "broken link", "not in toc")
PACKAGES = "chromium chromium-driver"
# Pages Sphinx writes that are not part of the book's text.
SPECIAL_PAGES = ("genindex.html", "search.html")
RAW_MATH = ("\\(", "\\[", "$$", "\\begin{")

# Runs in the page once it has loaded: waits for MathJax's first typeset and for every image,
# then reports what a reader would see. Text inside code, scripts and typeset math is not prose.
PAGE_SCRIPT = r"""
const done = arguments[arguments.length - 1];
const RAW = arguments[0];
const mathjax = (window.MathJax && MathJax.startup && MathJax.startup.promise) || Promise.resolve();
const images = [...document.images].map(img => img.complete ? null :
    new Promise(resolve => { img.addEventListener("load", resolve); img.addEventListener("error", resolve); }));
const settled = Promise.all([mathjax, ...images]);
const timeout = new Promise(resolve => setTimeout(resolve, 20000));
Promise.race([settled, timeout]).then(() => {
  const skip = /^(PRE|CODE|SCRIPT|STYLE|TEXTAREA|NOSCRIPT|MJX-.*)$/;
  const raw = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    let inside = false;
    for (let el = node.parentElement; el; el = el.parentElement) if (skip.test(el.tagName)) { inside = true; break; }
    if (inside || !node.parentElement.getClientRects().length) continue;
    const text = node.textContent;
    if (RAW.some(token => text.includes(token))) raw.push(text.trim().replace(/\s+/g, " ").slice(0, 100));
  }
  done({
    raw_math: raw,
    math_errors: [...document.querySelectorAll("mjx-merror")].map(e => e.getAttribute("data-mjx-error") || e.textContent),
    broken_images: [...document.images].filter(img => !img.complete || img.naturalWidth === 0)
                                        .map(img => img.getAttribute("src")),
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    nav: [...document.querySelectorAll("nav.bd-docs-nav a[href], .navbar-brand[href]")].map(a => a.href),
  });
}).catch(err => done({error: String(err)}));
"""


@dataclass(frozen=True)
class Problem:
    """One defect a reader would meet: the page (relative to the book), its kind, what exactly."""

    page: str
    kind: str
    detail: str

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown problem kind {self.kind!r}; kinds: {', '.join(KINDS)}")

    def __str__(self) -> str:
        return f"{self.page}: {self.kind}: {self.detail}"


@dataclass(frozen=True)
class Browser:
    """The Chromium executable and the matching chromedriver."""

    chromium: Path
    driver: Path


def find_browser() -> Browser | None:
    """Debian's chromium and chromedriver from PATH, or None when either is missing."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return Browser(Path(chromium), Path(driver)) if chromium and driver else None


class _Anchors(HTMLParser):
    """Collects the ids (and old-style ``<a name>``) of one HTML file, and its meta-refresh target."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.refresh: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for key in ("id", "name") if tag == "a" else ("id",):
            if a.get(key):
                self.ids.add(a[key])
        if tag == "meta" and (a.get("http-equiv") or "").lower() == "refresh":
            match = re.search(r"url=(.+)", a.get("content") or "", re.I)
            self.refresh = match[1].strip() if match else None


@cache
def _parse(path: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(path.read_text(errors="replace"))
    return parser


def content_pages(html_dir: Path) -> list[Path]:
    """The book's pages: every HTML file except Sphinx's index and search pages, the asset
    folders (``_static``, ``_sources``, ...) and redirect stubs such as the root ``index.html``."""
    pages = []
    for path in sorted(html_dir.rglob("*.html")):
        rel = path.relative_to(html_dir)
        if rel.name in SPECIAL_PAGES or any(part.startswith("_") for part in rel.parts[:-1]):
            continue
        if _parse(path).refresh is None:
            pages.append(path)
    return pages


def redirects(html_dir: Path) -> dict[Path, str]:
    """Redirect stubs (``<meta http-equiv="refresh">``) and their targets."""
    out = {}
    for path in sorted(html_dir.glob("*.html")):
        target = _parse(path).refresh
        if target is not None:
            out[path] = target
    return out


def link_target(page: Path, href: str) -> tuple[Path, str] | None:
    """The file and fragment a link points to, or None for a link that leaves the book."""
    url = urlsplit(href)
    if url.scheme == "file":
        path = Path(unquote(url.path))
    elif url.scheme == "" and not url.netloc:
        path = (page.parent / unquote(url.path)).resolve() if url.path else page
    else:
        return None  # http(s), mailto, javascript: nothing a build can break
    return path, unquote(url.fragment)


def link_problems(page: Path, hrefs: list[str], html_dir: Path) -> list[Problem]:
    """Links of ``page`` to a file that does not exist, or to an anchor its target lacks."""
    name = page.relative_to(html_dir).as_posix()
    problems = []
    for href in dict.fromkeys(hrefs):
        target = link_target(page, href)
        if target is None:
            continue
        path, fragment = target
        if path.is_dir():
            path = path / "index.html"
        if not path.is_file():
            problems.append(Problem(name, "broken link", f"{href} (no such file)"))
        elif fragment and path.suffix == ".html" and fragment not in _parse(path).ids:
            problems.append(Problem(name, "broken link", f"{href} (no anchor #{fragment} in {path.name})"))
    return problems


def toc_problems(pages: list[Path], nav_targets: set[Path], html_dir: Path) -> list[Problem]:
    """Pages that no sidebar of the book links to."""
    return [Problem(p.relative_to(html_dir).as_posix(), "not in toc", "no sidebar of the book links to this page")
            for p in pages if p.resolve() not in nav_targets]


def _start(browser: Browser):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(browser.chromium)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,900", "--host-resolver-rules=MAP * ~NOTFOUND", "--hide-scrollbars"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(browser.driver)), options=options)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _screenshot(driver, path: Path) -> None:
    """The whole page, not only the window."""
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd("Page.captureScreenshot",
                                  {"format": "png", "captureBeyondViewport": True, "clip": clip})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(shot["data"]))


def check_book(html_dir: Path, browser: Browser, screenshots: Path | None = None) -> tuple[list[Path], list[Problem]]:
    """Open every page of the built book; return the pages and every problem found on them."""
    html_dir = html_dir.resolve()
    pages = content_pages(html_dir)
    if not pages:
        raise ValueError(f"no HTML pages under {html_dir}: build the book first")
    problems: list[Problem] = []
    nav_targets: set[Path] = set()
    for stub, target in redirects(html_dir).items():
        problems += link_problems(stub, [target], html_dir)
        resolved = link_target(stub, target)
        if resolved:
            nav_targets.add(resolved[0])
    driver = _start(browser)
    try:
        for page in pages:
            name = page.relative_to(html_dir).as_posix()
            driver.get(page.as_uri())
            seen = driver.execute_async_script(PAGE_SCRIPT, list(RAW_MATH))
            if "error" in seen:
                raise RuntimeError(f"{name}: the page script failed: {seen['error']}")
            console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
            problems += [Problem(name, "console error", m) for m in console]
            problems += [Problem(name, "broken image", src or "(no src)") for src in seen["broken_images"]]
            problems += [Problem(name, "untypeset math", text) for text in seen["raw_math"]]
            problems += [Problem(name, "math error", text) for text in seen["math_errors"]]
            problems += link_problems(page, seen["links"], html_dir)
            nav_targets |= {t[0] for href in seen["nav"] if (t := link_target(page, href))}
            if screenshots is not None:
                _screenshot(driver, screenshots / Path(name).with_suffix(".png"))
    finally:
        driver.quit()
    problems += toc_problems(pages, nav_targets, html_dir)
    return pages, problems


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tvlib.book.browser", description=__doc__.splitlines()[0])
    parser.add_argument("html_dir", type=Path, help="the built HTML book, e.g. _build/html-quick")
    parser.add_argument("--screenshots", type=Path, help="save a full-page PNG of each page here")
    parser.add_argument("--require", action="store_true", help="a missing browser is a failure, not a skip")
    args = parser.parse_args(argv)
    browser = find_browser()
    if browser is None:
        verb = "FAILED" if args.require else "skipped"
        print(f"browser check {verb}: no chromium and chromedriver on PATH (Debian packages: {PACKAGES})")
        sys.exit(1 if args.require else 0)
    if args.screenshots is not None and args.screenshots.exists():
        shutil.rmtree(args.screenshots)  # screenshots of pages that no longer exist would mislead
    pages, problems = check_book(args.html_dir, browser, args.screenshots)
    for problem in problems:
        print(problem)
    where = f"; screenshots in {args.screenshots}/" if args.screenshots else ""
    print(f"browser check: {len(pages)} pages opened in {browser.chromium.name}, {len(problems)} problems{where}")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
