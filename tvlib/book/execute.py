"""Execute one chapter under a profile: jupytext -> papermill -> executed notebook, atomically.

Command line (used by the Makefile, which passes every path: the package never reads the checkout)::

    python -m tvlib.book.execute params book/*.md --profile quick --params params --out PARAMS_DIR
    python -m tvlib.book.execute run CHAPTER.md --profile quick --params params --out EXECUTED.ipynb \
        [--scratch DIR] [--set device=cuda]
    python -m tvlib.book.execute nbval EXECUTED.ipynb ... --sanitize tests/nbval_sanitize.cfg

``params`` writes the chapter's resolved parameters, and rewrites the file only when they changed,
so that make re-executes a chapter exactly when its own profile section changed. ``run`` executes
the chapter with papermill in a scratch folder outside the staged book and moves the result into
place only on success: a failed or killed chapter leaves no executed notebook and nothing else in
the book behind, and a failure names the chapter and the cell.

After execution the values papermill injected are folded back into the chapter's ``parameters``
cell and the injected cell is dropped, so the rendered page shows the values that actually ran.
Set-up cells (imports, ``tvbook.start``, ``tvbook.run_settings``) are tagged ``hide-input``: the
page opens on the story, and a toggle shows their code.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

PROFILE_KEY = "profile"
# The environment of every kernel that executes a chapter (papermill here, nbval under `make test`):
# no progress bars or warnings on stderr (nbval compares stderr too), and nothing from the network.
KERNEL_ENV = {
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}


def set_kernel_env() -> None:
    """Give kernels started from this process the book's environment.

    MPLBACKEND is removed so that figures use the kernel's inline backend: under e.g. agg,
    plt.show() would silently leave a chapter without its figures.
    """
    os.environ.update(KERNEL_ENV)
    os.environ.pop("MPLBACKEND", None)


class ProfileError(ValueError):
    """A profile file or a ``--set`` override that does not fit the chapter."""


def available_profiles(params_dir: Path) -> list[str]:
    return sorted(p.stem for p in params_dir.glob("*.yaml"))


def load_profile(profile: str, params_dir: Path) -> dict[str, Any]:
    """Read ``<params_dir>/<profile>.yaml``: ``shared`` keys and per-chapter ``chapters`` sections."""
    if not params_dir.is_dir():
        raise ProfileError(f"the profile folder {params_dir} does not exist")
    path = params_dir / f"{profile}.yaml"
    if not path.is_file():
        raise ProfileError(f"unknown profile {profile!r}; valid profiles: {', '.join(available_profiles(params_dir))}")
    data = yaml.safe_load(path.read_text()) or {}
    unknown = set(data) - {"shared", "chapters"}
    if unknown:
        raise ProfileError(f"{path.name}: unknown top-level keys {sorted(unknown)}; valid: 'shared', 'chapters'")
    return {"shared": data.get("shared") or {}, "chapters": data.get("chapters") or {}}


def read_chapter(path: Path):
    """The chapter as an nbformat notebook (jupytext reads the MyST text)."""
    import jupytext

    return jupytext.read(path)


def parameters_cell(nb, chapter: str):
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ProfileError(f"chapter {chapter!r} must have exactly one cell tagged 'parameters', found {len(cells)}")
    return cells[0]


def parameter_defaults(source: str, chapter: str) -> dict[str, Any]:
    """Names and literal defaults of a parameters cell: one ``name = literal`` per line."""
    defaults: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            raise ProfileError(f"chapter {chapter!r}: parameters cell line {node.lineno} is not 'name = literal'")
        if node.lineno != node.end_lineno:
            raise ProfileError(f"chapter {chapter!r}: parameter {node.targets[0].id!r} must fit on one line")
        defaults[node.targets[0].id] = ast.literal_eval(node.value)
    return defaults


def resolve_parameters(chapter_path: Path, profile: str, params_dir: Path, overrides: dict[str, Any] | None = None,
                       strict_overrides: bool = True) -> dict[str, Any]:
    """The parameters papermill injects: profile name, shared keys, chapter section, overrides.

    Shared keys go to the chapters that define them, and each must be defined by some chapter;
    every key of the chapter's own section and every override must be one of its parameters.
    Anything else is a typo and an error that names the valid choices.
    """
    chapter = chapter_path.stem
    all_defaults = book_parameters(chapter_path.parent)
    defaults = all_defaults[chapter]
    prof = load_profile(profile, params_dir)
    stray = set(prof["chapters"]) - set(all_defaults)
    if stray:
        raise ProfileError(f"{profile}.yaml has sections for unknown chapters {sorted(stray)}; chapters: {sorted(all_defaults)}")
    every_name = set().union(*all_defaults.values())
    overrides = overrides or {}
    for source, keys in ((f"{profile}.yaml shared keys", prof["shared"]), ("--set overrides", overrides)):
        unused = sorted(set(keys) - every_name)
        if unused:
            raise ProfileError(f"{source} {unused} are parameters of no chapter; known parameters: {sorted(every_name)}")
    shared = {k: v for k, v in prof["shared"].items() if k in defaults}
    if not strict_overrides:
        overrides = {k: v for k, v in overrides.items() if k in defaults}
    resolved = {PROFILE_KEY: profile, **shared, **(prof["chapters"].get(chapter) or {}), **overrides}
    unknown = sorted(set(resolved) - set(defaults))
    if unknown:
        raise ProfileError(f"chapter {chapter!r} has no parameter(s) {unknown} (from profile {profile!r}); "
                           f"its parameters: {sorted(defaults)}")
    return resolved


def book_parameters(book_dir: Path) -> dict[str, dict[str, Any]]:
    """Parameter defaults of every executable chapter (text notebooks with a jupytext header)."""
    out = {}
    for path in sorted(book_dir.glob("*.md")):
        if path.read_text().startswith("---\njupytext:"):
            out[path.stem] = parameter_defaults(parameters_cell(read_chapter(path), path.stem).source, path.stem)
    return out


def fold_parameters(nb, values: dict[str, Any]) -> None:
    """Write the values that ran into the parameters cell and drop papermill's injected cell."""
    cell = parameters_cell(nb, "executed")
    lines = cell.source.splitlines()
    for node in ast.parse(cell.source).body:
        name = node.targets[0].id
        if name in values:
            line = lines[node.lineno - 1]
            comment = line[node.end_col_offset:]
            lines[node.lineno - 1] = f"{line[:node.col_offset]}{name} = {values[name]!r}{comment}"
    cell.source = "\n".join(lines)
    nb.cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


