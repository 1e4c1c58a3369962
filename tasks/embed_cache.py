"""An embedding chunk's side of the cache: serve what it holds before the call, keep what
the call returned after it (models/embed_cache.py has the store and the key).

Off for the whole fleet with ``MODELYARD_EMBED_CACHE=off``, for one job with the job option
``cache: false`` (``modelyard embed --no-cache``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from conf.settings import get_settings
from models import embed_cache
from models.bundle import LLMBundle
from models.db import session_scope
from models.jobs import ChunkWork, ItemOutcome
from providers.base import Usage, estimate_tokens

log = logging.getLogger("modelyard.cache")


@dataclass
class Served:
    """A chunk split by the cache: ``outcomes`` it served, ``rest`` to ask the provider for."""

    scope: str
    outcomes: list[ItemOutcome]
    rest: ChunkWork
    keys: dict[int, bytes]  # item id -> cache key, for the items of ``rest``
    cached_tokens: int = 0  # what the served items were billed when they were computed


def _scope(work: ChunkWork) -> str | None:
    setting = get_settings().embed_cache
    if setting == "off" or work.model_type != "embedding" or work.options.get("cache") is False:
        return None
    return embed_cache.SHARED if setting == "shared" else work.tenant_id


def serve(bundle: LLMBundle, work: ChunkWork) -> Served | None:
    """The chunk's cached items (None: the cache does not apply to this chunk)."""
    scope = _scope(work)
    if scope is None:
        return None
    tm = bundle.tenant_model
    fingerprint = embed_cache.model_fingerprint(
        tm.factory,
        tm.llm_name,
        bundle.provider.base_url or "",
        work.options.get("input_type", "document"),
        work.options.get("dimensions"),
        tm.max_tokens,
    )
    keys = {item.id: embed_cache.cache_key(fingerprint, item.text or "") for item in work.items}
    with session_scope() as session:
        found = embed_cache.lookup(session, scope, list(keys.values()))
    outcomes = [ItemOutcome(item.id, vector=found[keys[item.id]][0]) for item in work.items if keys[item.id] in found]
    rest = [item for item in work.items if keys[item.id] not in found]
    cached_tokens = sum(found[keys[item.id]][1] for item in work.items if keys[item.id] in found)
    return Served(scope, outcomes, replace(work, items=rest), {item.id: keys[item.id] for item in rest}, cached_tokens)


def remember(served: Served, outcomes: list[ItemOutcome], usage: Usage) -> None:
    """Keep the vectors the provider returned, each with its share of the billed tokens."""
    texts = {item.id: item.text or "" for item in served.rest.items}
    kept = [(o.item_id, o.vector) for o in outcomes if o.vector is not None and o.item_id in served.keys]
    shares = _apportion(usage.total_tokens, [estimate_tokens(texts.get(item_id, "")) for item_id, _ in kept])
    entries = [(served.keys[item_id], vector, share) for (item_id, vector), share in zip(kept, shares, strict=True)]
    try:
        with session_scope() as session:
            embed_cache.store(session, served.scope, entries)
        _maybe_evict(served.scope, len(entries))
    except Exception:  # the results are what matter; a cache that fails to fill is slower, not wrong
        log.exception("could not store %d vectors in the embedding cache", len(entries))


def _apportion(total: int, weights: list[int]) -> list[int]:
    """``total`` split in proportion to ``weights``, in whole tokens that add up to it exactly
    (largest remainders); by the weights themselves when the provider reported no total."""
    if not weights:
        return []
    if total <= 0 or sum(weights) <= 0:
        return list(weights)
    exact = [total * w / sum(weights) for w in weights]
    shares = [int(x) for x in exact]
    for i in sorted(range(len(exact)), key=lambda i: exact[i] - shares[i], reverse=True)[: total - sum(shares)]:
        shares[i] += 1
    return shares


# Eviction runs when this process has added a tenth of the bound to a scope since it last did:
# a scope holds at most the bound plus a tenth per worker process.
_added: dict[str, int] = {}
_lock = threading.Lock()


def _maybe_evict(scope: str, added: int) -> None:
    limit = get_settings().embed_cache_max_entries
    with _lock:
        _added[scope] = _added.get(scope, 0) + added
        due = _added[scope] >= max(1, limit // 10)
        if due:
            _added[scope] = 0
    if due:
        with session_scope() as session:
            dropped = embed_cache.evict(session, scope, limit)
        if dropped:
            log.info(
                "embedding cache %s: evicted %d vectors",
                "shared" if scope == embed_cache.SHARED else "of a tenant",
                dropped,
            )
