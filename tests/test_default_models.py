"""A tenant's default model per type: set only to one of its enabled models of that type,
cleared, ignored once the model is disabled or deleted; through the CLI and in the database."""

from __future__ import annotations

import pytest

from tests.conftest import Stack, cli
from tests.test_cli import assert_one_line_error, ok_json
from tests.test_llm_management import new_tenant

pytestmark = pytest.mark.services

SMALL = "text-embedding-3-small@OpenAI"
LARGE = "text-embedding-3-large@OpenAI"
CHAT = "gpt-4o-mini@OpenAI"


def add(stack: Stack, tenant: str, model: str, model_type: str) -> None:
    flags = ["--tenant", tenant, "--model", model, "--type", model_type]
    ok_json(cli(stack, "llm", "add", *flags, "--api-key", "sk-test-unchecked-0001", "--skip-check", "--json"))


def tenant_id_of(name: str) -> str:
    from models.db import session_scope
    from models.tenants import resolve_tenant

    with session_scope() as s:
        return resolve_tenant(s, name)


def test_set_clear_refuse_and_stale_defaults_in_the_database(stack: Stack) -> None:
    from conf.errors import InvalidRequest
    from models.db import session_scope
    from models.defaults import clear_default_model, default_models, set_default_model
    from models.tenants import delete_llm, set_llm_status

    tenant = new_tenant(stack)
    add(stack, tenant, SMALL, "embedding")
    add(stack, tenant, LARGE, "embedding")
    add(stack, tenant, CHAT, "chat")
    tid = tenant_id_of(tenant)
    other = tenant_id_of(new_tenant(stack))

    with session_scope() as s:
        set_default_model(s, tid, "embedding", SMALL)
        set_default_model(s, tid, "chat", CHAT)
        set_default_model(s, tid, "embedding", LARGE)  # replaces the first choice
    with session_scope() as s:
        assert default_models(s, tid) == {"chat": CHAT, "embedding": LARGE}
        assert default_models(s, other) == {}

    for model, model_type, why in (
        (CHAT, "embedding", "not one of this tenant's enabled embedding models"),  # the wrong type
        ("nope@OpenAI", "embedding", "not one of this tenant's enabled"),
        (SMALL, "speech", "model type must be one of"),
        ("no-factory", "embedding", "@"),
    ):
        with pytest.raises(InvalidRequest, match=why), session_scope() as s:
            set_default_model(s, tid, model_type, model)
    with pytest.raises(InvalidRequest, match="not one of"), session_scope() as s:
        set_default_model(s, other, "embedding", SMALL)  # another tenant's model
    with session_scope() as s:
        set_llm_status(s, tid, SMALL, "embedding", enabled=False)
    with pytest.raises(InvalidRequest, match="enabled"), session_scope() as s:
        set_default_model(s, tid, "embedding", SMALL)
    with session_scope() as s:
        assert default_models(s, tid) == {"chat": CHAT, "embedding": LARGE}

    # A default whose model is disabled or deleted no longer counts.
    with session_scope() as s:
        set_llm_status(s, tid, LARGE, "embedding", enabled=False)
        assert default_models(s, tid) == {"chat": CHAT}
        set_llm_status(s, tid, LARGE, "embedding", enabled=True)
        assert default_models(s, tid) == {"chat": CHAT, "embedding": LARGE}
        delete_llm(s, tid, CHAT, "chat")
        assert default_models(s, tid) == {"embedding": LARGE}
        clear_default_model(s, tid, "embedding")
        clear_default_model(s, tid, "chat")  # nothing to clear: no error
        assert default_models(s, tid) == {}


def test_llm_default_through_the_cli(stack: Stack) -> None:
    tenant = new_tenant(stack)
    add(stack, tenant, SMALL, "embedding")
    add(stack, tenant, LARGE, "embedding")
    base = ["llm", "default", "--tenant", tenant]

    assert ok_json(cli(stack, *base, "--json")) == {}
    assert ok_json(cli(stack, *base, "--type", "embedding", "--model", LARGE, "--json")) == {"embedding": LARGE}
    plain = cli(stack, *base)
    assert plain.returncode == 0 and "embedding" in plain.stdout and LARGE in plain.stdout
    listing = ok_json(cli(stack, "my-llms", "--tenant", tenant, "--json"))
    assert {m["model"]: m["default"] for m in listing["OpenAI"]} == {SMALL: False, LARGE: True}

    assert_one_line_error(
        cli(stack, *base, "--type", "chat", "--model", LARGE), 2, "not one of this tenant's enabled chat models"
    )
    assert_one_line_error(cli(stack, *base, "--model", LARGE), 2, "need --type")
    assert ok_json(cli(stack, *base, "--type", "embedding", "--clear", "--json")) == {}
