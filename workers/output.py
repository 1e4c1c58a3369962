"""What the CLI prints: JSON for scripts (``--json``), tables for people on one console, and
errors and notes as one line each on stderr. Every command module prints through this one, which
imports nothing of the CLI's, so that the CLI modules never import each other in a circle."""

from __future__ import annotations

import json
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

# Piped output gets a wide page, not rich's 80 columns, so that no cell is cut short.
out = Console(width=None if sys.stdout.isatty() else 200)


def table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    view = Table(title=title, title_justify="left")
    for col in columns:
        view.add_column(col)
    for row in rows:
        view.add_row(*("" if v is None else str(v) for v in row))
    out.print(view)


def print_json(value: Any) -> None:
    json.dump(value, sys.stdout, default=str)
    sys.stdout.write("\n")


def error(message: str) -> None:
    sys.stderr.write(f"modelyard: error: {message}\n")


def note(message: str) -> None:
    sys.stderr.write(f"modelyard: note: {message}\n")
