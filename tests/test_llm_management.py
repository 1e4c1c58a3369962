"""Tenant model management through the CLI, against the fake provider over loopback and the
test stack's Postgres: keys tested before they are saved (valid, wrong -> 401, quota, provider
down, a provider that echoes the key), named multi-part credentials, base-URL checks, delete
factory, ``llm list``, ``my-llms --details``, new-tenant defaults and key rotation."""

from __future__ import annotations

import json
import socket
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select

from tests.conftest import Stack, cli
from tests.fakeprovider import FakeProvider
from tests.test_cli import assert_one_line_error, ok_json

pytestmark = pytest.mark.services

KEY = "sk-test-valid-key-0001"
OTHER_KEY = "sk-test-wrong-key-9999"
EMBED = "text-embedding-3-small@OpenAI"


def new_tenant(stack: Stack, *extra: str, env: dict[str, str] | None = None) -> str:
    name = f"mgmt-{uuid.uuid4().hex[:8]}"
    ok_json(cli(stack, "tenant", "create", name, "--json", *extra, env=env))
    return name


def rows_of(tenant: str) -> list[Any]:
    from models.db import session_scope
    from models.tables import tenant_llm, tenants

    with session_scope() as s:
        tenant_id = s.execute(select(tenants.c.id).where(tenants.c.name == tenant)).scalar_one()
        return s.execute(select(tenant_llm).where(tenant_llm.c.tenant_id == tenant_id).order_by(tenant_llm.c.id)).all()


def openai_rows(tenant: str) -> list[Any]:
    return [r for r in rows_of(tenant) if r.factory == "OpenAI"]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- keys set


def test_keys_set_tests_the_key_on_the_cheapest_model_then_saves_it_for_every_catalog_model(
    stack: Stack, fake_provider: FakeProvider
) -> None:
    from conf.catalog import load_catalog
    from models import crypto
    from providers.registry import supported

    tenant = new_tenant(stack)
    # A model of the factory configured before (not in the catalog, another key) gets the new key too.
    ok_json(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            tenant,
            "--model",
            "my-finetune@OpenAI",
            "--type",
            "chat",
            "--api-key",
            OTHER_KEY,
            "--skip-check",
            "--json",
        )
    )
    (custom,) = openai_rows(tenant)
    proc = cli(
        stack,
        "keys",
        "set",
        "--tenant",
        tenant,
        "--factory",
        "OpenAI",
        "--api-key",
        "-",
        "--base-url",
        fake_provider.base_url,
        "--json",
        stdin=KEY + "\n",
    )
    saved = ok_json(proc)
    assert KEY not in proc.stdout + proc.stderr
    # One call: the first embedding model passed, so no other model was tried.
    assert [c.route for c in fake_provider.calls] == ["embeddings"]
    assert saved["checked_with"].endswith("@OpenAI") and saved["key_state"] == "valid"
    openai = next(f for f in load_catalog() if f.name == "OpenAI")
    have = set(supported()["OpenAI"])
    expected = {(f"{m.name}@OpenAI", t) for m in openai.models for t in m.model_types if t in have}
    expected.add(("my-finetune@OpenAI", "chat"))
    assert {(m["model"], m["type"]) for m in saved["models"]} == expected
    rows = openai_rows(tenant)
    assert {(f"{r.llm_name}@OpenAI", r.model_type) for r in rows} == expected
    assert {r.key_state for r in rows} == {"valid"} and all(r.key_checked_at for r in rows)
    assert len({r.api_key_enc for r in rows}) == 1  # encrypted once: one key, one token
    assert crypto.decrypt(rows[0].api_key_enc) == KEY and {r.key_hint for r in rows} == {KEY[-4:]}
    assert {r.api_base for r in rows} == {fake_provider.base_url}
    (finetune,) = [r for r in rows if r.llm_name == "my-finetune"]
    assert finetune.key_version == custom.key_version + 1  # a changed key: workers rebuild their bundles

    set_row(tenant, "tts-1", "tts", key_error="RATE_LIMIT: slow")  # what a revalidation round noted
    details = cli(stack, "my-llms", "--tenant", tenant, "--details")
    assert details.returncode == 0 and KEY not in details.stdout and f"…{KEY[-4:]}" in details.stdout
    for column in ("key state", "last validated", "last error", "base URL", "max tokens"):
        assert column in details.stdout
    assert fake_provider.base_url in details.stdout and " valid " in details.stdout
    assert "RATE_LIMIT: slow" in details.stdout
    plain = cli(stack, "my-llms", "--tenant", tenant)
    assert plain.returncode == 0 and f"…{KEY[-4:]}" in plain.stdout and "key state" not in plain.stdout
    listing = ok_json(cli(stack, "my-llms", "--tenant", tenant, "--json"))
    model = listing["OpenAI"][0]
    assert {"key_state", "key_checked_at", "key_error", "api_base", "max_tokens", "key_hint"} <= set(model)
    assert model["key_state"] == "valid" and model["key_checked_at"] and model["key_error"] is None
    assert "Builtin" in listing  # the new-tenant default

    # --skip-check saves the key for every row without a call, and says it is unchecked
    unchecked = ok_json(
        cli(
            stack,
            "keys",
            "set",
            "--tenant",
            tenant,
            "--factory",
            "OpenAI",
            "--api-key",
            OTHER_KEY,
            "--skip-check",
            "--json",
        )
    )
    assert unchecked["checked_with"] is None and unchecked["key_state"] == "unchecked"
    assert len(fake_provider.calls) == 1
    rows = openai_rows(tenant)
    assert {r.key_state for r in rows} == {"unchecked"} and not any(r.key_checked_at for r in rows)
    assert {crypto.decrypt(r.api_key_enc) for r in rows} == {OTHER_KEY} and {r.api_base for r in rows} == {""}


