"""Keeps the ``services`` marker honest, so that ``pytest -m "not services"`` (``make unit``)
never needs, starts or touches Redis, PostgreSQL or a worker.

Two nets:

- at collection, a test that uses the ``stack`` fixture (directly or through a fixture built on
  it: ``clean_broker``, ``worker_factory``...) without the ``services`` marker stops the run
  with a message naming it;
- while a test without the marker runs, :mod:`tests.services` refuses to resolve, start or
  create anything (:class:`tests.services.ServicesRefused`), whatever path reached it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests import services

# Every fixture that reaches Redis, PostgreSQL or a worker process builds on this one.
SERVICE_FIXTURES = frozenset({"stack"})


def needs_services(item: pytest.Item) -> bool:
    return item.get_closest_marker("services") is not None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    unmarked = [
        item.nodeid
        for item in items
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) and not needs_services(item)
    ]
    if unmarked:
        listed = "\n  ".join(unmarked)
        pytest.exit(
            f"these tests use a service fixture ({', '.join(sorted(SERVICE_FIXTURES))}) but are not marked "
            f"`services` (add `pytestmark = pytest.mark.services` to the file or mark the test):\n  {listed}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    reason = None if needs_services(item) else f"{item.nodeid} is not marked `services` but reached tests/services.py"
    before = services.refuse(reason)
    try:
        yield
    finally:
        services.refuse(before)
