"""The Redis state backend (``redis://`` / ``rediss://``): one shared state for every replica.

Each operation is atomic on the server: a single command where one suffices (GET, SET with PX, DEL) and
otherwise one short Lua script, registered once and run by its SHA. Keys carry a prefix (``bastion:`` by
default; ``?prefix=...`` on the URL changes it) so several deployments can share one server.

Time. The sliding windows are bucketed by the Redis server's ``TIME`` inside the scripts, so every replica
agrees on which second a request fell in whatever its own clock says. ``clock()`` is synchronous and must
not cost a round trip, so it is this host's ``time.time()`` corrected by the offset to the server's clock,
measured once at ``start()`` (half the round trip is assumed on each side). ``at`` values passed back to
``window_add`` come from ``clock()``, so they are in the server's time as well.

Expiry. Windows always expire: their keys get a TTL of the window plus slack on every write, so a window
nobody writes to any more disappears. Values expire when the caller gives ``ttl_s``; a value written
without one lives until deleted, as the protocol says (the callers that rely on it keep a bounded set of
such keys: breaker pools, concurrency counters, the rebuilt marker).

Values that a script turns into numbers are Lua doubles: integers are exact up to 2**53 (nine million
dollars in nano-USD), which is what the counters hold.
"""

from __future__ import annotations

import math
import time
from types import TracebackType
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from bastion.errors import BastionError

_SLACK_S = 5  # windows live this long past their span, so a late settlement still finds its bucket

_CAS = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur then return 0 end
elseif cur ~= ARGV[2] then
  return 0
end
if ARGV[4] == '' then redis.call('SET', KEYS[1], ARGV[3])
elseif ARGV[4] == '0' then redis.call('DEL', KEYS[1])
else redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4]) end
return 1
"""

_INCR = """
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if ARGV[2] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return n
"""

# incr_if: a release (by <= 0) always applies and never goes below 0; a new key gets the TTL, an existing
# one keeps its own.
_INCR_IF = """
local cur = redis.call('GET', KEYS[1])
local by = tonumber(ARGV[1])
local c = 0
if cur then
  c = tonumber(cur)
  if c == nil then return redis.error_reply('value is not an integer') end
end
local n = c + by
if by > 0 and n > tonumber(ARGV[2]) then return false end
if n < 0 then n = 0 end
local s = string.format('%d', n)
if cur then redis.call('SET', KEYS[1], s, 'KEEPTTL')
elseif ARGV[3] ~= '' then redis.call('SET', KEYS[1], s, 'PX', ARGV[3])
else redis.call('SET', KEYS[1], s) end
return s
"""

# Sliding windows: KEYS[1] a hash of per-second buckets (field = the second) plus the running total in
# field 't'; KEYS[2] a sorted set of the buckets' seconds, so the ones leaving the window are found
# without reading the rest. ARGV: mode (sum | add | addif), amount, span in buckets, the bucket of an
# earlier ``at`` (or ''), limit (addif), TTL in ms.
_WINDOW = """
local now_b = tonumber(redis.call('TIME')[1])
local low = now_b - tonumber(ARGV[3])
local total = tonumber(redis.call('HGET', KEYS[1], 't') or '0')
local old = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', low)
for _, b in ipairs(old) do
  total = total - tonumber(redis.call('HGET', KEYS[1], b) or '0')
  redis.call('HDEL', KEYS[1], b)
end
if #old > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', low) end
local empty = redis.call('ZCARD', KEYS[2]) == 0
if empty then total = 0 end
local mode = ARGV[1]
local amount = tonumber(ARGV[2])
local refuse = mode == 'addif' and total + amount > tonumber(ARGV[5])
if mode == 'sum' or refuse then
  if empty then redis.call('DEL', KEYS[1], KEYS[2])
  elseif #old > 0 then redis.call('HSET', KEYS[1], 't', string.format('%.17g', total)) end
  if refuse then return false end
  return string.format('%.17g', total)
end
local b = now_b
if ARGV[4] ~= '' then b = math.min(now_b, tonumber(ARGV[4])) end
if b > low then
  local f = string.format('%d', b)
  redis.call('HINCRBYFLOAT', KEYS[1], f, ARGV[2])
  redis.call('ZADD', KEYS[2], b, f)
  total = total + amount
