"""`make check` can fail: the project's ruff and mypy configuration, run on a planted error, refuses it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"

CLEAN = '''"""A clean module."""


def pairs(names: list[str], ages: list[int]) -> dict[str, int]:
    return dict(zip(names, ages, strict=True))
'''
# F401 (pyflakes) and B905 (bugbear, not among ruff's defaults: the project's rule set is in use).
UNCLEAN = '''"""A module with lint errors."""

import os


def pairs(names: list[str], ages: list[int]) -> dict[str, int]:
    return dict(zip(names, ages))
'''
# An unannotated function (disallow_untyped_defs) and a plain type error.
MISTYPED = '''"""A module with type errors."""


def untyped(x):
    return x


def count(names: list[str]) -> int:
    total: int = "none"
    return total + len(names)
'''


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


def _module(tmp_path: Path, name: str, source: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    return str(path)


def test_ruff_refuses_a_planted_lint_error_and_passes_a_clean_module(tmp_path: Path) -> None:
    bad = _run("ruff", "check", "--config", str(CONFIG), "--no-cache", _module(tmp_path, "unclean", UNCLEAN))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "F401" in bad.stdout and "B905" in bad.stdout, bad.stdout

    good = _run("ruff", "check", "--config", str(CONFIG), "--no-cache", _module(tmp_path, "clean", CLEAN))
    assert good.returncode == 0, good.stdout + good.stderr


def test_ruff_format_refuses_an_unformatted_module(tmp_path: Path) -> None:
    crooked = _module(tmp_path, "crooked", "x = {  'a':1 }\n")
    bad = _run("ruff", "format", "--check", "--config", str(CONFIG), "--no-cache", crooked)
    assert bad.returncode == 1 and "crooked.py" in bad.stdout, bad.stdout + bad.stderr

    # 115 characters: within the project's line length (120), past ruff's default (88).
    wide = "WORDS = [" + ", ".join(f'"word{n:02d}"' for n in range(10)) + ', "end"]\n'
    assert 88 < len(wide) - 1 <= 120
    good = _run("ruff", "format", "--check", "--config", str(CONFIG), "--no-cache", _module(tmp_path, "wide", wide))
    assert good.returncode == 0, good.stdout + good.stderr


def test_mypy_refuses_a_planted_type_error_and_passes_a_clean_module(tmp_path: Path) -> None:
    cache = str(tmp_path / "mypy-cache")
    bad = _run("mypy", "--config-file", str(CONFIG), "--cache-dir", cache, _module(tmp_path, "mistyped", MISTYPED))
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "[no-untyped-def]" in bad.stdout and "[assignment]" in bad.stdout, bad.stdout

    good = _run("mypy", "--config-file", str(CONFIG), "--cache-dir", cache, _module(tmp_path, "clean", CLEAN))
    assert good.returncode == 0, good.stdout + good.stderr