def test_keys_set_keeps_looking_after_a_rate_limited_model(stack: Stack, fake_provider: FakeProvider) -> None:
    """A busy model says nothing about the key (nor about the provider answering): the next is tried."""
    tenant = new_tenant(stack)
    fake_provider.rate_limit(1, times=1)
    saved = ok_json(
        cli(
            stack,
            "keys",
            "set",
            "--tenant",
            tenant,
            "--factory",
            "OpenAI",
            "--api-key",
            KEY,
            "--base-url",
            fake_provider.base_url,
            "--json",
        )
    )
    assert [(c.route, c.status) for c in fake_provider.calls] == [("embeddings", 429), ("embeddings", 200)]
    assert saved["key_state"] == "valid" and saved["checked_with"] == f"{fake_provider.calls[1].model}@OpenAI"


def test_keys_set_with_a_wrong_key_stops_at_the_first_refusal_and_saves_nothing(
    stack: Stack, fake_provider: FakeProvider
) -> None:
    """A key the provider refuses (401) is refused by every model: one call, not one a model, and
    the line says the others were skipped and why."""
    tenant = new_tenant(stack)
    proc = cli(
        stack,
        "keys",
        "set",
        "--tenant",
        tenant,
        "--factory",
        "OpenAI",
        "--api-key",
        OTHER_KEY,
        "--base-url",
        fake_provider.base_url,
    )
    line = assert_one_line_error(proc, 2, "the key was not saved", "AUTHENTICATION")
    assert OTHER_KEY not in line
    assert [c.status for c in fake_provider.calls] == [401]  # one call
    first = f"{fake_provider.calls[0].model}@OpenAI"
    assert f"NOT_TRIED: skipped: the provider refused the key (AUTHENTICATION) on {first}" in line
    assert line.count("Incorrect API key provided") == 1 and " more]" in line
    assert openai_rows(tenant) == []


def test_keys_set_with_quota_exhausted_saves_nothing(stack: Stack, fake_provider: FakeProvider) -> None:
    tenant = new_tenant(stack)
    fake_provider.quota(times=1000)
    proc = cli(
        stack,
        "keys",
        "set",
        "--tenant",
        tenant,
        "--factory",
        "OpenAI",
        "--api-key",
        KEY,
        "--base-url",
        fake_provider.base_url,
    )
    assert_one_line_error(proc, 2, "QUOTA")
    assert openai_rows(tenant) == []


