"""Submitting a bad embedding job: a clear error, nothing written, nothing sent.

``submit_embedding`` validates as it streams the input into one transaction, so a bad item --
first, last, or item 70,000 of 80,000 -- must roll the whole job back and leave the broker
untouched. Each refusal is a :class:`conf.errors.UserError` subclass (the CLI prints it as one
line) whose message names the problem and, for an item, which item.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from conf.errors import Conflict, InvalidRequest, NotFound, UserError
from tests.conftest import Stack, footprint

pytestmark = pytest.mark.services

MODEL = "text-embedding-3-small@OpenAI"
CHAT_MODEL = "gpt-4o-mini@OpenAI"
BASE_URL = "http://127.0.0.1:9/v1"  # never called: nothing here reaches a worker


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> str:
    """A tenant with the embedding model, a chat model, and a disabled embedding model."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm, set_llm_status

    with session_scope() as session:
        tenant_id = create_tenant(session, f"validation-{uuid.uuid4().hex[:10]}", defaults=False)
        save_llm(session, tenant_id, MODEL, "embedding", api_key="sk-validation-0001", api_base=BASE_URL)
        save_llm(session, tenant_id, CHAT_MODEL, "chat", api_key="sk-validation-0001", api_base=BASE_URL)
        save_llm(
            session,
            tenant_id,
            "text-embedding-3-large@OpenAI",
            "embedding",
            api_key="sk-validation-0001",
            api_base=BASE_URL,
        )
        set_llm_status(session, tenant_id, "text-embedding-3-large@OpenAI", "embedding", enabled=False)
    return tenant_id


def refused(tenant: str, texts: Any, model: str = MODEL) -> UserError:
    from tasks import producer

    with pytest.raises(UserError) as info:
        producer.submit_embedding(tenant, model, texts)
    return info.value


def test_a_good_submission_does_write_and_send(stack: Stack, clean_broker: None, tenant: str) -> None:
    """The yardstick for the tests below: a valid job adds its rows and its messages."""
    from tasks import producer

    before = footprint(stack)
    producer.submit_embedding(tenant, MODEL, ["one text", "another text"], chunk_size=1)
    after = footprint(stack)
    assert after["jobs"] == before["jobs"] + 1
    assert after["job_items"] == before["job_items"] + 2
    assert after["job_chunks"] == before["job_chunks"] + 2
    assert after["queued messages"] == before["queued messages"] + 2


@pytest.mark.parametrize(
    ("texts", "error", "words"),
    [
        pytest.param([], InvalidRequest, ["at least one input"], id="empty-list"),
        pytest.param(["fine", ""], InvalidRequest, ["item '1'", "empty"], id="empty-string"),
        pytest.param(["fine", " \t\n "], InvalidRequest, ["item '1'", "empty"], id="whitespace-only"),
        pytest.param(["fine", 42], InvalidRequest, ["item 1", "int"], id="non-string-item"),
        pytest.param(
            [{"custom_id": "a", "text": "fine"}, {"custom_id": "b", "text": 3.5}],
            InvalidRequest,
            ["item 'b'", "string"],
            id="non-string-text",
        ),
        pytest.param(
            [{"custom_id": "a", "text": "fine"}, {"custom_id": "b"}],
            InvalidRequest,
            ["item 'b'", "string"],
            id="missing-text",
        ),
        pytest.param(
            ["fine", "x" * 200_001],
            InvalidRequest,
            ["item '1'", "200,001", "MODELYARD_MAX_TEXT_CHARS"],
            id="oversized-text",
        ),
        pytest.param(
            [{"custom_id": "a", "text": "one"}, {"custom_id": "b", "text": "two"}, {"custom_id": "a", "text": "three"}],
            Conflict,
            ["'a'", "unique"],
            id="duplicate-custom-id",
        ),
        pytest.param("a single string, not a list of texts", InvalidRequest, ["single string"], id="bare-string"),
    ],
)
def test_bad_inputs_are_refused_and_nothing_is_written(
    unchanged: None, tenant: str, texts: Any, error: type[UserError], words: list[str]
) -> None:
    """Each malformed input is refused with its own error class and a message naming it."""
    exc = refused(tenant, texts)
    assert type(exc) is error
    for word in words:
        assert word in str(exc), f"{word!r} not in {str(exc)!r}"


