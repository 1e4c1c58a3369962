"""The LLMBundle resolves what a worker needs and refuses, with a clear error, what it cannot
serve: a row whose factory or type has no provider class (the catalog lists more than modelyard
runs) is a refusal that fails the chunk, never an exception that crashes the worker's task."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import Stack

pytestmark = pytest.mark.services


def test_an_unsupported_catalog_model_is_refused_not_crashed(stack: Stack) -> None:
    from conf.errors import InvalidRequest
    from models.bundle import LLMBundle
    from models.db import session_scope
    from models.tables import tenant_llm
    from models.tenants import create_tenant

    with session_scope() as s:
        tenant_id = create_tenant(s, f"bundle-{uuid.uuid4().hex[:8]}", defaults=False)
        # Written directly: the management API refuses it, but a row may predate a provider's removal.
        s.execute(
            tenant_llm.insert().values(
                tenant_id=tenant_id, factory="MinerU", llm_name="mineru", model_type="chat", api_base="", max_tokens=0
            )
        )
    with (
        session_scope() as s,
        pytest.raises(InvalidRequest, match="no chat provider is registered for factory 'MinerU'"),
    ):
        LLMBundle.open(s, tenant_id, "chat", "mineru@MinerU")


def test_a_multi_part_credential_reaches_the_provider_as_its_fields(stack: Stack) -> None:
    """The bundle hands the provider the stored credential; the provider sees its named fields and
    every secret field is among the values scrubbed from error texts."""
    from models.bundle import LLMBundle
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm
    from providers.base import encode_credentials

    credential = encode_credentials({"ak": "baidu-access-key-0001", "sk": "baidu-secret-key-0002"})
    with session_scope() as s:
        tenant_id = create_tenant(s, f"bundle-{uuid.uuid4().hex[:8]}", defaults=False)
        save_llm(s, tenant_id, "ERNIE-4.0-8K@BaiduYiyan", "chat", api_key=credential)
    with session_scope() as s:
        bundle = LLMBundle.open(s, tenant_id, "chat", "ERNIE-4.0-8K@BaiduYiyan")
    assert bundle.provider.credentials == {"ak": "baidu-access-key-0001", "sk": "baidu-secret-key-0002"}
    assert {"baidu-access-key-0001", "baidu-secret-key-0002"} <= set(bundle.secrets)
