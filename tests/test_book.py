"""The book tooling: profiles, the executor, claim records, the ledger, the table of contents."""

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
import yaml

import tvlib.book as tvbook
from tvlib.book import execute, report
from tvlib.book.chapter import CLAIM_MIME, RUN_MIME

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
PARAMS = ROOT / "params"
HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
    format_version: 0.13
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def chapter_text(params: str, body: str = "x = 1") -> str:
    return (f"{HEADER}\n# T\n\n```{{code-cell}} ipython3\n:tags: [parameters]\n\n{params}\n```\n\n"
            f"```{{code-cell}} ipython3\n{body}\n```\n")


@pytest.fixture
def book(tmp_path):
    """A tiny book: two chapters and a params folder with a quick profile."""
    (tmp_path / "book").mkdir()
    (tmp_path / "params").mkdir()
    (tmp_path / "book" / "alpha.md").write_text(chapter_text('profile = "cpu"\ndevice = "cpu"  # where\nsteps = 10'))
    (tmp_path / "book" / "beta.md").write_text(chapter_text('profile = "cpu"'))
    (tmp_path / "book" / "static.md").write_text("# Static page\n")
    return tmp_path


def write_profile(book: Path, name: str, data: dict) -> None:
    (book / "params" / f"{name}.yaml").write_text(yaml.safe_dump(data))


def resolve(book: Path, chapter: str, profile: str = "quick", **kw):
    return execute.resolve_parameters(book / "book" / f"{chapter}.md", profile, book / "params", **kw)


def test_shared_keys_go_to_chapters_that_define_them(book):
    write_profile(book, "quick", {"shared": {"device": "cpu"}, "chapters": {"alpha": {"steps": 2}}})
    assert resolve(book, "alpha") == {"profile": "quick", "device": "cpu", "steps": 2}
    assert resolve(book, "beta") == {"profile": "quick"}


def test_unknown_profile_names_the_valid_ones(book):
    write_profile(book, "quick", {})
    with pytest.raises(execute.ProfileError, match=r"unknown profile 'qiuck'; valid profiles: quick"):
        resolve(book, "alpha", profile="qiuck")


def test_typo_in_a_chapter_section_is_an_error(book):
    write_profile(book, "quick", {"chapters": {"alpha": {"stesp": 2}}})
    with pytest.raises(execute.ProfileError, match=r"no parameter\(s\) \['stesp'\].*'steps'"):
        resolve(book, "alpha")


def test_typo_in_a_shared_key_is_an_error(book):
    write_profile(book, "quick", {"shared": {"devcie": "cpu"}})
    with pytest.raises(execute.ProfileError, match=r"shared keys \['devcie'\] are parameters of no chapter"):
        resolve(book, "beta")


def test_section_for_a_missing_chapter_is_an_error(book):
    write_profile(book, "quick", {"chapters": {"gamma": {"steps": 1}}})
    with pytest.raises(execute.ProfileError, match=r"unknown chapters \['gamma'\]"):
        resolve(book, "alpha")


def test_unknown_top_level_key_is_an_error(book):
    write_profile(book, "quick", {"chapter": {}})
    with pytest.raises(execute.ProfileError, match=r"unknown top-level keys \['chapter'\]"):
        resolve(book, "alpha")


def test_overrides_are_strict_for_one_chapter_and_shared_for_the_book(book):
    write_profile(book, "quick", {})
    assert resolve(book, "alpha", overrides={"device": "cuda"})["device"] == "cuda"
    with pytest.raises(execute.ProfileError, match=r"no parameter\(s\) \['device'\]"):
        resolve(book, "beta", overrides={"device": "cuda"})
    assert "device" not in resolve(book, "beta", overrides={"device": "cuda"}, strict_overrides=False)


def test_parameters_cell_must_be_literal_assignments(book):
    (book / "book" / "beta.md").write_text(chapter_text("profile = 'cpu'\nimport os"))
    write_profile(book, "quick", {})
    with pytest.raises(execute.ProfileError, match="line 2 is not 'name = literal'"):
        resolve(book, "alpha")


