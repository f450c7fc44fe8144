"""The package installs its `timevault` command, and CI runs the test command the README gives."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _readme_commands() -> list[str]:
    """Commands in the README's first code block, which must come before any section heading."""
    text = (REPO_ROOT / "README.md").read_text()
    match = re.search(r"^```[a-z]*\n(.*?)^```", text, re.M | re.S)
    assert match, "README.md has no code block"
    assert "\n## " not in text[: match.start()], "the commands must be at the very top of README.md"
    return [line.split("#", 1)[0].strip() for line in match.group(1).splitlines() if line.strip()]


def _script_commands(path: Path) -> list[str]:
    lines = (line.strip() for line in path.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_timevault_entry_point_declared() -> None:
    (ep,) = entry_points(group="console_scripts", name="timevault")
    assert ep.value == "timevault.cli.main:run"


def test_timevault_help_exits_zero() -> None:
    exe = Path(sys.executable).parent / "timevault"
    assert exe.is_file(), f"{exe} missing: run scripts/setup.sh (pip install -e '.[test]')"
    proc = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "repo" in proc.stdout


def test_readme_starts_with_up_and_test() -> None:
    assert _readme_commands() == ["make up", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    test_command = _readme_commands()[1]
    commands = _script_commands(REPO_ROOT / ".ci" / "run")
    assert "set -euo pipefail" in commands
    # the test command is the last thing CI does, so its exit code is the script's
    assert commands[-1] == test_command
    assert all("||" not in c and "pytest" not in c for c in commands), "CI must not mask or bypass make test"


def _recipe(target: str) -> list[str]:
    makefile = (REPO_ROOT / "Makefile").read_text()
    recipe = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert recipe, f"Makefile has no {target} target"
    return [line.strip() for line in recipe.group(1).splitlines()]


def test_make_test_runs_ruff_mypy_and_pytest_without_masking_exit_codes() -> None:
    lines = _recipe("test")
    assert lines == ["$(VENV)/bin/ruff check .", "$(VENV)/bin/mypy", "$(PY) -m pytest $(PYTEST_ARGS)"]
    for line in lines:
        assert "||" not in line and ";" not in line and "&" not in line, line
        assert not line.startswith("-"), "a leading '-' ignores the step's exit code"


def test_mypy_alone_checks_every_package() -> None:
    """`mypy` with no arguments (as `make test` runs it) covers all source folders, tests and bench."""
    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert set(config["files"]) == {"shared", "proto", "services", "tests", "bench"}
    assert set(config["mypy_path"]) >= {"shared", "proto", "services"}
    assert config["explicit_package_bases"] is True
    assert "ignore_errors" not in config and "ignore-without-code" in config["enable_error_code"]


def test_type_ignores_name_their_error_code() -> None:
    bare = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for folder in ("shared", "proto", "services", "tests", "bench")
        for path in (REPO_ROOT / folder).rglob("*.py")
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"#\s*type:\s*ignore(?!\[)", line)
    ]
    assert bare == []


def test_test_tools_are_in_the_test_extra() -> None:
    extra = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["test"]
    names = {re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0] for requirement in extra}
    assert {"pytest", "ruff", "mypy"} <= names, "scripts/setup.sh installs .[test]: the tools must be there"


def test_setup_script_parses() -> None:
    subprocess.run(["bash", "-n", str(REPO_ROOT / "scripts" / "setup.sh")], check=True, timeout=30)
