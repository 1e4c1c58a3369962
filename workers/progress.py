"""A progress bar for a running job (on stderr, so stdout stays clean for --json)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


@contextmanager
def job_progress(*, enabled: bool = True) -> Iterator[Callable[[dict[str, Any]], None]]:
    """Yields a callback for ``producer.wait(on_progress=...)``."""
    if not enabled:
        yield lambda _status: None
        return
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task_id = None

    def update(status: dict[str, Any]) -> None:
        nonlocal task_id
        items = status["items"]
        if task_id is None:
            task_id = progress.add_task(f"job {status['id']}", total=items["total"], failed=0)
        progress.update(
            task_id,
            completed=items["succeeded"] + items["failed"],
            failed=items["failed"],
            description=f"job {status['id']} {status['status']}",
        )

    with progress:
        yield update
