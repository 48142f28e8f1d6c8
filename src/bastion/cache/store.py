"""Where cached answers live: an in-process LRU with TTLs and a size cap (``memory://``).

The interface (``CacheStore``) is what a Redis backend implements later so that replicas share one
cache; entries are plain dicts/JSON so that they can move between processes.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson


@dataclass(slots=True)
class Entry:
    key: str
    tenant: str
    alias: str
    kind: str  # chat | embedding
    response: dict[str, Any]  # chat: the OpenAI chat.completion; embedding: the embeddings response
    created_at: float
    expires_at: float
    request_id: str  # the request whose answer this is
    cost_usd: str = "0"  # what the original call cost: what each hit saves
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context: str | None = None  # semantic partition
    size: int = 0
    hits: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class CacheStore(Protocol):
    async def get(self, key: str, *, allow_stale_s: float = 0.0) -> tuple[Entry, bool] | None:
        """The entry and whether it is fresh; expired entries only within ``allow_stale_s``."""
        ...

    async def put(self, entry: Entry) -> list[str]:
        """Store ``entry``; returns the keys evicted to make room."""
        ...

    async def delete(self, key: str) -> Entry | None: ...

    async def purge(self, *, tenant: str | None = None, alias: str | None = None) -> list[Entry]: ...

    async def stats(self) -> dict[str, Any]: ...


class MemoryCacheStore:
    def __init__(self, max_entries: int, max_bytes: int, clock: Callable[[], float] = time.time) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self.bytes = 0
        self.evictions = 0

    async def get(self, key: str, *, allow_stale_s: float = 0.0) -> tuple[Entry, bool] | None:
        e = self._entries.get(key)
        if e is None:
            return None
        now = self.clock()
        if e.expires_at <= now:
            # Kept while it may still serve as a stale fallback; otherwise it is gone.
            if now - e.expires_at > allow_stale_s:
                return None
            return e, False
        self._entries.move_to_end(key)
        return e, True

    async def put(self, entry: Entry) -> list[str]:
        entry.size = entry.size or len(orjson.dumps(entry.response))
        old = self._entries.pop(entry.key, None)
        if old is not None:
            self.bytes -= old.size
        self._entries[entry.key] = entry
        self.bytes += entry.size
        evicted: list[str] = []
        while len(self._entries) > self.max_entries or (self.bytes > self.max_bytes and len(self._entries) > 1):
            k, e = self._entries.popitem(last=False)  # least recently used
            self.bytes -= e.size
            self.evictions += 1
            evicted.append(k)
        return evicted

    async def delete(self, key: str) -> Entry | None:
        e = self._entries.pop(key, None)
        if e is not None:
            self.bytes -= e.size
        return e

    async def purge(self, *, tenant: str | None = None, alias: str | None = None) -> list[Entry]:
        gone = [e for e in self._entries.values()
                if (tenant is None or e.tenant == tenant) and (alias is None or e.alias == alias)]
        for e in gone:
            await self.delete(e.key)
        return gone

    async def stats(self) -> dict[str, Any]:
        now = self.clock()
        per_tenant: dict[str, int] = {}
        expired = 0
        for e in self._entries.values():
            per_tenant[e.tenant] = per_tenant.get(e.tenant, 0) + 1
            expired += e.expires_at <= now
        return {"backend": "memory", "entries": len(self._entries), "expired_entries": expired, "bytes": self.bytes,
                "max_entries": self.max_entries, "max_bytes": self.max_bytes, "evictions": self.evictions,
                "entries_per_tenant": per_tenant}
