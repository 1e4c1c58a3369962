"""The limiter's state in Redis: one JSON value per bucket, changed by one atomic script per
decision (one round trip), on Redis's clock so that every worker agrees on the time.

The script is the algorithm of :mod:`tasks.limiter` written in Lua; the two are held equal by
``tests/test_limiter.py``, which runs the same scenarios against both.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import redis

from tasks import limiter
from tasks.limiter import Cost, Grant, Limits, Settlement

log = logging.getLogger("modelyard.limits")

KEY = "modelyard:limits:{}"
IDLE_EXPIRY = 86400  # seconds: a bucket nobody used for a day is forgotten

_SCRIPT = r"""
local key, op = KEYS[1], ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local raw = redis.call('GET', key)
local s = raw and cjson.decode(raw) or {}
local function num(v, d) if v == nil or v == cjson.null then return d end return tonumber(v) end
local function opt(v) local n = tonumber(v) if n == nil or n <= 0 then return nil end return n end
local rpm_t, tpm_t, conc = opt(ARGV[2]), opt(ARGV[3]), opt(ARGV[4])

local function effective()
  local learned = num(s.learned_rpm, nil)
  if learned and now - num(s.learned_at, 0) > LEARNED_TTL then learned = nil end
  local rpm = rpm_t or opt(s.adv_rpm) or learned
  local tpm = tpm_t or opt(s.adv_tpm)
  return rpm, tpm
end

local function live_slots()
  local slots = {}
  if type(s.slots) == 'table' then
    for h, exp in pairs(s.slots) do if tonumber(exp) > now then slots[h] = tonumber(exp) end end
  end
  return slots
end

local function save(notes)
  if next(s.slots or {}) == nil then s.slots = nil end
  redis.call('SET', key, cjson.encode(s), 'EX', IDLE_EXPIRY)
  return notes
end

local function pause(seconds, reason, notes)
  local untl = now + math.max(0, seconds)
  if untl > num(s.pause_until, 0) then
    s.pause_until, s.pause_reason = untl, reason
    table.insert(notes, string.format('paused for %.1fs: %s', seconds, reason))
  end
end

if op == 'acquire' then
  local requests, tokens, holder = tonumber(ARGV[5]), tonumber(ARGV[6]), ARGV[7]
  local max_wait, slot_ttl = tonumber(ARGV[8]), tonumber(ARGV[9])
  local pu = num(s.pause_until, 0)
  if pu > now then return {0, tostring(pu - now), 'paused: ' .. (s.pause_reason or '')} end
  local slots, n = live_slots(), 0
  for _ in pairs(slots) do n = n + 1 end
  if conc and n >= conc then
    s.slots = slots
    save({})
    return {0, tostring(POLL_SECONDS), 'all ' .. conc .. ' concurrent calls in use'}
  end
  local learned = num(s.learned_rpm, nil)
  if learned then
    local since = num(s.learned_at, 0)
    if now - since > LEARNED_TTL then s.learned_rpm = nil
    elseif now - num(s.learned_grown_at, since) > LEARNED_GROWTH_EVERY then
      s.learned_rpm = math.max(learned + 1, math.floor(learned * 1.1))
      s.learned_grown_at = now
    end
  end
  local rpm, tpm = effective()
  local r_tat, t_tat = num(s.r_tat, now), num(s.t_tat, now)
  local wait_r, wait_t = 0, 0
  if rpm then wait_r = math.max(0, r_tat - now) end
  if tpm and tokens > 0 then wait_t = math.max(0, t_tat - now) end
  local wait = math.max(wait_r, wait_t)
  if wait > max_wait then
    local why = (wait_r >= wait_t) and (rpm .. ' requests/min') or (tpm .. ' tokens/min')
    return {0, tostring(wait - max_wait), why}
  end
  if rpm then s.r_tat = math.max(r_tat, now - CATCH_UP_SECONDS) + requests * 60.0 / rpm end
  if tpm and tokens > 0 then s.t_tat = math.max(t_tat, now - CATCH_UP_SECONDS) + tokens * 60.0 / tpm end
  if conc then slots[holder] = now + wait + slot_ttl end
  s.slots = slots
  local at = now + wait
  local decay = math.exp(-math.max(0, at - num(s.rate_at, at)) / RATE_EWMA_SECONDS)
  s.rate = num(s.rate, 0) * decay + requests / RATE_EWMA_SECONDS
  s.rate_at = at
  if s.rate_since == nil then s.rate_since = at end
  s.seen = math.min(num(s.seen, 0) + requests, LEARN_MIN_CALLS)
  save({})
  return {1, tostring(wait), ''}
end