def ignore_run_settings(nb) -> None:
    """Tag the run-settings cell ``nbval-ignore-output``: its wall time differs on every run.

    The cell must show nothing else, so that no other output escapes nbval's comparison.
    """
    from tvlib.book.chapter import RUN_MIME

    for cell in nb.cells:
        outputs = cell.get("outputs", [])
        if any(RUN_MIME in o.get("data", {}) for o in outputs):
            if len(outputs) != 1:
                raise ProfileError("the cell calling tvbook.run_settings() must have no other output "
                                   f"(it has {len(outputs)}); end it with ';'")
            tags = cell.metadata.setdefault("tags", [])
            if "nbval-ignore-output" not in tags:
                tags.append("nbval-ignore-output")


# Calls that only set a chapter up; a cell of nothing but these (and imports) is hidden behind a toggle.
SETUP_CALLS = frozenset({"tvlib.book.start", "tvlib.book.run_settings", "torch.set_num_threads"})
# Tags that already decide how a cell shows; such cells are left as they are.
PLACED_TAGS = frozenset({"parameters", "remove-cell", "remove-input", "hide-input", "hide-cell", "hide-output"})


def _dotted_name(node: ast.expr, aliases: dict[str, str]) -> str | None:
    """``tvbook.start`` -> ``tvlib.book.start`` after ``import tvlib.book as tvbook``."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([aliases.get(node.id, node.id), *reversed(parts)])


def _is_setup(stmt: ast.stmt, aliases: dict[str, str]) -> bool:
    """Whether a statement only sets the chapter up; records the names that imports bind."""
    if isinstance(stmt, ast.Import):
        for a in stmt.names:
            aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        return True
    if isinstance(stmt, ast.ImportFrom):
        for a in stmt.names:
            aliases[a.asname or a.name] = f"{stmt.module}.{a.name}"
        return True
    if isinstance(stmt, ast.If) and not stmt.orelse and all(isinstance(s, ast.Raise) for s in stmt.body):
        return True  # a check of the parameters
    value = stmt.value if isinstance(stmt, (ast.Expr, ast.Assign)) else None
    return isinstance(value, ast.Call) and _dotted_name(value.func, aliases) in SETUP_CALLS


def hide_boilerplate(nb) -> list[int]:
    """Tag ``hide-input`` every code cell that only imports, checks parameters or calls SETUP_CALLS.

    The page then opens on narrative and figures; the code stays one click away, and outputs (the
    run-settings box) stay visible. The parameters cell and cells already tagged are left alone.
    Returns the indices of the cells tagged.
    """
    aliases: dict[str, str] = {}
    tagged = []
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        try:
            body = ast.parse(cell.source).body
        except SyntaxError:
            continue  # IPython magics: not plain set-up
        setup = [_is_setup(stmt, aliases) for stmt in body]  # every statement, so that all imports count
        tags = cell.metadata.get("tags", [])
        if setup and all(setup) and not PLACED_TAGS & set(tags):
            cell.metadata["tags"] = [*tags, "hide-input"]
            tagged.append(index)
    return tagged


def write_if_changed(path: Path, text: str) -> bool:
    """Atomically replace ``path`` with ``text`` unless it already holds exactly that."""
    if path.is_file() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return True


def _parse_overrides(pairs: list[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise ProfileError(f"--set expects NAME=VALUE, got {pair!r}")
        name, value = pair.split("=", 1)
        out[name] = yaml.safe_load(value)
    return out


def _describe_cell(executed: Path) -> str:
    """'code cell K (first line)' for the cell with an error output; K counts the chapter's code cells."""
    import nbformat

    code = [c for c in nbformat.read(executed, as_version=4).cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])]
    for number, cell in enumerate(code, 1):
        if any(o.output_type == "error" for o in cell.get("outputs", [])):
            lines = cell.source.strip().splitlines()
            return f"code cell {number} (`{lines[0][:60] if lines else ''}`)"
    return "an unknown cell"