def test_unknown_tenant_is_not_found(unchanged: None, tenant: str) -> None:
    exc = refused("no-such-tenant", ["text"])
    assert isinstance(exc, NotFound)
    assert "no-such-tenant" in str(exc)


def test_unknown_model_is_not_found(unchanged: None, tenant: str) -> None:
    exc = refused(tenant, ["text"], model="text-embedding-9-huge@OpenAI")
    assert isinstance(exc, NotFound)
    assert "text-embedding-9-huge@OpenAI" in str(exc) and "not configured" in str(exc)


def test_malformed_model_name_is_invalid(unchanged: None, tenant: str) -> None:
    exc = refused(tenant, ["text"], model="text-embedding-3-small")
    assert isinstance(exc, InvalidRequest)
    assert "NAME@FACTORY" in str(exc)


def test_model_configured_for_another_type_is_not_an_embedding_model(unchanged: None, tenant: str) -> None:
    """A chat model the tenant has configured cannot run an embedding job."""
    exc = refused(tenant, ["text"], model=CHAT_MODEL)
    assert isinstance(exc, NotFound)
    assert CHAT_MODEL in str(exc) and "embedding" in str(exc)


def test_disabled_model_is_refused(unchanged: None, tenant: str) -> None:
    exc = refused(tenant, ["text"], model="text-embedding-3-large@OpenAI")
    assert isinstance(exc, InvalidRequest)
    assert "disabled" in str(exc)


def test_oversized_text_limit_follows_the_setting(stack: Stack, unchanged: None, tenant: str) -> None:
    """``MODELYARD_MAX_TEXT_CHARS`` sets the limit: 100 characters pass, 101 do not."""
    from tests.conftest import apply_env

    apply_env({"MODELYARD_MAX_TEXT_CHARS": "100"})
    try:
        exc = refused(tenant, [{"custom_id": "ok", "text": "y" * 100}, {"custom_id": "long-one", "text": "y" * 101}])
    finally:
        apply_env({"MODELYARD_MAX_TEXT_CHARS": None, **stack.env})
    assert isinstance(exc, InvalidRequest)
    assert "'long-one'" in str(exc) and "101" in str(exc) and "100" in str(exc)


def test_duplicate_custom_id_across_insert_batches_is_named(unchanged: None, tenant: str) -> None:
    """A custom id repeated thousands of items later (in another insert batch) is found and named."""
    texts = ({"custom_id": f"row-{i}", "text": f"text {i}"} for i in range(12_000))
    dup = ({"custom_id": "row-17", "text": "again"},)
    exc = refused(tenant, (item for source in (texts, dup) for item in source))
    assert isinstance(exc, Conflict)
    assert "'row-17'" in str(exc)


def test_bad_item_deep_in_a_large_stream_rolls_everything_back(unchanged: None, tenant: str) -> None:
    """Item 70,000 of 80,000 is empty: the 70,000 good items already streamed into the
    transaction are rolled back with the job, and the message names the bad item."""

    def stream() -> Iterator[dict[str, str]]:
        for i in range(80_000):
            yield {"custom_id": f"chunk-{i}", "text": "" if i == 70_000 else f"passage number {i}"}

    exc = refused(tenant, stream())
    assert isinstance(exc, InvalidRequest)
    assert "'chunk-70000'" in str(exc) and "empty" in str(exc)


def test_an_unknown_embedding_input_type_is_refused(tenant: str, unchanged: None) -> None:
    from tasks import producer

    with pytest.raises(InvalidRequest, match="input_type must be one of document, query"):
        producer.submit_embedding(tenant, MODEL, ["a text"], input_type="passages")