def test_exactly_one_parameters_cell(book):
    (book / "book" / "beta.md").write_text(HEADER + "\n```{code-cell} ipython3\nx = 1\n```\n")
    write_profile(book, "quick", {})
    with pytest.raises(execute.ProfileError, match="exactly one cell tagged 'parameters', found 0"):
        resolve(book, "alpha")


def test_fold_parameters_shows_the_values_that_ran():
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell('profile = "cpu"\nsteps = 10  # training steps', metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell("# Parameters\nsteps = 2", metadata={"tags": ["injected-parameters"]}),
        nbformat.v4.new_code_cell("print(steps)"),
    ])
    execute.fold_parameters(nb, {"profile": "quick", "steps": 2})
    assert [c.source for c in nb.cells] == ["profile = 'quick'\nsteps = 2  # training steps", "print(steps)"]


def test_write_if_changed_keeps_the_file_when_equal(tmp_path):
    path = tmp_path / "sub" / "p.json"
    assert execute.write_if_changed(path, "a")
    os.utime(path, (1, 1))
    assert not execute.write_if_changed(path, "a")
    assert path.stat().st_mtime == 1
    assert execute.write_if_changed(path, "b") and path.read_text() == "b"
    assert [p.name for p in path.parent.iterdir()] == ["p.json"]  # no temporary file left behind


def test_failed_chapter_leaves_no_notebook_and_names_the_cell(book):
    write_profile(book, "quick", {})
    (book / "book" / "beta.md").write_text(chapter_text('profile = "cpu"', "raise ValueError('boom')"))
    out = book / "out" / "beta.ipynb"
    out.parent.mkdir()
    out.write_text("stale")
    with pytest.raises(SystemExit, match=r"chapter 'beta' failed in code cell 2 \(`raise ValueError\('boom'\)`\): ValueError: boom"):
        execute.run_chapter(book / "book" / "beta.md", "quick", out, book / "params")
    assert list(out.parent.iterdir()) == []


def test_cells_with_a_skipped_tag_are_left_out_of_the_run(book):
    write_profile(book, "quick", {})
    body = "x = 1\n```\n\n```{code-cell} ipython3\n:tags: [budget-study]\n\nraise ValueError('drawn')"
    (book / "book" / "beta.md").write_text(chapter_text('profile = "cpu"', body))
    out = book / "out" / "beta.ipynb"
    execute.run_chapter(book / "book" / "beta.md", "quick", out, book / "params", skip_tags=frozenset({"budget-study"}))
    assert not any("drawn" in c.source for c in nbformat.read(out, as_version=4).cells)
    with pytest.raises(SystemExit, match="ValueError: drawn"):
        execute.run_chapter(book / "book" / "beta.md", "quick", out, book / "params")


def test_executed_chapter_folds_parameters_and_tags_run_settings(book, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "agg")  # must not reach the kernel: figures would vanish
    write_profile(book, "quick", {"chapters": {"alpha": {"steps": 3}}})
    body = ("import tvlib.book as tvbook\nimport matplotlib.pyplot as plt\n"
            "run = tvbook.start('alpha', profile, device, 0)\nplt.plot([0, 1])\nplt.show()\n"
            "```\n\n```{code-cell} ipython3\ntvbook.run_settings();")
    (book / "book" / "alpha.md").write_text(chapter_text('profile = "cpu"\ndevice = "cpu"\nsteps = 10', body))
    out = book / "out" / "alpha.ipynb"
    execute.run_chapter(book / "book" / "alpha.md", "quick", out, book / "params")
    nb = nbformat.read(out, as_version=4)
    assert nb.cells[1].source == 'profile = \'quick\'\ndevice = "cpu"\nsteps = 3'
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert any("image/png" in o.get("data", {}) for o in nb.cells[2].outputs), "the figure is in the notebook"
    assert "nbval-ignore-output" in nb.cells[3].metadata["tags"]
    [record] = report.run_records([out])
    assert record["chapter"] == "alpha" and record["profile"] == "quick"