end
if redis.call('ZCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[2])
  return '0'
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', total))
redis.call('PEXPIRE', KEYS[1], ARGV[6])
redis.call('PEXPIRE', KEYS[2], ARGV[6])
return string.format('%.17g', total)
"""


class StateUnavailable(BastionError):
    """The shared state's server cannot be reached: at start (with what to check), or while serving, when
    a request that needs it is answered 503 rather than decided without its budgets and limits."""

    status = 503
    code = "state_unavailable"


class _Reachable:
    """``with self._up:`` turns a connection or server failure into ``StateUnavailable`` (503)."""

    __slots__ = ("where",)

    def __init__(self, where: str) -> None:
        self.where = where

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if exc is not None and isinstance(exc, (RedisError, OSError)) and not isinstance(exc, ResponseError):
            raise StateUnavailable(f"the shared state (Redis at {self.where}) is unavailable: "
                                   f"{type(exc).__name__}; try again shortly") from None


def _px(ttl_s: float | None) -> str:
    """A TTL as the PX argument of a script: '' for none, '0' for already expired."""
    if ttl_s is None:
        return ""
    return str(max(0, math.ceil(ttl_s * 1000)))


def _span(window_s: float) -> int:
    return max(1, math.ceil(window_s))


def split_url(url: str) -> tuple[str, str]:
    """``redis://host/0?prefix=x:`` -> (the URL without ``prefix``, the prefix; ``bastion:`` by default)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "bastion:")
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    return urlunsplit(parts._replace(query=rest)), prefix


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class RedisState:
    def __init__(self, url: str, *, prefix: str | None = None) -> None:
        conn_url, url_prefix = split_url(url)
        self.url = url
        self.prefix = url_prefix if prefix is None else prefix
        self._r: Any = aioredis.Redis.from_url(
            conn_url, decode_responses=True, socket_connect_timeout=5, socket_timeout=10,
            health_check_interval=30,
        )
        self._offset = 0.0  # server clock - this host's clock, measured by start()
        parts = urlsplit(conn_url)
        self._up = _Reachable(f"{parts.hostname}:{parts.port or 6379}")
        self._cas = self._r.register_script(_CAS)
        self._incr = self._r.register_script(_INCR)
        self._incr_if = self._r.register_script(_INCR_IF)
        self._window = self._r.register_script(_WINDOW)

    def _k(self, key: str) -> str:
        return self.prefix + "v:" + key

    def _wk(self, key: str) -> list[str]:
        # one hash tag, so the two keys of a window land in the same slot on a cluster
        base = f"{self.prefix}w:{{{key}}}"
        return [base, base + ":z"]

    async def start(self) -> None:
        """Connect, and measure the offset of the server's clock; a clear error when it cannot be reached."""
        try:
            t0 = time.time()
            secs, micros = await self._r.time()
            t1 = time.time()
        except (RedisError, OSError) as e:
            raise StateUnavailable(f"state.url {redacted(self.url)}: cannot reach Redis ({e}); check that the "
                                   "server runs and the URL's host, port, password and TLS scheme") from None
        self._offset = (int(secs) + int(micros) / 1e6) - (t0 + t1) / 2

    # ---- values ------------------------------------------------------------------------------
    async def get(self, key: str) -> str | None:
        with self._up:
            v = await self._r.get(self._k(key))
        return None if v is None else str(v)

    async def set(self, key: str, value: str, *, ttl_s: float | None = None) -> None:
        px = _px(ttl_s)
        with self._up:
            if px == "0":
                await self._r.delete(self._k(key))
            elif px:
                await self._r.set(self._k(key), value, px=int(px))
            else:
                await self._r.set(self._k(key), value)

    async def delete(self, key: str) -> None:
        with self._up:
            await self._r.delete(self._k(key))

    async def compare_and_set(self, key: str, expected: str | None, value: str, *, ttl_s: float | None = None) -> bool:
        args = ["1" if expected is None else "0", expected or "", value, _px(ttl_s)]
        with self._up:
            return bool(await self._cas(keys=[self._k(key)], args=args))

    async def incr(self, key: str, by: int = 1, *, ttl_s: float | None = None) -> int:
        px = _px(ttl_s)
        try:
            with self._up:
                return int(await self._incr(keys=[self._k(key)], args=[int(by), px if px != "0" else "1"]))
        except ResponseError as e:
            raise ValueError(f"state key {key!r} does not hold an integer ({e})") from None

    async def incr_if(self, key: str, by: int, limit: int, *, ttl_s: float | None = None) -> int | None:
        px = _px(ttl_s)
        try:
            with self._up:
                got = await self._incr_if(keys=[self._k(key)], args=[int(by), int(limit), px if px != "0" else "1"])
        except ResponseError as e:
            raise ValueError(f"state key {key!r} does not hold an integer ({e})") from None
        return None if got is None else int(got)

    # ---- sliding windows ---------------------------------------------------------------------
    async def _win(self, mode: str, key: str, amount: float, window_s: float, at: float | None = None,
                   limit: float = 0.0) -> float | None:
        span = _span(window_s)
        args: list[str | int] = [mode, repr(float(amount)), span, "" if at is None else str(math.floor(at)), repr(float(limit)),
                (span + _SLACK_S) * 1000]
        with self._up:
            got = await self._window(keys=self._wk(key), args=args)
        return None if got is None else float(got)

    async def window_add(self, key: str, amount: float, window_s: float, *, at: float | None = None) -> float:
        got = await self._win("add", key, amount, window_s, at)
        assert got is not None
        return got

    async def window_add_if(self, key: str, amount: float, window_s: float, limit: float) -> float | None:
        return await self._win("addif", key, amount, window_s, limit=limit)

    def clock(self) -> float:
        return time.time() + self._offset

    async def window_sum(self, key: str, window_s: float) -> float:
        got = await self._win("sum", key, 0.0, window_s)
        assert got is not None
        return got

    async def close(self) -> None:
        """Close the connections; the shared state itself stays (other replicas use it)."""
        await self._r.aclose()
