"""Execute one chapter under a profile: jupytext -> papermill -> executed notebook, atomically.

Command line (used by the Makefile)::

    python -m tvlib.book.execute params book/*.md --profile quick --out PARAMS_DIR
    python -m tvlib.book.execute run CHAPTER.md --profile quick --out EXECUTED.ipynb [--set device=cuda]
    python -m tvlib.book.execute nbval EXECUTED.ipynb ...

``params`` writes the chapter's resolved parameters, and rewrites the file only when they changed,
so that make re-executes a chapter exactly when its own profile section changed. ``run`` executes
the chapter with papermill into a temporary file and moves it into place only on success: a
failed chapter leaves no executed notebook behind, and the error names the chapter and the cell.

After execution the values papermill injected are folded back into the chapter's ``parameters``
cell and the injected cell is dropped, so the rendered page shows the values that actually ran.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
PARAMS_DIR = ROOT / "params"
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


def available_profiles(params_dir: Path = PARAMS_DIR) -> list[str]:
    return sorted(p.stem for p in params_dir.glob("*.yaml"))


def load_profile(profile: str, params_dir: Path = PARAMS_DIR) -> dict[str, Any]:
    """Read ``params/<profile>.yaml``: ``shared`` keys and per-chapter ``chapters`` sections."""
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


def resolve_parameters(chapter_path: Path, profile: str, overrides: dict[str, Any] | None = None,
                       params_dir: Path = PARAMS_DIR, strict_overrides: bool = True) -> dict[str, Any]:
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


def run_chapter(chapter_path: Path, profile: str, out: Path, overrides: dict[str, Any] | None = None,
                params_dir: Path = PARAMS_DIR) -> None:
    """Execute a chapter into ``out``; on any failure nothing is left at ``out``."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    chapter = chapter_path.stem
    set_kernel_env()
    values = resolve_parameters(chapter_path, profile, overrides, params_dir)
    nb = read_chapter(chapter_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.unlink()  # a failed re-run must not leave the old, now stale, notebook looking fresh
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{chapter}.") as tmp:
        src, dst = Path(tmp) / "input.ipynb", Path(tmp) / out.name
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
        executed.metadata.setdefault("tvbook", {})["profile"] = profile
        nbformat.write(executed, dst)
        os.replace(dst, out)


def run_nbval(notebooks: list[Path]) -> int:
    """Re-execute executed notebooks under nbval and compare every output (sanitized)."""
    import pytest

    set_kernel_env()
    sanitize = ROOT / "tests" / "nbval_sanitize.cfg"
    return pytest.main(["-q", "-p", "no:python", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
                        "--nbval-sanitize-with", str(sanitize), *map(str, notebooks)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tvlib.book.execute", description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["params", "run", "nbval"])
    parser.add_argument("chapters", type=Path, nargs="+",
                        help="book/<name>.md (one for 'run'); for 'nbval', executed notebooks")
    parser.add_argument("--profile")
    parser.add_argument("--out", type=Path, help="'run': the executed notebook; 'params': a folder")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args(argv)
    if args.action == "nbval":
        sys.exit(run_nbval(args.chapters))
    if args.profile is None or args.out is None:
        parser.error(f"'{args.action}' needs --profile and --out")
    try:
        overrides = _parse_overrides(args.overrides)
        if args.action == "params":
            for chapter in args.chapters:
                values = resolve_parameters(chapter, args.profile, overrides, strict_overrides=False)
                write_if_changed(args.out / f"{chapter.stem}.json", json.dumps(values, indent=1, sort_keys=True) + "\n")
        elif len(args.chapters) != 1:
            raise ProfileError(f"'run' executes one chapter, got {len(args.chapters)}")
        else:
            run_chapter(args.chapters[0], args.profile, args.out, overrides)
    except ProfileError as err:
        sys.exit(f"error: {err}")


if __name__ == "__main__":
    main()