def test_claim_rejects_unknown_ids_and_verdicts():
    tvbook.start("test", "quick", "cpu", 0)
    with pytest.raises(KeyError, match="unknown claim 'dong-fig9'.*dong-fig4ab"):
        tvbook.claim("dong-fig9", "m", "reproduced", "c")
    with pytest.raises(ValueError, match="verdict 'yes' is not one of reproduced"):
        tvbook.claim("dong-fig4c", "m", "yes", "c")


def test_start_rejects_bad_profile_and_device():
    with pytest.raises(ValueError, match="profile 'fast' is not one of quick, cpu, full"):
        tvbook.start("t", "fast", "cpu", 0)
    with pytest.raises(ValueError, match="device 'gpu' is not one of"):
        tvbook.start("t", "quick", "gpu", 0)
    with pytest.raises(ValueError, match="threads must be >= 1 .*got 0"):
        tvbook.start("t", "quick", "cpu", 0, threads=0)


def test_start_sets_the_thread_count_only_when_asked():
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        tvbook.start("t", "quick", "cpu", 0)
        assert torch.get_num_threads() == 2
        tvbook.start("t", "quick", "cpu", 0, threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_grade():
    assert tvbook.grade(True) == "reproduced"
    assert tvbook.grade(False, partly=True) == "partly reproduced"
    assert tvbook.grade(False) == "not reproduced"


def _notebook_with(tmp_path: Path, name: str, payloads: list[tuple[str, dict]]) -> Path:
    outputs = [nbformat.v4.new_output("display_data", data={mime: p, "text/plain": "x"}) for mime, p in payloads]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("", outputs=outputs)])
    path = tmp_path / f"{name}.ipynb"
    nbformat.write(nb, path)
    return path


def test_ledger_reads_verdicts_and_marks_the_rest_untested(tmp_path):
    rec = {"id": "dong-fig4c", "chapter": "emergence_linear", "measured": "TV 0.3 vs 1-shot 0.2",
           "verdict": "partly reproduced", "criterion": "c"}
    nb = _notebook_with(tmp_path, "emergence_linear", [(CLAIM_MIME, rec)])
    rows = {r["claim"]: r for r in report.ledger_rows([nb])}
    tested = [r for r in rows.values() if r["tested"]]
    assert len(tested) == 1 and tested[0]["verdict"] == "partly reproduced"
    assert tested[0]["measured"] == "TV 0.3 vs 1-shot 0.2"
    untested = [r for r in rows.values() if not r["tested"]]
    assert untested and all(r["verdict"] == report.NOT_TESTED for r in untested)


def test_run_records_require_exactly_one_record(tmp_path):
    nb = _notebook_with(tmp_path, "a", [])
    with pytest.raises(ValueError, match="a.ipynb has 0 run-settings records"):
        report.run_records([nb])


def test_markdown_table_escapes_pipes():
    table = report.markdown_table([{"a": "x|y"}], {"a": "A"})
    assert table.splitlines() == ["| A |", "|---|", "| x\\|y |"]


def _claim_cell(claim_id: str) -> nbformat.NotebookNode:
    rec = {"id": claim_id, "chapter": "alpha", "measured": "m", "verdict": "reproduced", "criterion": "c"}
    return nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output("display_data", data={CLAIM_MIME: rec})])


