"""Fault test: a chapter killed mid-execution (kill -9, out of memory, a closed laptop) never breaks
the next `make book`. It runs the real Makefile on a tiny book of three pages in a temporary folder."""

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
HEADER = """---
jupytext:
  text_representation: {extension: .md, format_name: myst, format_version: 0.13}
kernelspec: {display_name: Python 3, language: python, name: python3}
---
"""


def chapter(title: str, body: str = "x = 1") -> str:
    return (f"{HEADER}\n# {title}\n\n```{{code-cell}} ipython3\n:tags: [parameters]\n\nprofile = \"cpu\"\n```\n\n"
            f"```{{code-cell}} ipython3\n{body}\n```\n")


@pytest.fixture
def tiny_book(tmp_path):
    """The project's Makefile and configuration around a book of intro, one slow chapter and the
    reproducibility page (the two report pages the Makefile expects). The slow chapter writes its
    kernel's pid to `started`, then waits while the file `hold` exists."""
    if not (ROOT / ".venv" / ".installed").is_file():
        pytest.skip("needs the project's .venv: run `make venv` (make test does)")
    for name in ("Makefile", "_config.yml", "references.bib"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    (tmp_path / "tvlib").symlink_to(ROOT / "tvlib")
    (tmp_path / "pyproject.toml").touch()
    os.utime(tmp_path / "pyproject.toml", (0, 0))  # older than the venv's stamp: make installs nothing
    (tmp_path / "params").mkdir()
    (tmp_path / "params" / "quick.yaml").write_text("{}\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                       "  - file: book/slow\n  - file: book/reproducibility\n")
    book = tmp_path / "book"
    book.mkdir()
    (book / "intro.md").write_text(chapter("Intro"))
    (book / "reproducibility.md").write_text(chapter("Reproducibility"))
    wait = (f"import os, time\nfrom pathlib import Path\nPath({str(tmp_path / 'started')!r}).write_text(str(os.getpid()))\n"
            f"deadline = time.time() + 120\n"
            f"while Path({str(tmp_path / 'hold')!r}).exists() and time.time() < deadline:\n    time.sleep(0.1)")
    (book / "slow.md").write_text(chapter("Slow", wait))
    return tmp_path


def make_book(folder: Path, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(["make", "book", "PROFILE=quick"], cwd=folder, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True, **kw)


def test_killed_chapter_is_re_executed_and_the_next_build_is_clean(tiny_book):
    (tiny_book / "hold").touch()
    first = make_book(tiny_book)
    started = tiny_book / "started"
    deadline = time.time() + 60
    while not started.exists() or not started.read_text():
        assert first.poll() is None, f"the build ended before the chapter ran:\n{first.stdout.read()}"
        assert time.time() < deadline, "the slow chapter never started"
        time.sleep(0.1)
    os.killpg(first.pid, signal.SIGKILL)  # make, the executor and papermill, all at once
    os.kill(int(started.read_text()), signal.SIGKILL)  # and the kernel, in its own session
    first.wait()

    staged = tiny_book / "_build" / "executed" / "quick" / "book"
    assert not (staged / "slow.ipynb").exists(), "a killed chapter must not look executed"
    assert [p.name for p in staged.iterdir() if p.name.startswith(".")] == [], "nothing left in the staged book"

    # A leftover of the executor before this fix, inside the staged book, must not break the build either.
    stale = staged / ".slow.k1ll3d"
    stale.mkdir()
    nbformat.write(nbformat.v4.new_notebook(), stale / "input.ipynb")

    (tiny_book / "hold").unlink()
    started.unlink()
    second = make_book(tiny_book)
    log, _ = second.communicate(timeout=240)
    assert second.returncode == 0, log
    assert started.exists(), "the killed chapter was executed again"
    assert "executing slow" in log
    assert (staged / "slow.ipynb").is_file()
    assert (tiny_book / "_build" / "html-quick" / "book" / "slow.html").is_file()
