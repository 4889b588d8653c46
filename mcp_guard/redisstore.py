"""The Redis limit store (`redis://host:port/db`, `rediss://` for TLS), for fleets of machines.

Admission and charge are one Lua script, run atomically by the server, and measured with the server's
clock (TIME), so windows are the same for every machine whatever their clocks say. Per limit: a sorted
set of charge ids scored by time, a hash of their amounts, and the limit's terms with a running total
(so an admission costs O(expired + log n), not a sum over the window); every key expires a
little after its window, so a limit nobody uses leaves nothing behind. Needs the `redis` package:
pip install 'mcp-guard[redis]'.
"""

from __future__ import annotations

import threading
from typing import Any

from .engine import BUCKETS_PER_WINDOW, EXACT_ENTRIES
from .limitstore import Admitted, Counter, Location, Refused, StoreCharge, StoreUnavailable, StoreURLError

PREFIX = "mcp-guard:"

# KEYS: per charge, its prefix. ARGV: exact entries, buckets per window, then per charge amount, max, window.
# Returns {1, id1, id2, ...} when every charge was taken, {0, index, used, retry_after or ""} otherwise.
_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local exact, buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
local seen = {}
for i, prefix in ipairs(KEYS) do
  local amount, max, window = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local z, h, m = prefix .. ':z', prefix .. ':h', prefix .. ':m'
  local total = tonumber(redis.call('HGET', m, 'total') or '0')
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', now - window)
  if #gone > 0 then
    for _, value in ipairs(redis.call('HMGET', h, unpack(gone))) do total = total - tonumber(value or '0') end
    redis.call('HDEL', h, unpack(gone))
    redis.call('ZREMRANGEBYSCORE', z, '-inf', now - window)
    if redis.call('ZCARD', z) == 0 then total = 0 end
    redis.call('HSET', m, 'total', tostring(total))
  end
  if total + amount > max then
    local room = max - amount
    if room < 0 then return {0, i - 1, tostring(total), ''} end
    local taken, retry = 0, 0
    local entries = redis.call('ZRANGE', z, 0, -1, 'WITHSCORES')
    for j = 1, #entries, 2 do
      taken = taken + tonumber(redis.call('HGET', h, entries[j]) or '0')
      retry = tonumber(entries[j + 1]) + window - now
      if total - taken <= room then break end
    end
    if retry < 0 then retry = 0 end
    return {0, i - 1, tostring(total), tostring(retry)}
  end
  seen[i] = redis.call('ZCARD', z)