def test_keys_set_with_the_provider_down_tries_once_and_saves_nothing(stack: Stack) -> None:
    tenant = new_tenant(stack)
    proc = cli(
        stack,
        "keys",
        "set",
        "--tenant",
        tenant,
        "--factory",
        "OpenAI",
        "--api-key",
        KEY,
        "--base-url",
        f"http://127.0.0.1:{closed_port()}/v1",
    )
    line = assert_one_line_error(proc, 2, "CONNECTION", "NOT_TRIED")
    # only the first model was called: the one CONNECTION entry names one model, every other is NOT_TRIED
    connection = next(part for part in line.split("; ") if "CONNECTION" in part)
    assert connection.count("@OpenAI") == 1 and " more]" not in connection, line
    assert openai_rows(tenant) == []


def test_a_provider_that_echoes_the_key_is_scrubbed_from_the_report(stack: Stack, fake_provider: FakeProvider) -> None:
    tenant = new_tenant(stack)
    fake_provider.echo_key_in_error(400, times=1000)
    proc = cli(
        stack,
        "keys",
        "set",
        "--tenant",
        tenant,
        "--factory",
        "OpenAI",
        "--api-key",
        KEY,
        "--base-url",
        fake_provider.base_url,
    )
    line = assert_one_line_error(proc, 2, "INVALID_REQUEST")
    assert fake_provider.calls and KEY not in line and "***" in line


def test_llm_add_is_tested_too_and_a_refused_key_leaves_nothing(stack: Stack, fake_provider: FakeProvider) -> None:
    tenant = new_tenant(stack)
    flags = [
        "--tenant",
        tenant,
        "--model",
        "gpt-4o-mini@OpenAI",
        "--type",
        "chat",
        "--base-url",
        fake_provider.base_url,
    ]
    assert_one_line_error(cli(stack, "llm", "add", *flags), 2, "OpenAI needs an API key")  # no call without one
    assert fake_provider.calls == []
    assert_one_line_error(
        cli(stack, "llm", "add", *flags, "--api-key", OTHER_KEY),
        2,
        "gpt-4o-mini@OpenAI did not accept it",
        "AUTHENTICATION",
    )
    assert openai_rows(tenant) == []
    added = ok_json(cli(stack, "llm", "add", *flags, "--api-key", KEY, "--json"))
    assert added["key_state"] == "valid"
    assert [c.route for c in fake_provider.calls] == ["chat/completions", "chat/completions"]
    # --skip-check saves without a call, and says so in the key state
    skipped = ok_json(cli(stack, "llm", "add", *flags, "--api-key", OTHER_KEY, "--skip-check", "--json"))
    assert skipped["key_state"] == "unchecked" and len(fake_provider.calls) == 2


# --------------------------------------------------------------------------- multi-part credentials


def test_multi_part_credentials_are_assembled_from_named_fields(stack: Stack, fake_provider: FakeProvider) -> None:
    """Azure-OpenAI: ``--api-key`` fills its ``api_key`` field, ``--field api_version=...`` the
    other; the fake sees Azure's deployment URL with the api-version and the ``api-key`` header."""
    from models import crypto

    tenant = new_tenant(stack)
    flags = [
        "--tenant",
        tenant,
        "--model",
        "my-embedding@Azure-OpenAI",
        "--type",
        "embedding",
        "--base-url",
        fake_provider.url,
    ]
    assert_one_line_error(
        cli(stack, "llm", "add", *flags, "--api-key", KEY, "--field", "region=eu"),
        2,
        "no credential field region",
        "api_key, api_version?",
    )
    assert_one_line_error(
        cli(stack, "llm", "add", *flags, "--field", "api_version=2024-10-21"), 2, "needs --field api_key"
    )
    line = assert_one_line_error(
        cli(stack, "llm", "add", *flags, "--field", "sk-pasted-without-a-name"), 2, "NAME=VALUE"
    )
    assert "sk-pasted-without-a-name" not in line  # it may have been a secret
    assert fake_provider.calls == []
    added = ok_json(
        cli(
            stack,
            "llm",
            "add",
            *flags,
            "--api-key",
            "-",
            "--field",
            "api_version=2024-10-21",
            "--json",
            stdin=KEY + "\n",
        )
    )
    assert added["key_state"] == "valid" and added["key_hint"] == KEY[-4:]
    (call,) = fake_provider.calls
    assert call.path == "/openai/deployments/my-embedding/embeddings?api-version=2024-10-21" and call.key == KEY
    (row,) = [r for r in rows_of(tenant) if r.factory == "Azure-OpenAI"]
    assert json.loads(crypto.decrypt(row.api_key_enc)) == {"api_key": KEY, "api_version": "2024-10-21"}


