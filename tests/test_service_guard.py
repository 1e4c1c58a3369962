"""tests/service_guard.py: a test that needs a service but is not marked ``services`` cannot
slip into ``make unit`` (``pytest -m "not services"``), by a fixture or by tests/services.py."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CONFTEST = """
import pytest

pytest_plugins = ["tests.service_guard"]


@pytest.fixture
def stack():  # stands in for the real one: only its name matters to the guard
    return "stack"


@pytest.fixture
def clean_broker(stack):
    return stack
"""


@pytest.fixture
def guarded(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.delenv("MODELYARD_TEST_REDIS_URL", raising=False)
    monkeypatch.delenv("MODELYARD_TEST_DATABASE_URL", raising=False)
    pytester.makeini("[pytest]\nmarkers =\n    services: needs services\n")
    pytester.makeconftest(CONFTEST)
    return pytester


def test_an_unmarked_test_using_the_stack_through_a_fixture_stops_the_run(guarded: pytest.Pytester) -> None:
    guarded.makepyfile(
        """
        import pytest

        def test_sneaky(clean_broker):
            pass

        @pytest.mark.services
        def test_honest(clean_broker):
            pass

        def test_plain():
            pass
        """
    )
    result = guarded.runpytest("-m", "not services")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines(["*not marked `services`*", "*test_sneaky*"])
    assert "test_honest" not in result.stdout.str() and "test_plain" not in result.stdout.str()


def test_an_unmarked_test_reaching_tests_services_fails_and_starts_nothing(guarded: pytest.Pytester) -> None:
    guarded.makepyfile(
        """
        import pytest
        from tests import services

        def test_reaches_redis():
            services.redis_url()

        def test_makes_a_database():
            services.fresh_database("postgresql+psycopg://postgres@127.0.0.1:1/x")

        @pytest.mark.services
        def test_marked_may_ask():
            assert services._refusal is None
        """
    )
    result = guarded.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(["*ServicesRefused: *test_reaches_redis is not marked `services`*"])
    assert "throwaway" not in result.stdout.str()