def test_claims_link_to_the_section_above_them_with_mysts_anchor(tmp_path):
    md = nbformat.v4.new_markdown_cell
    nb = nbformat.v4.new_notebook(cells=[
        md("# Alpha chapter"), _claim_cell("dong-thm1"),
        md("## Results\n\n```python\n# not a heading\n```"), md("## Rank *limits* of `TaskV` with $n$ demos"),
        md("#### Too deep for an anchor"), _claim_cell("dong-fig4c"),
        md("### Results"), _claim_cell("dong-prop3"),
    ])
    path = tmp_path / "alpha.ipynb"
    nbformat.write(nb, path)
    got = [(r["id"], r["notebook"], r["section"], r["anchor"]) for r in report.recorded_claims([path])]
    assert got == [("dong-thm1", "alpha", None, None),
                   ("dong-fig4c", "alpha", "Rank *limits* of `TaskV` with $n$ demos", "rank-limits-of-taskv-with--demos"),
                   ("dong-prop3", "alpha", "Results", "results-1")]
    rows = {r["claim"].split(", ", 1)[1]: r for r in report.ledger_rows([path])}
    assert report.where_tested(rows["Prop. 3, Fig. 2c"]) == "[alpha § Results](alpha.ipynb#results-1)"
    assert report.where_tested(rows["Thm. 1, Fig. 2a"]) == "[alpha](alpha.ipynb)"
    assert report.where_tested(rows["Prop. 5, Fig. 3c"]) == "planned: emergence_linear"


def test_verdict_counts_and_figure_by_paper_and_chapter():
    rows = [{"paper": "Dong et al.", "chapter": "a", "verdict": "reproduced"},
            {"paper": "Dong et al.", "chapter": "a", "verdict": "not reproduced"},
            {"paper": "Dong et al.", "chapter": "a", "verdict": "reproduced"},
            {"paper": "Yang et al.", "chapter": "b", "verdict": report.NOT_TESTED}]
    counts = report.verdict_counts(rows)
    assert list(counts.columns) == list(report.LEDGER_VERDICTS)
    assert counts.loc[("Dong et al.", "a")].tolist() == [2, 0, 1, 0]
    assert counts.loc[("Yang et al.", "b")].tolist() == [0, 0, 0, 1]
    fig = report.verdict_figure(counts)
    ax = fig.axes[0]
    widths = [(round(p.get_y() + p.get_height() / 2), p.get_width()) for p in ax.patches if p.get_width()]
    assert sorted(widths) == [(0, 1), (0, 2), (1, 1)]  # bar 0: 2 reproduced + 1 not; bar 1: 1 untested
    assert [t.get_text() for t in ax.get_yticklabels()] == ["Dong et al.: a", "Yang et al.: b"]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == list(report.LEDGER_VERDICTS)


def test_hide_boilerplate_tags_set_up_cells_only():
    code = nbformat.v4.new_code_cell
    nb = nbformat.v4.new_notebook(cells=[
        code('profile = "cpu"', metadata={"tags": ["parameters"]}),
        code("import torch\nimport tvlib.book as tvbook\n\nrun = tvbook.start('a', profile, 'cpu', 0)"),
        code("torch.set_num_threads(1)\nif steps < 1:\n    raise ValueError(steps)"),
        code("import numpy as np\nx = np.zeros(3)\nprint(x)"),
        code("model.start()"),
        code("%matplotlib inline"),
        code("tvbook.run_settings();", metadata={"tags": ["remove-input"]}),
        code("from tvlib.book import run_settings as rs\nrs();"),
        nbformat.v4.new_markdown_cell("import os"),
    ])
    assert execute.hide_boilerplate(nb) == [1, 2, 7]
    assert nb.cells[1].metadata.tags == ["hide-input"]
    assert nb.cells[0].metadata.tags == ["parameters"] and nb.cells[6].metadata.tags == ["remove-input"]