if op == 'settle' then
  local holder, delta = ARGV[5], tonumber(ARGV[6])
  local adv_rpm, adv_tpm, exhausted = opt(ARGV[7]), opt(ARGV[8]), tonumber(ARGV[9])
  local pause_s, reason = tonumber(ARGV[10]), ARGV[11]
  local notes = {}
  s.slots = live_slots()
  s.slots[holder] = nil
  if adv_rpm and adv_rpm ~= num(s.adv_rpm, nil) then
    s.adv_rpm = adv_rpm
    table.insert(notes, 'provider advertises ' .. adv_rpm .. ' requests/min')
  end
  if adv_tpm and adv_tpm ~= num(s.adv_tpm, nil) then
    s.adv_tpm = adv_tpm
    table.insert(notes, 'provider advertises ' .. adv_tpm .. ' tokens/min')
  end
  if exhausted and exhausted > 0 and not pause_s then pause(exhausted, 'the provider reports its budget spent', notes) end
  local _, tpm = effective()
  if tpm and delta ~= 0 then s.t_tat = num(s.t_tat, now) + delta * 60.0 / tpm end
  if pause_s then
    pause(pause_s, reason, notes)
    local observed = nil
    if num(s.seen, 0) >= LEARN_MIN_CALLS then
      local decay = math.exp(-math.max(0, now - num(s.rate_at, now)) / RATE_EWMA_SECONDS)
      local warm = 1 - math.exp(-math.max(1, now - num(s.rate_since, now)) / RATE_EWMA_SECONDS)
      observed = num(s.rate, 0) * decay / warm * 60
    end
    if not rpm_t and not opt(s.adv_rpm) and observed then
      local learned = math.max(1, math.floor(observed * 0.9))
      if num(s.learned_rpm, nil) then learned = math.min(observed, math.floor(s.learned_rpm * 0.9)) end
      s.learned_rpm, s.learned_at, s.learned_grown_at = math.max(1, learned), now, now
      table.insert(notes, 'learned a limit of ' .. s.learned_rpm .. ' requests/min from a 429')
    elseif num(s.learned_rpm, nil) then
      s.learned_at = now
    end
  end
  return save(notes)
end

if op == 'read' then return {raw or '{}', tostring(now)} end
return redis.error_reply('unknown limiter op ' .. op)
"""


def _script_text() -> str:
    consts = {
        "LEARNED_TTL": limiter.LEARNED_TTL,
        "LEARNED_GROWTH_EVERY": limiter.LEARNED_GROWTH_EVERY,
        "RATE_EWMA_SECONDS": limiter.RATE_EWMA_SECONDS,
        "POLL_SECONDS": limiter.POLL_SECONDS,
        "LEARN_MIN_CALLS": limiter.LEARN_MIN_CALLS,
        "CATCH_UP_SECONDS": limiter.CATCH_UP_SECONDS,
        "IDLE_EXPIRY": IDLE_EXPIRY,
    }
    return "".join(f"local {k} = {v!r}\n" for k, v in consts.items()) + _SCRIPT


def _opt(value: int | float | None) -> str:
    return "" if value is None else repr(value)


class RedisLimiter:
    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30)
        self._script = self.client.register_script(_script_text())

    def _run(self, bucket: str, op: str, limits: Limits, *args: Any) -> Any:
        argv = [op, _opt(limits.rpm), _opt(limits.tpm), _opt(limits.concurrency), *args]
        return self._script(keys=[KEY.format(bucket)], args=argv)

    def acquire(
        self, bucket: str, limits: Limits, cost: Cost, holder: str, *, max_wait: float, slot_ttl: float
    ) -> Grant:
        granted, wait, reason = self._run(
            bucket, "acquire", limits, cost.requests, cost.tokens, holder, repr(max_wait), repr(slot_ttl)
        )
        return Grant(bool(granted), float(wait), reason.decode() if isinstance(reason, bytes) else reason)

    def settle(self, bucket: str, limits: Limits, holder: str, outcome: Settlement) -> None:
        adv = outcome.advertised
        notes = self._run(
            bucket,
            "settle",
            limits,
            holder,
            outcome.tokens_delta,
            _opt(adv.rpm if adv else None),
            _opt(adv.tpm if adv else None),
            _opt(adv.exhausted_for if adv else None),
            _opt(outcome.pause),
            outcome.reason,
        )
        for note in notes or []:
            log.warning("limits %s: %s", bucket[:12], note.decode() if isinstance(note, bytes) else note)

    def status(self, bucket: str, limits: Limits) -> dict[str, Any]:
        raw, now = self._run(bucket, "read", limits)
        return limiter.describe(json.loads(raw), limits, float(now))