def test_a_service_account_json_is_read_from_a_file_and_stored_whole(stack: Stack, tmp_path: Path) -> None:
    from models import crypto

    account = {
        "type": "service_account",
        "project_id": "p",
        "private_key_id": "k" * 40,
        "private_key": "-----BEGIN PRIVATE KEY-----\n" + "A" * 2400 + "\n-----END PRIVATE KEY-----\n",
        "client_email": "svc@p.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    path = tmp_path / "sa.json"
    path.write_text(json.dumps(account))
    tenant = new_tenant(stack)
    proc = cli(
        stack,
        "llm",
        "add",
        "--tenant",
        tenant,
        "--model",
        "gemini-2.5-flash@Google Cloud",
        "--type",
        "chat",
        "--field",
        "project_id=p",
        "--field",
        "region=us-central1",
        "--field",
        f"service_account_json=@{path}",
        "--skip-check",
        "--json",
    )
    added = ok_json(proc)
    assert "PRIVATE KEY" not in proc.stdout and added["has_key"]
    (row,) = [r for r in rows_of(tenant) if r.factory == "Google Cloud"]
    stored = json.loads(crypto.decrypt(row.api_key_enc))
    assert json.loads(stored["service_account_json"]) == account and len(stored["service_account_json"]) > 2500


# --------------------------------------------------------------------------- base URL checks


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://metadata.google.internal/v1", "metadata"),
        ("http://[fe80::1]/v1", "link-local"),
        ("http://100.100.100.200/v1", "metadata"),
        ("ftp://example.com/v1", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("http://user:pw@example.com/v1", "user name or password"),
    ],
)
def test_dangerous_base_urls_are_refused_before_any_call(stack: Stack, url: str, needle: str) -> None:
    tenant = new_tenant(stack)
    proc = cli(
        stack,
        "llm",
        "add",
        "--tenant",
        tenant,
        "--model",
        EMBED,
        "--type",
        "embedding",
        "--api-key",
        KEY,
        "--base-url",
        url,
    )
    assert_one_line_error(proc, 2, needle)
    assert openai_rows(tenant) == []


def test_a_link_local_base_url_is_allowed_only_by_the_setting(stack: Stack) -> None:
    tenant = new_tenant(stack)
    flags = [
        "llm",
        "add",
        "--tenant",
        tenant,
        "--model",
        EMBED,
        "--type",
        "embedding",
        "--api-key",
        KEY,
        "--base-url",
        "http://169.254.10.10/v1",
        "--skip-check",
        "--json",
    ]
    assert_one_line_error(cli(stack, *flags[:-1]), 2, "MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS")
    added = ok_json(cli(stack, *flags, env={"MODELYARD_ALLOW_LINK_LOCAL_BASE_URLS": "1"}))
    assert added["api_base"] == "http://169.254.10.10/v1"
    # loopback (local model servers) needs no setting
    local = ok_json(cli(stack, *flags[:-4], "--base-url", "http://localhost:11434/v1", "--skip-check", "--json"))
    assert local["api_base"] == "http://localhost:11434/v1"


# --------------------------------------------------------------------------- listing, deleting, defaults


def set_row(tenant: str, llm_name: str, model_type: str, **values: Any) -> None:
    from sqlalchemy import update

    from models.db import session_scope
    from models.tables import tenant_llm

    (row,) = [r for r in rows_of(tenant) if (r.llm_name, r.model_type) == (llm_name, model_type)]
    with session_scope() as s:
        s.execute(update(tenant_llm).where(tenant_llm.c.id == row.id).values(**values))


