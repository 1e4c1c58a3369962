"""The fleet-wide provider limiter: every worker shares each provider key's rate budget.

A *bucket* is one provider key and model, named by a keyed hash (``LLMBundle.limit_bucket``),
never by the key: tenants' models that share a key share its budget. Before each provider
call a worker asks :meth:`Limiter.acquire`; after it, :meth:`Limiter.settle` gives back the
concurrency slot, corrects the token estimate from the reported usage, adopts the limits the
provider advertised in its headers, and, after a 429, pauses the bucket for the whole fleet.

The algorithm (here, as pure functions over a state dict; ``tasks/limiter_redis.lua``
is the same in one atomic Redis script):

- requests and tokens per minute are GCRA ("virtual scheduling"): each bucket keeps a
  theoretical arrival time per counter; a call's cost moves it forward by cost x (60 / limit).
  Slots missed in the last quarter second (a thread was late) may still be used: a burst of
  at most a quarter second of the rate, far inside a provider's own bucket.
  A call is granted when the counter is at most ``max_wait`` ahead of now, and then *reserves*
  its place: the caller sleeps the returned wait and calls. Calls are evenly spaced, with no
  minute-boundary bursts. A call that would wait longer is not granted and changes nothing:
  its chunk is sent back to the queue with a countdown (a wait, not a try).
- the limit used is the first of: the tenant's own (``llm add --rpm/--tpm``), what the
  provider advertised in its headers, a limit learned from a 429 (90% of the request rate
  that drew it, once a few calls were seen; it grows back 10% every 30 s without a 429 and is
  forgotten after 10 minutes).
  With none of them there is no rate limit.
- an optional cap on concurrent calls: slots with an expiry, so a worker that dies holding
  one does not hold it for ever.
- a pause: after a 429 (its Retry-After, the reset the headers give, or the backoff) or a
  success whose headers say a counter is at zero, every worker waits until it ends.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from providers.ratelimits import Advertised

LEARNED_TTL = 600.0  # seconds without a 429 after which a learned limit is forgotten
LEARNED_GROWTH_EVERY = 30.0  # seconds without a 429 after which a learned limit grows 10%
RATE_EWMA_SECONDS = 5.0  # time constant of the observed request rate
POLL_SECONDS = 0.2  # how soon to ask again while every concurrency slot is taken
LEARN_MIN_CALLS = 5  # calls seen before a 429 can teach a limit
CATCH_UP_SECONDS = 0.25  # slots missed this recently may still be used (a thread was late)


@dataclass(frozen=True)
class Limits:
    """The tenant's own limits on a model (None: not set)."""

    rpm: int | None = None
    tpm: int | None = None
    concurrency: int | None = None


@dataclass(frozen=True)
class Cost:
    requests: int = 1
    tokens: int = 0


@dataclass(frozen=True)
class Grant:
    """``granted``: the budget is reserved (and a slot held): sleep ``wait`` seconds, then call.
    Not granted: nothing was taken; ask again in about ``wait`` seconds. ``reason`` says why."""

    granted: bool
    wait: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class Settlement:
    """What one call taught us, for :meth:`Limiter.settle`."""

    tokens_delta: int = 0  # reported minus estimated tokens
    advertised: Advertised | None = None
    pause: float | None = None  # seconds the bucket must pause (a 429)
    reason: str = ""


class Limiter(Protocol):
    def acquire(
        self, bucket: str, limits: Limits, cost: Cost, holder: str, *, max_wait: float, slot_ttl: float
    ) -> Grant: ...

    def settle(self, bucket: str, limits: Limits, holder: str, outcome: Settlement) -> None: ...

    def status(self, bucket: str, limits: Limits) -> dict[str, Any]: ...


# --------------------------------------------------------------------------- the algorithm


def effective(state: Mapping[str, Any], limits: Limits, now: float) -> tuple[int | None, int | None, str]:
    """(rpm, tpm, where the rpm came from) in force for ``state``."""
    learned = state.get("learned_rpm")
    if learned and now - float(state.get("learned_at", 0)) > LEARNED_TTL:
        learned = None
    if limits.rpm:
        rpm, source = limits.rpm, "tenant"
    elif state.get("adv_rpm"):
        rpm, source = int(state["adv_rpm"]), "provider headers"
    elif learned:
        rpm, source = int(learned), "learned from a 429"
    else:
        rpm, source = None, ""
    tpm = limits.tpm or (int(state["adv_tpm"]) if state.get("adv_tpm") else None)
    return rpm, tpm, source


def _grow_learned(state: dict[str, Any], now: float) -> None:
    learned, since = state.get("learned_rpm"), float(state.get("learned_at", 0))
    if not learned:
        return
    if now - since > LEARNED_TTL:
        state.pop("learned_rpm", None)
    elif now - float(state.get("learned_grown_at", since)) > LEARNED_GROWTH_EVERY:
        state["learned_rpm"] = max(learned + 1, int(learned * 1.1))
        state["learned_grown_at"] = now


def _observe(state: dict[str, Any], now: float, requests: int) -> None:
    """The request rate (per second), an exponentially weighted moving average."""
    last = float(state.get("rate_at", now))
    decay = math.exp(-max(0.0, now - last) / RATE_EWMA_SECONDS)
    state["rate"] = float(state.get("rate", 0.0)) * decay + requests / RATE_EWMA_SECONDS
    state["rate_at"] = now
    state.setdefault("rate_since", now)
    state["seen"] = min(int(state.get("seen", 0)) + requests, LEARN_MIN_CALLS)


