"""Testing a key with a real call: before it is saved, and again on a schedule.

A check makes :func:`providers.probe.probe`'s cheapest call for the model type through its
own HTTP client with ``MODELYARD_KEY_VALIDATION_TIMEOUT`` (separate from the model-call
timeout), and reports the outcome classified and scrubbed. Nothing here writes to the
database except :func:`revalidate`, which records what it learned.

Only AUTHENTICATION and QUOTA say a key is bad. A rate limit, a server error, a timeout or
a connection error says nothing about the key: revalidation keeps the old state then.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import httpx
from sqlalchemy import func, select, update

from conf.errors import InvalidRequest
from conf.settings import get_settings
from models import crypto
from models.db import session_scope
from models.tables import tenant_llm
from providers.base import decode_credentials
from providers.errors import ErrorCode, classify, scrub
from providers.http import make_client
from providers.probe import PROBE_ORDER, probe
from providers.registry import UnsupportedModel, get_provider_class

log = logging.getLogger("modelyard.keys")

KEY_VERDICTS = frozenset({ErrorCode.AUTHENTICATION.value, ErrorCode.QUOTA.value})
# The provider did not answer: the next models would fare no better.
_UNREACHABLE = frozenset({ErrorCode.TIMEOUT.value, ErrorCode.CONNECTION.value})
_TRANSIENT = _UNREACHABLE | {ErrorCode.RATE_LIMIT.value, ErrorCode.SERVER.value}
REVALIDATION_TRIES = 3  # models of one key tried when the first ones fail for model-specific reasons


@dataclass(frozen=True)
class ProbeOutcome:
    model: str  # NAME@FACTORY
    model_type: str
    ok: bool
    code: str | None = None  # an ErrorCode value, or "NOT_TRIED"
    message: str | None = None  # scrubbed


class KeyRejected(InvalidRequest):
    """No model accepted the key; nothing was saved. ``outcomes`` has every model's classified error."""

    def __init__(self, what: str, outcomes: Sequence[ProbeOutcome]) -> None:
        self.outcomes = list(outcomes)
        # One entry per distinct error: forty models refusing one bad key say it once.
        grouped: dict[tuple[str | None, str | None], list[str]] = {}
        for o in self.outcomes:
            grouped.setdefault((o.code, o.message), []).append(f"{o.model} ({o.model_type})")
        parts = [
            f"{code}: {message} [{', '.join(models[:3])}{f' and {len(models) - 3} more' if len(models) > 3 else ''}]"
            for (code, message), models in grouped.items()
        ]
        super().__init__(f"the key was not saved: {what}: " + "; ".join(parts))


@contextmanager
def validation_client() -> Iterator[httpx.Client]:
    client = make_client(get_settings().key_validation_timeout)
    try:
        yield client
    finally:
        client.close()