def test_delete_factory_list_and_defaults(stack: Stack, fake_provider: FakeProvider, tmp_path: Path) -> None:
    from models.db import session_scope
    from models.tables import tenant_llm
    from providers.registry import supported

    tenant = new_tenant(stack)
    assert [(r.factory, r.llm_name, r.model_type) for r in rows_of(tenant)] == [
        ("Builtin", "all-MiniLM-L6-v2", "embedding")
    ]
    # Another tenant's model of the same factory: nothing below may touch it.
    other = new_tenant(stack)
    ok_json(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            other,
            "--model",
            "gpt-4o-mini@OpenAI",
            "--type",
            "chat",
            "--api-key",
            OTHER_KEY,
            "--skip-check",
            "--json",
        )
    )
    (theirs,) = openai_rows(other)
    ok_json(
        cli(
            stack,
            "keys",
            "set",
            "--tenant",
            tenant,
            "--factory",
            "OpenAI",
            "--api-key",
            KEY,
            "--base-url",
            fake_provider.base_url,
            "--json",
        )
    )
    assert openai_rows(other) == [theirs]
    ok_json(cli(stack, "llm", "disable", "--tenant", tenant, "--model", "gpt-4o@OpenAI", "--type", "chat", "--json"))
    set_row(tenant, "text-embedding-3-large", "embedding", key_state="invalid", key_error="AUTHENTICATION: revoked")
    set_row(tenant, "text-embedding-ada-002", "embedding", key_state="unchecked")

    embeddings = ok_json(cli(stack, "llm", "list", "--tenant", tenant, "--type", "embedding", "--json"))
    assert {r["type"] for r in embeddings} == {"embedding"}
    by_model = {r["model"]: r for r in embeddings}
    assert by_model[EMBED]["available"] is True and by_model["all-MiniLM-L6-v2@Builtin"]["available"] is True
    assert by_model["jina-embeddings-v3@Jina"]["available"] is False  # not configured
    assert by_model["text-embedding-3-large@OpenAI"]["available"] is False  # its key is known to be invalid
    assert by_model["text-embedding-ada-002@OpenAI"]["available"] is True  # an unchecked key is not invalid
    chats = {r["model"]: r for r in ok_json(cli(stack, "llm", "list", "--tenant", tenant, "--type", "chat", "--json"))}
    assert chats["gpt-4o@OpenAI"]["available"] is False and chats["gpt-4o-mini@OpenAI"]["available"] is True
    everything = ok_json(cli(stack, "llm", "list", "--tenant", tenant, "--json"))
    assert len(everything) > 1000 and len({r["type"] for r in everything}) > 3
    # A configured row of a type modelyard does not serve (say its provider module went away) is not available.
    have = supported()
    unserved = next(r for r in everything if not r["supported"] and r["factory"] in have and r["factory"] != "OpenAI")
    assert unserved["type"] not in have[unserved["factory"]]
    with session_scope() as s:
        s.execute(
            tenant_llm.insert().values(
                tenant_id=theirs.tenant_id,
                factory=unserved["factory"],
                llm_name=unserved["model"].rsplit("@", 1)[0],
                model_type=unserved["type"],
                status="enabled",
                key_state="valid",
                api_key_enc=theirs.api_key_enc,
            )
        )
    listed = ok_json(cli(stack, "llm", "list", "--tenant", other, "--json"))
    mine = {(r["model"], r["type"]): r["available"] for r in listed}
    assert mine[(unserved["model"], unserved["type"])] is False and mine[("gpt-4o-mini@OpenAI", "chat")] is True

    deleted = ok_json(cli(stack, "llm", "delete-factory", "--tenant", tenant, "--factory", "OpenAI", "--json"))
    assert deleted["deleted"] > 10 and openai_rows(tenant) == []
    assert [r.factory for r in rows_of(tenant)] == ["Builtin"]
    assert openai_rows(other) == [theirs]  # another tenant's models of the factory stay
    assert_one_line_error(cli(stack, "llm", "delete-factory", "--tenant", tenant, "--factory", "OpenAI"), 3, "OpenAI")

    # A defaults file of one's own: a keyed default is added when its key's variable is set, skipped otherwise.
    custom = tmp_path / "defaults.toml"
    custom.write_text(
        '[[model]]\ntype = "chat"\nmodel = "gpt-4o-mini@OpenAI"\napi_key_env = "MY_DEFAULT_KEY"\n'
        f'base_url = "{fake_provider.base_url}"\n'
    )
    env = {"MODELYARD_TENANT_DEFAULTS": str(custom)}
    assert rows_of(new_tenant(stack, env=env)) == []
    keyed = new_tenant(stack, env={**env, "MY_DEFAULT_KEY": KEY})
    (row,) = rows_of(keyed)
    assert (row.llm_name, row.model_type, row.key_state, row.key_hint) == ("gpt-4o-mini", "chat", "unchecked", KEY[-4:])
    custom.write_text("[[model]]\ntype = \n")
    assert_one_line_error(cli(stack, "tenant", "create", "broken-defaults", env=env), 1, "MODELYARD_TENANT_DEFAULTS")
    custom.write_text('[[model]]\ntype = "chat"\nmodel = "mineru@MinerU"\n')  # a factory no provider serves
    assert_one_line_error(
        cli(stack, "tenant", "create", "unserved-defaults", env=env),
        1,
        "MODELYARD_TENANT_DEFAULTS",
        "mineru@MinerU",
        "MinerU",
    )