def test_executor_needs_no_checkout(tmp_path):
    """Installed without -e (a copy of tvlib, run elsewhere), it reads only the paths it is given."""
    import shutil
    import subprocess
    import sys

    site = tmp_path / "site"
    shutil.copytree(ROOT / "tvlib", site / "tvlib", ignore=shutil.ignore_patterns("__pycache__"))
    work = tmp_path / "work"
    (work / "book").mkdir(parents=True)
    (work / "profiles").mkdir()
    (work / "book" / "alpha.md").write_text(chapter_text('profile = "cpu"\nsteps = 10'))
    (work / "profiles" / "quick.yaml").write_text("chapters:\n  alpha:\n    steps: 2\n")
    env = {**os.environ, "PYTHONPATH": str(site)}
    cmd = [sys.executable, "-m", "tvlib.book.execute", "params", "book/alpha.md", "--profile", "quick", "--out", "out"]
    missing = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    assert missing.returncode == 2 and "--params" in missing.stderr
    done = subprocess.run([*cmd, "--params", "profiles"], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads((work / "out" / "alpha.json").read_text()) == {"profile": "quick", "steps": 2}
    where = subprocess.run([sys.executable, "-c", "import tvlib.book.execute as e; print(e.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True).stdout
    assert where.startswith(str(site))


def test_unique_scripts_drops_repeated_inline_scripts():
    from sphinx.builders.html._assets import _JavaScript

    from tvlib.book.sphinx_fixes import unique_scripts

    thebe = "const THEBE_JS_URL = 'x'"
    scripts = [_JavaScript("_static/a.js"), _JavaScript(None, body=thebe), _JavaScript("", body=thebe),
               _JavaScript("_static/a.js"), _JavaScript("", body="let other = 1")]
    assert [(js.filename, js.attributes.get("body")) for js in unique_scripts(scripts)] == [
        ("_static/a.js", None), (None, thebe), ("", "let other = 1")]


# --- the real book ------------------------------------------------------------------------------

CHAPTERS = sorted(execute.book_parameters(BOOK))


def test_book_has_executable_chapters():
    assert {"intro", "reproducibility"} <= set(CHAPTERS)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_defaults_equal_the_cpu_profile(chapter):
    defaults = execute.book_parameters(BOOK)[chapter]
    resolved = execute.resolve_parameters(BOOK / f"{chapter}.md", "cpu", PARAMS)
    assert {k: defaults[k] for k in resolved} == resolved


@pytest.mark.parametrize("profile", ["quick", "cpu", "full"])
def test_every_profile_resolves_for_every_chapter(profile):
    for chapter in CHAPTERS:
        assert execute.resolve_parameters(BOOK / f"{chapter}.md", profile, PARAMS)["profile"] == profile


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_starts_and_ends_as_the_contract_says(chapter):
    nb = execute.read_chapter(BOOK / f"{chapter}.md")
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert f'tvbook.start("{chapter}"' in code[1], "the cell after the parameters calls tvbook.start"
    assert code[-1].strip() == "tvbook.run_settings();", "the last cell is the run-settings box"
    for claim_id in re.findall(r'tvbook\.claim\(\s*"([^"]+)"', "\n".join(code)):
        assert claim_id in tvbook.load_claims()


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_figure_is_numbered_captioned_and_referred_to(chapter):
    nb = execute.read_chapter(BOOK / f"{chapter}.md")
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for cell in nb.cells:
        if cell.cell_type == "code" and "plt.show()" in cell.source:
            figure = cell.metadata.get("mystnb", {}).get("figure", {})
            assert figure.get("name", "").startswith("fig-") and figure.get("caption"), cell.source[:80]
            if "remove-input" not in cell.metadata.get("tags", []):
                assert f"{{numref}}`{figure['name']}`" in text, f"the text never refers to {figure['name']}"


def _toc_files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in _toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in _toc_files(v)]
    return []


def test_toc_lists_every_page_and_only_existing_ones():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"], *_toc_files(toc["parts"])]
    assert all((ROOT / f"{f}.md").is_file() for f in files), files
    pages = {f"book/{p.stem}" for p in BOOK.glob("*.md")}
    assert pages == set(files), f"pages missing from _toc.yml: {sorted(pages - set(files))}"


def test_claims_registry_is_well_formed():
    claims = tvbook.load_claims()
    assert len(claims) >= 20
    assert all(c.paper.startswith(("Dong", "Yang")) for c in claims.values())


def test_no_notebooks_are_tracked():
    tracked = os.popen(f"git -C {ROOT} ls-files '*.ipynb'").read()
    assert tracked == ""


def test_params_files_are_valid_yaml():
    for profile in ("quick", "cpu", "full"):
        data = execute.load_profile(profile, PARAMS)
        assert set(data) == {"shared", "chapters"}
        json.dumps(data)