@contextmanager
def _workdir(scratch: Path | None, chapter: str) -> Iterator[Path]:
    """Where papermill works: ``scratch/<chapter>`` (cleared first: a killed run's leftovers go),
    or a fresh system temporary folder when ``scratch`` is None."""
    if scratch is None:
        with tempfile.TemporaryDirectory(prefix=f"tvbook-{chapter}-") as tmp:
            yield Path(tmp)
        return
    work = scratch / chapter
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_chapter(chapter_path: Path, profile: str, out: Path, params_dir: Path,
                overrides: dict[str, Any] | None = None, scratch: Path | None = None,
                skip_tags: frozenset[str] = frozenset()) -> None:
    """Execute a chapter into ``out``; on any failure nothing is left at ``out``.

    Cells tagged with one of ``skip_tags`` are left out (a budget study skips the cells that draw
    the study it is making).

    Papermill's input and partial output live in the scratch folder (see ``_workdir``), never in
    the staged book beside ``out``: a run killed mid-way leaves nothing there that the HTML build
    would pick up, and make re-executes the chapter next time because ``out`` is missing.
    """
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    chapter = chapter_path.stem
    set_kernel_env()
    values = resolve_parameters(chapter_path, profile, params_dir, overrides)
    nb = read_chapter(chapter_path)
    nb.cells = [c for c in nb.cells if not skip_tags & set(c.metadata.get("tags", []))]
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # a failed re-run must not leave the old, now stale, notebook looking fresh
    with _workdir(scratch, chapter) as work:
        src, dst = work / "input.ipynb", work / "executed.ipynb"
        nbformat.write(nb, src)
        try:
            pm.execute_notebook(str(src), str(dst), parameters=values, kernel_name="python3",
                                cwd=str(out.parent), progress_bar=False, log_output=False)
        except PapermillExecutionError as err:
            raise SystemExit(f"chapter {chapter!r} failed in {_describe_cell(dst)}: "
                             f"{err.ename}: {err.evalue}") from None
        executed = nbformat.read(dst, as_version=4)
    fold_parameters(executed, values)
    ignore_run_settings(executed)
    hide_boilerplate(executed)
    executed.metadata.setdefault("tvbook", {})["profile"] = profile
    write_if_changed(out, nbformat.writes(executed) + "\n")


def run_nbval(notebooks: list[Path], sanitize: Path) -> int:
    """Re-execute executed notebooks under nbval and compare every output, sanitized by ``sanitize``."""
    import pytest

    if not sanitize.is_file():
        raise ProfileError(f"nbval sanitizer {sanitize} does not exist")
    set_kernel_env()
    return pytest.main(["-q", "-p", "no:python", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                        "--nbval-sanitize-with", str(sanitize), *map(str, notebooks)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tvlib.book.execute", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["params", "run", "nbval"])
    parser.add_argument("chapters", type=Path, nargs="+",
                        help="book/<name>.md (one for 'run'); for 'nbval', executed notebooks")
    parser.add_argument("--profile")
    parser.add_argument("--params", type=Path, help="'params', 'run': the folder of the profile files")
    parser.add_argument("--out", type=Path, help="'run': the executed notebook; 'params': a folder")
    parser.add_argument("--scratch", type=Path, help="'run': where papermill works (default: a system temporary folder)")
    parser.add_argument("--sanitize", type=Path, help="'nbval': the nbval sanitizer file")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    try:
        if args.action == "nbval":
            if args.sanitize is None:
                parser.error("'nbval' needs --sanitize")
            sys.exit(run_nbval(args.chapters, args.sanitize))
        if args.profile is None or args.out is None or args.params is None:
            parser.error(f"'{args.action}' needs --profile, --params and --out")
        overrides = _parse_overrides(args.overrides)
        if args.action == "params":
            for chapter in args.chapters:
                values = resolve_parameters(chapter, args.profile, args.params, overrides, strict_overrides=False)
                write_if_changed(args.out / f"{chapter.stem}.json", json.dumps(values, indent=1, sort_keys=True) + "\n")
        elif len(args.chapters) != 1:
            raise ProfileError(f"'run' executes one chapter, got {len(args.chapters)}")
        else:
            run_chapter(args.chapters[0], args.profile, args.out, args.params, overrides, args.scratch)
    except ProfileError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