# --------------------------------------------------------------------------- rotation


def test_keys_rotate_re_encrypts_under_the_newest_secret_and_back(stack: Stack, fake_provider: FakeProvider) -> None:
    """Rows encrypted under K1; with ``K2,K1`` set, ``keys rotate`` moves every row to K2 (K2
    alone now opens them); a second rotate finds them current. A secret that opens nothing is one
    line naming the setting and changes nothing; so is a malformed one. Rotating back to K1 leaves
    the session's other tests their keys."""
    k1 = stack.env["MODELYARD_SECRET_KEY"]
    k2 = Fernet.generate_key().decode()
    tenant = new_tenant(stack)
    ok_json(
        cli(
            stack,
            "llm",
            "add",
            "--tenant",
            tenant,
            "--model",
            EMBED,
            "--type",
            "embedding",
            "--api-key",
            KEY,
            "--base-url",
            fake_provider.base_url,
            "--json",
        )
    )
    (before,) = openai_rows(tenant)
    # Another tenant's key, saved once for all of a factory's models: its rows share one token.
    shared = new_tenant(stack)
    ok_json(
        cli(
            stack,
            "keys",
            "set",
            "--tenant",
            shared,
            "--factory",
            "OpenAI",
            "--api-key",
            OTHER_KEY,
            "--skip-check",
            "--json",
        )
    )
    assert len({r.api_key_enc for r in openai_rows(shared)}) == 1
    try:
        report = ok_json(cli(stack, "keys", "rotate", "--json", env={"MODELYARD_SECRET_KEY": f"{k2},{k1}"}))
        assert report["rotated"] >= 1 + len(openai_rows(shared))
        (after,) = openai_rows(tenant)
        assert after.api_key_enc != before.api_key_enc and after.key_version == before.key_version
        assert Fernet(k2.encode()).decrypt(after.api_key_enc.encode()).decode() == KEY
        # each key is still its own, and a shared key still one token (revalidation groups rows by it)
        tokens = {r.api_key_enc for r in openai_rows(shared)}
        assert len(tokens) == 1 and Fernet(k2.encode()).decrypt(tokens.pop().encode()).decode() == OTHER_KEY
        again = ok_json(cli(stack, "keys", "rotate", "--json", env={"MODELYARD_SECRET_KEY": f"{k2},{k1}"}))
        assert again["rotated"] == 0 and again["current"] >= 1

        k3 = Fernet.generate_key().decode()
        assert_one_line_error(
            cli(stack, "keys", "rotate", env={"MODELYARD_SECRET_KEY": k3}),
            1,
            "MODELYARD_SECRET_KEY",
            "cannot be decrypted",
        )
        assert_one_line_error(
            cli(stack, "keys", "rotate", env={"MODELYARD_SECRET_KEY": "not-a-fernet-key"}), 1, "MODELYARD_SECRET_KEY"
        )
        assert openai_rows(tenant)[0].api_key_enc == after.api_key_enc
    finally:
        back = ok_json(cli(stack, "keys", "rotate", "--json", env={"MODELYARD_SECRET_KEY": f"{k1},{k2}"}))
    assert back["rotated"] >= 1
    assert Fernet(k1.encode()).decrypt(openai_rows(tenant)[0].api_key_enc.encode()).decode() == KEY