end
local result = {1}
for i, prefix in ipairs(KEYS) do
  local amount, max, window = tonumber(ARGV[3 * i]), tonumber(ARGV[3 * i + 1]), tonumber(ARGV[3 * i + 2])
  local z, h = prefix .. ':z', prefix .. ':h'
  local at = now
  local newest = redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')
  if #newest > 0 and tonumber(newest[2]) > at then at = tonumber(newest[2]) end
  local granularity = window / buckets
  local id
  if seen[i] >= exact and granularity > 0 and #newest > 0
      and math.floor(at / granularity) == math.floor(tonumber(newest[2]) / granularity) then
    id = newest[1]
    redis.call('HINCRBYFLOAT', h, id, amount)
  else
    id = tostring(redis.call('INCR', prefix .. ':seq'))
    redis.call('HSET', h, id, amount)
  end
  redis.call('ZADD', z, at, id)
  redis.call('HSET', prefix .. ':m', 'max', max, 'window', window)
  redis.call('HINCRBYFLOAT', prefix .. ':m', 'total', amount)
  local ttl = math.ceil(window * 1000) + 60000
  for _, key in ipairs({z, h, prefix .. ':seq', prefix .. ':m'}) do redis.call('PEXPIRE', key, ttl) end
  result[#result + 1] = id
end
return result
"""

# KEYS: per token, its prefix. ARGV: per token, id and amount.
_REFUND = """
for i, prefix in ipairs(KEYS) do
  local id, amount = ARGV[2 * i - 1], tonumber(ARGV[2 * i])
  local h = prefix .. ':h'
  local held = redis.call('HGET', h, id)
  if held then
    local taken = math.min(amount, tonumber(held))
    if tonumber(held) - taken <= 0 then
      redis.call('HDEL', h, id)
      redis.call('ZREM', prefix .. ':z', id)
    else
      redis.call('HINCRBYFLOAT', h, id, -taken)
    end
    if redis.call('ZCARD', prefix .. ':z') == 0 then
      redis.call('HSET', prefix .. ':m', 'total', '0')
    else
      redis.call('HINCRBYFLOAT', prefix .. ':m', 'total', -taken)
    end
  end
end
return 1
"""

# KEYS: one prefix. Returns {max, window, used, frees_in or ""} or {} when the limit is unknown.
_COUNTER = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local prefix = KEYS[1]
local terms = redis.call('HMGET', prefix .. ':m', 'max', 'window')
if not terms[1] then return {} end
local window = tonumber(terms[2])
local live = redis.call('ZRANGEBYSCORE', prefix .. ':z', '(' .. (now - window), '+inf', 'WITHSCORES')
local used = 0
for j = 1, #live, 2 do used = used + tonumber(redis.call('HGET', prefix .. ':h', live[j]) or '0') end
local frees = ''
if #live > 0 then frees = tostring(math.max(0, tonumber(live[2]) + window - now)) end
return {terms[1], terms[2], tostring(used), frees}
"""


class RedisStore:
    """The client is made at the first call, in the worker thread that makes it: importing `redis` costs
    a few hundred milliseconds that the client's handshake with mcp-guard should not wait for."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._client: Any = None
        self._admit: Any = None
        self._refund: Any = None
        self._counter: Any = None

    @classmethod
    def open(cls, location: Location) -> RedisStore:
        from importlib.util import find_spec

        if find_spec("redis") is None:
            raise StoreURLError(f"{location.url} needs the redis package: pip install 'mcp-guard[redis]'")
        return cls(location.url)

    @property
    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import redis

                # Short timeouts: a store that does not answer must not hold calls for long (they fail closed).
                client = redis.Redis.from_url(self.url, socket_timeout=2.0, socket_connect_timeout=2.0,
                                              retry_on_timeout=False)
                self._admit = client.register_script(_ADMIT)
                self._refund = client.register_script(_REFUND)
                self._counter = client.register_script(_COUNTER)
                self._client = client
            return self._client

    def _call(self, work: Any) -> Any:
        import redis

        self.client  # noqa: B018 - made on first use
        try:
            return work()
        except (redis.RedisError, OSError) as exc:
            raise StoreUnavailable(f"{self.url}: {exc}") from None

    def admit(self, charges: tuple[StoreCharge, ...]) -> Admitted | Refused:
        keys = [PREFIX + charge.key for charge in charges]
        args: list[Any] = [EXACT_ENTRIES, BUCKETS_PER_WINDOW]
        for charge in charges:
            args += [repr(float(charge.amount)), repr(float(charge.max)), repr(float(charge.window))]
        answer = self._call(lambda: self._admit(keys=keys, args=args))
        if int(answer[0]) == 1:
            return Admitted(tuple((key, _text(ident), charge.amount)
                                  for key, ident, charge in zip(keys, answer[1:], charges, strict=True)))
        retry = _text(answer[3])
        return Refused(int(answer[1]), float(_text(answer[2])), float(retry) if retry else None)

    def refund(self, tokens: tuple[Any, ...]) -> None:
        keys = [key for key, _, _ in tokens]
        args: list[Any] = []
        for _, ident, amount in tokens:
            args += [ident, repr(float(amount))]
        self._call(lambda: self._refund(keys=keys, args=args))

    def counters(self, keys: tuple[str, ...] | None = None) -> list[Counter]:
        if keys is None:
            found = self._call(lambda: sorted(_text(key) for key in self.client.scan_iter(match=PREFIX + "*:m")))
            keys = tuple(key[len(PREFIX):-2] for key in found)
        counters = []
        for key in keys:
            answer = self._call(lambda key=key: self._counter(keys=[PREFIX + key]))
            if answer:
                frees = _text(answer[3])
                counters.append(Counter(key, float(_text(answer[0])), float(_text(answer[1])),
                                        float(_text(answer[2])), float(frees) if frees else None))
        return counters

    def reset(self, keys: tuple[str, ...]) -> int:
        def work() -> int:
            removed = 0
            for key in keys:
                removed += int(self.client.zcard(PREFIX + key + ":z"))
                self.client.delete(PREFIX + key + ":z", PREFIX + key + ":h")
                self.client.hset(PREFIX + key + ":m", "total", "0")
            return removed

        result: int = self._call(work)
        return result

    def close(self) -> None:
        if self._client is None:
            return
        try:
            self._client.close()
        except Exception:  # noqa: BLE001 - closing a client whose server is gone
            pass


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
