"""Hostile input, through the real CLI (a subprocess) and the Python producer API, against
Postgres and Redis: each case is refused up front with one line that names the input, the
item and the limit; nothing is written and nothing is sent; no error text carries another
item's content; the Python API raises our own :class:`InvalidRequest` with the same line.
A property-based test (hypothesis) then throws arbitrary texts, ids and payloads at submit.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from conf.errors import InvalidRequest, UserError
from tests.conftest import ROOT, Stack, footprint

pytestmark = pytest.mark.services

MODEL = "text-embedding-3-small@OpenAI"
CHAT = "gpt-4o-mini@OpenAI"
OTHER = "PRIVATE-NEIGHBOUR-TEXT"  # the content of the good items: must never appear in an error


@pytest.fixture(scope="module")
def tenant(stack: Stack) -> tuple[str, str]:
    """(id, name) of a tenant with an embedding and a chat model (never called: no worker here)."""
    from models.db import session_scope
    from models.tenants import create_tenant, save_llm

    name = f"hostile-{uuid.uuid4().hex[:8]}"
    with session_scope() as session:
        tenant_id = create_tenant(session, name, defaults=False)
        for model, model_type in ((MODEL, "embedding"), (CHAT, "chat")):
            save_llm(session, tenant_id, model, model_type, api_key="sk-hostile-0001", api_base="http://127.0.0.1:9/v1")
    return tenant_id, name


def cli(
    stack: Stack, *args: str, stdin: bytes = b"", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        check=False,
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        env={**os.environ, **stack.env, **(env or {})},
        timeout=120,
    )


def one_line(proc: subprocess.CompletedProcess[bytes], *needles: str) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, f"exit {proc.returncode}: {err[-3000:]}"
    assert len(err.splitlines()) == 1 and err.startswith("modelyard: error: "), err[-3000:]
    assert proc.stdout == b""
    assert OTHER not in err and "[parameters" not in err and "Traceback" not in err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


GOOD = f"{OTHER} one\n{OTHER} two\n".encode()
GOOD_JSONL = (json.dumps({"custom_id": "fine", "text": f"{OTHER} three"}) + "\n").encode()


@pytest.mark.parametrize(
    ("name", "content", "needles"),
    [
        ("nul.txt", GOOD + b"before\x00after\n", ["nul.txt:3", "NUL", "U+0000"]),
        ("nul.jsonl", GOOD_JSONL + b'{"custom_id": "n", "text": "x\\u0000y"}\n', ["nul.jsonl:2", "'n'", "NUL"]),
        (
            "surrogate.jsonl",
            GOOD_JSONL + b'{"custom_id": "s", "text": "x\\ud800y"}\n',
            ["surrogate.jsonl:2", "surrogate"],
        ),
        ("latin1.txt", GOOD + "caf\u00e9\n".encode("latin-1"), ["latin1.txt:3", "not valid UTF-8"]),
        ("deep.jsonl", GOOD_JSONL + b"[" * 100_000 + b"]" * 100_000 + b"\n", ["deep.jsonl:2", "nested", "levels"]),
        (
            "object-id.jsonl",
            GOOD_JSONL + b'{"custom_id": {"a": 1}, "text": "t"}\n',
            ["object-id.jsonl:2", "custom_id must be a string", "dict"],
        ),
        (
            "null-id.jsonl",
            GOOD_JSONL + b'{"custom_id": null, "text": "t"}\n',
            ["null-id.jsonl:2", "custom_id must be a string"],
        ),
        (
            "control-id.jsonl",
            GOOD_JSONL + b'{"custom_id": "a\\u001b[31m", "text": "t"}\n',
            ["control-id.jsonl:2", "U+001B", "control"],
        ),
        (
            "long-id.jsonl",
            GOOD_JSONL + json.dumps({"custom_id": "i" * 300, "text": "t"}).encode() + b"\n",
            ["long-id.jsonl:2", "300 characters", "256", "MODELYARD_MAX_CUSTOM_ID_CHARS"],
        ),
        (
            "huge-line.txt",
            GOOD + b"w" * 5_000_000,
            ["huge-line.txt:3", "longer than 4,194,304 bytes", "MODELYARD_MAX_PAYLOAD_BYTES"],
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and "." in v else None,
)
def test_cli_refuses_a_hostile_file(
    stack: Stack,
    tenant: tuple[str, str],
    unchanged: None,
    tmp_path: Path,
    name: str,
    content: bytes,
    needles: list[str],
) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes(GOOD)
    path = tmp_path / name
    path.write_bytes(content)
    one_line(cli(stack, "embed", "--tenant", tenant[1], "--model", MODEL, str(good), str(path), "--json"), *needles)


@pytest.mark.parametrize(
    ("stdin", "needles"),
    [
        (GOOD + b"a\x00b\n", ["stdin:3", "NUL"]),
        (GOOD + b"\xff\xfe broken\n", ["stdin:3", "not valid UTF-8"]),
        (GOOD_JSONL + b'{"custom_id": "z", "text": "\\udfff"}\n', ["stdin:2", "surrogate"]),
    ],
    ids=["nul", "invalid-utf8", "lone-surrogate"],
)
def test_cli_refuses_hostile_standard_input(
    stack: Stack, tenant: tuple[str, str], unchanged: None, stdin: bytes, needles: list[str]
) -> None:
    one_line(cli(stack, "embed", "--tenant", tenant[1], "--model", MODEL, "-", "--json", stdin=stdin), *needles)


def test_cli_refuses_chunk_size_zero(stack: Stack, tenant: tuple[str, str], unchanged: None) -> None:
    one_line(
        cli(stack, "embed", "--tenant", tenant[1], "--model", MODEL, "-", "--chunk-size", "0", stdin=GOOD),
        "chunk size",
        "at least 1",
        "got 0",
    )


def test_the_line_limit_follows_its_setting(stack: Stack, tenant: tuple[str, str], unchanged: None) -> None:
    one_line(
        cli(
            stack,
            "embed",
            "--tenant",
            tenant[1],
            "--model",
            MODEL,
            "-",
            stdin=GOOD + b"x" * 101 + b"\n",
            env={"MODELYARD_MAX_PAYLOAD_BYTES": "100"},
        ),
        "stdin:3",
        "longer than 100 bytes",
    )


# --------------------------------------------------------------------------- the Python API


def chat(custom_id: Any = "c1", content: Any = "hello", **payload: Any) -> Any:
    from models.jobs import ItemRow

    return ItemRow(custom_id, payload={"messages": [{"role": "user", "content": content}], **payload})


def api_refusal(tenant_id: str, model_type: str, items: list[Any], **kwargs: Any) -> str:
    from tasks import producer

    if model_type == "embedding":
        submit = functools.partial(producer.submit_embedding, tenant_id, MODEL, items, **kwargs)
    else:
        submit = functools.partial(producer.submit, tenant_id, model_type, CHAT, items, **kwargs)
    with pytest.raises(InvalidRequest) as info:
        submit()
    message = str(info.value)
    assert "\n" not in message and OTHER not in message and len(message) < 400, message
    return message


@pytest.mark.parametrize(
    ("model_type", "bad", "kwargs", "needles"),
    [
        ("embedding", "nul\x00here", {}, ["item '2'", "NUL"]),
        ("embedding", "lone \ud800 surrogate", {}, ["item '2'", "surrogate", "U+D800"]),
        ("embedding", {"custom_id": {"nested": "object"}, "text": "t"}, {}, ["item 2", "custom_id must be a string"]),
        ("embedding", {"custom_id": 7, "text": "t"}, {}, ["item 2", "custom_id must be a string", "int"]),
        ("chat", chat("x" * 100_000), {}, ["item 2", "100,000 characters", "MODELYARD_MAX_CUSTOM_ID_CHARS"]),
        ("chat", chat(None), {}, ["item 2", "custom_id must be a string", "null"]),
        (
            "chat",
            chat("big", "y" * 10_000_000),
            {},
            ["item 'big'", "bytes", "4,194,304", "MODELYARD_MAX_PAYLOAD_BYTES"],
        ),
        ("chat", chat("raw", b"\x89PNG"), {}, ["item 'raw'", "payload.messages[0].content", "bytes"]),
        (
            "chat",
            chat("nan", "t", gen_conf={"temperature": math.nan}),
            {},
            ["item 'nan'", "gen_conf.temperature", "finite"],
        ),
        ("chat", chat("set", "t", tools={"a", "b"}), {}, ["item 'set'", "payload.tools", "set"]),
        ("chat", chat("nul", "a\x00"), {}, ["item 'nul'", "payload.messages[0].content", "NUL"]),
        (
            "chat",
            chat("deep", "t", gen_conf=[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["x"]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]),
            {},
            ["item 'deep'", "nested more than 32 levels", "MODELYARD_MAX_PAYLOAD_DEPTH"],
        ),
        ("chat", chat("ctl\x07"), {}, ["item 2", "U+0007", "control"]),
    ],
    ids=[
        "emb-nul",
        "emb-surrogate",
        "emb-object-id",
        "emb-int-id",
        "chat-100k-id",
        "chat-none-id",
        "chat-10MB",
        "chat-bytes",
        "chat-nan",
        "chat-set",
        "chat-nul",
        "chat-deep",
        "chat-control-id",
    ],
)
def test_api_refuses_hostile_items(
    tenant: tuple[str, str], unchanged: None, model_type: str, bad: Any, kwargs: dict[str, Any], needles: list[str]
) -> None:
    good: list[Any] = (
        [f"{OTHER} a", f"{OTHER} b"]
        if model_type == "embedding"
        else [chat("g1", f"{OTHER} a"), chat("g2", f"{OTHER} b")]
    )
    message = api_refusal(tenant[0], model_type, [*good, bad], **kwargs)
    for needle in needles:
        assert needle in message, f"{needle!r} not in {message!r}"


def test_api_refuses_too_many_chat_messages(tenant: tuple[str, str], unchanged: None) -> None:
    from models.jobs import ItemRow

    item = ItemRow("long-chat", payload={"messages": [{"role": "user", "content": "hi"}] * 1001})
    message = api_refusal(tenant[0], "chat", [item])
    assert "item 'long-chat'" in message and "1,001 messages" in message and "MODELYARD_MAX_CHAT_MESSAGES" in message


def test_api_refuses_chunk_size_zero_and_a_bad_idempotency_key(tenant: tuple[str, str], unchanged: None) -> None:
    assert "got 0" in api_refusal(tenant[0], "embedding", ["t"], chunk_size=0)
    assert "idempotency key" in api_refusal(tenant[0], "embedding", ["t"], idempotency_key="k" * 1000)
    assert "tenant" in api_refusal("ten\x00ant", "embedding", ["t"])


def test_an_integrity_error_that_is_no_duplicate_is_not_called_one(stack: Stack, tenant: tuple[str, str]) -> None:
    """Below the producer's checks: the store names a duplicate custom id only when there is one,
    and the database error's text never carries the statement's parameters (other items)."""
    from sqlalchemy.exc import IntegrityError

    from models.db import session_scope
    from models.jobs import ItemRow, insert_items, insert_job
    from workers.cli import internal_error_line

    def insert() -> None:
        with session_scope() as session:
            job_id = uuid.uuid4().hex[:16]
            insert_job(
                session,
                job_id=job_id,
                tenant_id=tenant[0],
                tenant_llm_id=1,
                model_type="embedding",
                model=MODEL,
                options={},
                idempotency_key=None,
            )
            insert_items(session, job_id, [ItemRow("ok", text=f"{OTHER} x"), ItemRow(None, text="t")])  # type: ignore[arg-type]

    with pytest.raises(IntegrityError) as info:
        insert()
    assert OTHER not in str(info.value)
    line = internal_error_line(info.value)
    assert OTHER not in line and "\n" not in line and line.startswith("NotNullViolation")


# --------------------------------------------------------------------------- property-based

_plain = st.text(st.characters(codec="utf-8", exclude_categories=("Cc",)), min_size=1, max_size=40)
# A plain text with one of the characters PostgreSQL, UTF-8 or a terminal cannot take.
_spiked = st.builds(
    lambda a, c, b: a + c + b, _plain, st.sampled_from(["\x00", "\ud800", "\udfff", "\x1b", "\x07"]), _plain
)
_json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-1000, 1000)
    | _plain
    | st.one_of(st.floats(), st.integers(), st.text(), _spiked, st.binary(max_size=4))
)  # the last group: mostly hostile
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
_ids = st.from_regex(r"[a-z0-9-]{1,12}", fullmatch=True) | st.one_of(
    st.text(max_size=300), _spiked, st.integers(), st.none(), st.just("same")
)
_texts = _plain | st.text() | _spiked


@st.composite
def embedding_items(draw: st.DrawFn) -> list[Any]:
    return draw(
        st.lists(st.one_of(_texts, st.fixed_dictionaries({"custom_id": _ids, "text": _texts})), min_size=0, max_size=5)
    )


@st.composite
def chat_items(draw: st.DrawFn) -> list[Any]:
    from models.jobs import ItemRow

    def item() -> Any:
        content = _plain | _json
        messages = draw(
            st.lists(
                st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": content}),
                min_size=1,
                max_size=3,
            )
            | _json
        )
        return ItemRow(
            draw(_ids),
            text=draw(st.none() | _texts),
            payload={"messages": messages, "gen_conf": draw(st.just({}) | _json)},
        )

    return [item() for _ in range(draw(st.integers(0, 3)))]


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
@given(
    kind=st.sampled_from(["embedding", "chat"]),
    data=st.data(),
    chunk_size=st.none() | st.integers(-2, 70),
    key=st.none() | _plain | st.text(max_size=300),
)
def test_submit_gives_a_job_or_one_clean_refusal(
    stack: Stack, tenant: tuple[str, str], kind: str, data: st.DataObject, chunk_size: int | None, key: str | None
) -> None:
    from tasks import producer

    items = data.draw(embedding_items() if kind == "embedding" else chat_items())
    before = footprint(stack)
    try:
        if kind == "embedding":
            job_id = producer.submit_embedding(tenant[0], MODEL, items, chunk_size=chunk_size, idempotency_key=key)
        else:
            job_id = producer.submit(tenant[0], "chat", CHAT, items, idempotency_key=key)
    except UserError as exc:
        message = str(exc)
        assert message and "\n" not in message and len(message) < 600, message
        assert footprint(stack) == before, f"a refusal wrote something: {message}"
        event(f"refused ({type(exc).__name__})")
        return
    event("accepted")
    after = footprint(stack)
    st_ = producer.status(job_id)
    if after["jobs"] == before["jobs"]:  # the idempotency key found an earlier job
        assert key is not None and after == before
    else:
        assert after["jobs"] == before["jobs"] + 1
        assert after["job_items"] - before["job_items"] == len(items) == st_["items"]["total"]