def observed_rpm(state: Mapping[str, Any], now: float) -> float | None:
    """Requests per minute lately; None until a few calls were seen (one 429 on the first call
    says nothing about the rate). Corrected for the average's start from zero."""
    if int(state.get("seen", 0)) < LEARN_MIN_CALLS:
        return None
    decay = math.exp(-max(0.0, now - float(state.get("rate_at", now))) / RATE_EWMA_SECONDS)
    warm = 1.0 - math.exp(-max(1.0, now - float(state.get("rate_since", now))) / RATE_EWMA_SECONDS)
    return float(state.get("rate", 0.0)) * decay / warm * 60.0


def acquire(
    state: dict[str, Any], limits: Limits, cost: Cost, holder: str, now: float, *, max_wait: float, slot_ttl: float
) -> Grant:
    """Decide one call, updating ``state`` in place only when it is granted."""
    pause_until = float(state.get("pause_until", 0.0))
    if pause_until > now:
        return Grant(False, pause_until - now, f"paused: {state.get('pause_reason', '')}".rstrip(": "))
    slots: dict[str, float] = {h: t for h, t in state.get("slots", {}).items() if t > now}
    if limits.concurrency and len(slots) >= limits.concurrency:
        state["slots"] = slots
        return Grant(False, POLL_SECONDS, f"all {limits.concurrency} concurrent calls in use")
    _grow_learned(state, now)
    rpm, tpm, _ = effective(state, limits, now)
    r_tat, t_tat = float(state.get("r_tat", now)), float(state.get("t_tat", now))
    wait_r = max(0.0, r_tat - now) if rpm else 0.0
    wait_t = max(0.0, t_tat - now) if tpm and cost.tokens else 0.0
    wait = max(wait_r, wait_t)
    if wait > max_wait:
        return Grant(False, wait - max_wait, f"{rpm} requests/min" if wait_r >= wait_t else f"{tpm} tokens/min")
    if rpm:
        state["r_tat"] = max(r_tat, now - CATCH_UP_SECONDS) + cost.requests * 60.0 / rpm
    if tpm and cost.tokens:
        state["t_tat"] = max(t_tat, now - CATCH_UP_SECONDS) + cost.tokens * 60.0 / tpm
    if limits.concurrency:
        slots[holder] = now + wait + slot_ttl
    state["slots"] = slots
    _observe(state, now + wait, cost.requests)
    return Grant(True, wait, "")


def settle(state: dict[str, Any], limits: Limits, holder: str, outcome: Settlement, now: float) -> list[str]:
    """Apply what a call taught; returns log lines (a pause started, a limit adopted or learned)."""
    notes: list[str] = []
    state.get("slots", {}).pop(holder, None)
    adv = outcome.advertised
    if adv is not None:
        for field, value in (("adv_rpm", adv.rpm), ("adv_tpm", adv.tpm)):
            if value and value != state.get(field):
                state[field] = value
                notes.append(f"provider advertises {value} {'requests' if field == 'adv_rpm' else 'tokens'}/min")
        spent = adv.exhausted_for
        if spent is not None and outcome.pause is None and spent > 0:
            _pause(state, now, spent, "the provider reports its budget spent", notes)
    _, tpm, _ = effective(state, limits, now)
    if tpm and outcome.tokens_delta:
        state["t_tat"] = float(state.get("t_tat", now)) + outcome.tokens_delta * 60.0 / tpm
    if outcome.pause is not None:
        _pause(state, now, outcome.pause, outcome.reason, notes)
        observed = observed_rpm(state, now)
        if not limits.rpm and not state.get("adv_rpm") and observed is not None:
            learned = max(1, int(observed * 0.9))
            if state.get("learned_rpm"):
                learned = min(learned, int(state["learned_rpm"] * 0.9))
            state.update(learned_rpm=max(1, learned), learned_at=now, learned_grown_at=now)
            notes.append(f"learned a limit of {state['learned_rpm']} requests/min from a 429")
        elif state.get("learned_rpm"):
            state["learned_at"] = now
    return notes


def _pause(state: dict[str, Any], now: float, seconds: float, reason: str, notes: list[str]) -> None:
    until = now + max(0.0, seconds)
    if until > float(state.get("pause_until", 0.0)):
        state["pause_until"], state["pause_reason"] = until, reason
        notes.append(f"paused for {seconds:.1f}s: {reason}")


def describe(state: Mapping[str, Any], limits: Limits, now: float) -> dict[str, Any]:
    """The bucket as ``modelyard limits`` shows it."""
    rpm, tpm, source = effective(state, limits, now)
    pause_until = float(state.get("pause_until", 0.0))
    decay = math.exp(-max(0.0, now - float(state.get("rate_at", now))) / RATE_EWMA_SECONDS)
    learned = state.get("learned_rpm") if now - float(state.get("learned_at", 0)) <= LEARNED_TTL else None
    return {
        "configured": {k: v for k, v in asdict(limits).items() if v},
        "advertised": {k: state[f"adv_{k}"] for k in ("rpm", "tpm") if state.get(f"adv_{k}")},
        "learned_rpm": learned,
        "in_force": {"rpm": rpm, "tpm": tpm, "rpm_source": source or None},
        "requests_per_minute_now": round(float(state.get("rate", 0.0)) * decay * 60, 1),
        "calls_in_progress": sum(1 for t in state.get("slots", {}).values() if t > now),
        "paused_for": round(pause_until - now, 2) if pause_until > now else None,
        "pause_reason": state.get("pause_reason") if pause_until > now else None,
    }
