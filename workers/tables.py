"""Human output for the CLI: one console, and tables (scripts use ``--json`` instead)."""

from __future__ import annotations

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
