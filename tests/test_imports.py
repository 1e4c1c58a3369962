"""The import contracts in pyproject.toml ([tool.importlinter]), checked by import-linter: each
package imports only the layers below it (conf < providers < models < tasks < workers), and no
module imports another, directly or through others, that imports it back. Imports inside
functions count too."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("conf", "providers", "models", "tasks", "workers")
LINT = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` on the packages under ``root`` (which come first on the path)."""
    return subprocess.run(
        [sys.executable, "-c", LINT],
        check=False,
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_the_layers_and_has_no_import_circle() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_and_a_circle_are_caught(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "providers" / "http.py", "a") as fh:
        fh.write("\n\ndef _planted() -> None:\n    import models.db  # noqa: F401\n")
    with open(tmp_path / "workers" / "output.py", "a") as fh:
        fh.write("\nfrom workers import cli  # noqa: E402, F401\n")

    done = lint_imports(tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "0 kept, 2 broken" in done.stdout
    assert "providers.http -> models.db" in done.stdout
    assert "No cycles are allowed in workers" in done.stdout