def by_probe_cost(candidates: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(llm name, model type) pairs, cheapest type to probe first."""
    return sorted(candidates, key=lambda c: PROBE_ORDER.index(c[1]) if c[1] in PROBE_ORDER else len(PROBE_ORDER))


def try_model(
    client: httpx.Client, factory: str, llm_name: str, model_type: str, api_key: str | None, base_url: str
) -> ProbeOutcome:
    """One probe call; every failure (a provider bug included) comes back classified and scrubbed."""
    model = f"{llm_name}@{factory}"
    try:
        cls = get_provider_class(model_type, factory)
    except UnsupportedModel as exc:
        return ProbeOutcome(model, model_type, False, ErrorCode.INVALID_REQUEST.value, str(exc))
    provider = None
    try:  # the constructor too: a provider refusing its credential must not escape unscrubbed
        provider = cls(llm_name, api_key=api_key, base_url=base_url or None, client=client)
        probe(provider)
    except Exception as exc:  # noqa: BLE001 - reported, classified, never raised
        # The provider's own list (it may hold a token it fetched), else the credential's secret fields.
        secret_fields = {f.name for f in cls.credential_fields if f.secret}
        secrets = (
            provider.secrets
            if provider is not None
            else (api_key, *(v for k, v in decode_credentials(api_key).items() if k in secret_fields))
        )
        message = scrub(str(exc) or type(exc).__name__, *secrets)[:500]
        return ProbeOutcome(model, model_type, False, classify(exc).value, message)
    return ProbeOutcome(model, model_type, True)


def _skip_reason(outcomes: Sequence[ProbeOutcome]) -> str | None:
    """Why the models after ``outcomes`` need not be called, if they need not."""
    for o in outcomes:
        if o.code == ErrorCode.AUTHENTICATION.value:  # the key itself is refused: every model would refuse it
            return f"skipped: the provider refused the key (AUTHENTICATION) on {o.model}"
        if o.code in _UNREACHABLE:
            return "skipped: the provider did not answer an earlier model"
    return None


def check_until_accepted(
    factory: str,
    candidates: Sequence[tuple[str, str]],
    api_key: str | None,
    base_url: str,
    *,
    client: httpx.Client | None = None,
) -> list[ProbeOutcome]:
    """Probe the candidates in turn until one passes. After the provider refused the key
    (AUTHENTICATION), or stopped answering (a timeout or connection error), the rest are not
    called: they are reported NOT_TRIED with the reason. ``client``: the transport seam
    (default: a client with the validation timeout)."""
    outcomes: list[ProbeOutcome] = []
    with nullcontext(client) if client is not None else validation_client() as http:
        for llm_name, model_type in candidates:
            skipped = _skip_reason(outcomes)
            if skipped:
                outcomes.append(ProbeOutcome(f"{llm_name}@{factory}", model_type, False, "NOT_TRIED", skipped))
                continue
            outcomes.append(try_model(http, factory, llm_name, model_type, api_key, base_url))
            if outcomes[-1].ok:
                break
    return outcomes


# --------------------------------------------------------------------------- scheduled revalidation


def keys_to_revalidate() -> list[tuple[str, str, int]]:
    """One (tenant id, factory, representative tenant_llm id) per stored key. Rows that share a
    key share its ciphertext (``keys set`` encrypts once for all of a factory's models)."""
    with session_scope() as session:
        rows = session.execute(
            select(tenant_llm.c.tenant_id, tenant_llm.c.factory, func.min(tenant_llm.c.id))
            .where(tenant_llm.c.api_key_enc.is_not(None))
            .group_by(tenant_llm.c.tenant_id, tenant_llm.c.factory, tenant_llm.c.api_key_enc)
            .order_by(func.min(tenant_llm.c.id))
        )
        return [(r[0], r[1], r[2]) for r in rows]


def revalidate(tenant_llm_id: int) -> ProbeOutcome | None:
    """Test the key of one ``tenant_llm`` row again and record what was learned on every row
    that shares it. Returns the deciding outcome, or None if the row or its key is gone."""
    with session_scope() as session:
        rep = session.execute(select(tenant_llm).where(tenant_llm.c.id == tenant_llm_id)).first()
        if rep is None or rep.api_key_enc is None:
            return None
        group = session.execute(
            select(tenant_llm.c.id, tenant_llm.c.llm_name, tenant_llm.c.model_type)
            .where(
                tenant_llm.c.tenant_id == rep.tenant_id,
                tenant_llm.c.factory == rep.factory,
                tenant_llm.c.api_key_enc == rep.api_key_enc,
            )
            .order_by(tenant_llm.c.id)
        ).all()
    # A wrong MODELYARD_SECRET_KEY is the deployment's fault: it raises SecretKeyError before
    # any state is touched, and the tenant's key keeps its state.
    api_key = crypto.decrypt(rep.api_key_enc)
    candidates = by_probe_cost([(r.llm_name, r.model_type) for r in group])[:REVALIDATION_TRIES]
    outcome: ProbeOutcome | None = None
    with validation_client() as client:
        for llm_name, model_type in candidates:
            outcome = try_model(client, rep.factory, llm_name, model_type, api_key, rep.api_base)
            if outcome.ok or outcome.code in KEY_VERDICTS or outcome.code in _TRANSIENT:
                break
    assert outcome is not None
    _record(rep.api_key_enc, [r.id for r in group], outcome)
    return outcome


def _record(token: str, ids: list[int], outcome: ProbeOutcome) -> None:
    """Valid on success, invalid only on AUTHENTICATION or QUOTA; otherwise the state stays and
    only the error is noted. Rows whose key changed meanwhile are left alone."""
    if outcome.ok:
        values: dict[str, Any] = {"key_state": "valid", "key_error": None, "key_checked_at": func.now()}
    elif outcome.code in KEY_VERDICTS:
        values = {
            "key_state": "invalid",
            "key_error": f"{outcome.code}: {outcome.message}"[:2000],
            "key_checked_at": func.now(),
        }
    else:
        values = {"key_error": f"{outcome.code}: {outcome.message} (key state kept; checked again next round)"[:2000]}
    with session_scope() as session:
        session.execute(
            update(tenant_llm).where(tenant_llm.c.id.in_(ids), tenant_llm.c.api_key_enc == token).values(**values)
        )
    log.info("key of %s revalidated with %s: %s", ids, outcome.model, "valid" if outcome.ok else outcome.code)
