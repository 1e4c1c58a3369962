"""A property-based fuzz of the API's own OpenAPI schema (schemathesis): every operation, with
generated parameters and bodies, against the real server with a real tenant token. No answer
may be a 5xx, and every answer must match the schema (status code, content type, body).

Left out: ``PUT /api/keys/{factory}`` and ``POST /api/llms``, which test a key by calling the
provider over the network (their checks have their own tests)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_stack import ApiServer, make_tenant, make_token, start_api
from tests.conftest import Stack
from tests.fakeprovider import FakeProvider

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture(scope="module")
def fuzz_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    server = start_api(
        stack,
        tmp_path_factory.mktemp("fuzz"),
        {"MODELYARD_API_WAIT_SECONDS": "1", "MODELYARD_API_MAX_UPLOAD_BYTES": "100000"},
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def fuzz_token(stack: Stack, fuzz_api: ApiServer) -> Iterator[str]:
    with FakeProvider(keys={"sk-test-valid-key-0001"}) as fp:
        yield make_token(stack, make_tenant(fp.base_url), "jobs,models")["token"]


@pytest.fixture(scope="module")
def api_schema(fuzz_api: ApiServer):
    return schemathesis.openapi.from_url(f"{fuzz_api.base_url}/openapi.json")


SKIP = {("PUT", "/api/keys/{factory}"), ("POST", "/api/llms")}


def not_a_server_error(ctx, response, case) -> bool:  # schemathesis' check signature
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path}: {response.status_code} {response.text[:300]}"
    )
    return True


def test_no_5xx_and_every_answer_matches_the_schema(api_schema, fuzz_token: str) -> None:
    headers = {"Authorization": f"Bearer {fuzz_token}"}
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    tested = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        if (operation.method.upper(), operation.path) in SKIP:
            continue

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        def run(case) -> None:
            response = case.call(headers=headers, timeout=20)
            case.validate_response(response, checks=checks)

        run()
        tested += 1
    assert tested >= 20
