"""The response cache as a pipeline stage: decide, look up (exact, then semantic), store, fall back.

Isolation by construction: the tenant is hashed into every exact key and is the first element of every
semantic partition, so no lookup path can reach another tenant's entry.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from typing import Any

from bastion.background import Background
from bastion.config.model import BastionConfig
from bastion.errors import InvalidRequest

from .keys import CacheKey, cache_key
from .store import Entry, MemoryCacheStore

log = logging.getLogger("bastion.cache")

DIRECTIVES = ("no-store", "no-cache", "only-if-cached")
_MAX_AGE = re.compile(r"max-age=(\d+)")


@dataclass(frozen=True, slots=True)
class Decision:
    read: bool
    write: bool
    only_if_cached: bool
    ttl_s: float
    semantic: bool
    threshold: float | None
    stale_if_error_s: float


@dataclass(slots=True)
class Hit:
    entry: Entry
    status: str  # hit | semantic-hit | stale
    similarity: float | None = None


def _deterministic(body: dict[str, Any], dialect: str) -> bool:
    if body.get("seed") is not None:
        return True
    t = body.get("temperature")
    return isinstance(t, int | float) and not isinstance(t, bool) and t == 0


class ResponseCache:
    def __init__(self, config: BastionConfig) -> None:
        c = config.cache
        if c.url != "memory://":
            raise ValueError("cache.url must be memory:// (a Redis backend comes with replicas)")
        self.config = c
        self.aliases = {name: m.cache for name, m in config.models.items()}
        self.store = MemoryCacheStore(c.max_entries, c.max_bytes)
        self._semantic: Any = None  # SemanticIndex, created on first use
        self._semantic_ok: bool | None = None
        self.background = Background()  # semantic indexing of new entries

    # ---- policy ------------------------------------------------------------------------------
    def decide(self, alias: str, body: dict[str, Any], dialect: str, options: dict[str, str],
               kind: str = "chat") -> Decision | None:
        a = self.aliases.get(alias)
        enabled = a.enabled if a is not None and a.enabled is not None else self.config.enabled
        header = (options.get("cache") or "").strip().lower()
        control = (options.get("cache-control") or "").lower()
        if not enabled:
            if header == "only-if-cached" or "only-if-cached" in control:
                return Decision(False, False, True, 0, False, None, 0)
            return None
        if header and header not in DIRECTIVES:
            raise InvalidRequest(f"x-bastion-cache must be one of {', '.join(DIRECTIVES)}, not {header!r}")
        ttl = (a.ttl_s if a is not None and a.ttl_s else None) or self.config.ttl_s
        raw_ttl = options.get("cache-ttl")
        m = _MAX_AGE.search(control)
        given_ttl = raw_ttl if raw_ttl is not None else m.group(1) if m else None
        if given_ttl is not None:
            try:
                ttl = float(given_ttl)
            except ValueError:
                raise InvalidRequest(f"x-bastion-cache-ttl must be a number of seconds, not {raw_ttl!r}") from None
            if not 0 < ttl <= self.config.max_ttl_s:
                raise InvalidRequest(f"the cache TTL must be between 0 and {self.config.max_ttl_s:g} seconds "
                                     "(cache.max_ttl_s)")
        only_det = a.only_deterministic if a is not None and a.only_deterministic is not None else \
            self.config.only_deterministic
        safe = kind == "embedding" or not only_det or _deterministic(body, dialect)
        no_store = header == "no-store" or "no-store" in control
        no_cache = header == "no-cache" or "no-cache" in control
        only = header == "only-if-cached" or "only-if-cached" in control
        sem = a.semantic if a is not None else None
        return Decision(
            read=not no_cache and (safe or only), write=safe and not no_store, only_if_cached=only, ttl_s=ttl,
            semantic=bool(sem and sem.enabled) and kind == "chat", threshold=sem.threshold if sem else None,
            stale_if_error_s=self.config.stale_if_error_s,
        )

    @staticmethod
    def key(tenant: str, alias: str, versions: tuple[str, ...], prompt_version: str | None, body: dict[str, Any],
            dialect: str, kind: str) -> CacheKey:
        return cache_key(tenant=tenant, alias=alias, versions=versions, prompt_version=prompt_version, body=body,
                         dialect=dialect, kind=kind)

    # ---- lookup ------------------------------------------------------------------------------
    async def lookup(self, k: CacheKey, tenant: str, alias: str, d: Decision) -> Hit | None:
        got = await self.store.get(k.key)
        if got is not None:
            entry, _fresh = got
            if entry.tenant == tenant:  # always true (the tenant is in the key); checked anyway
                entry.hits += 1
                return Hit(entry, "hit")
        if d.semantic and k.last_user:
            return await self._semantic_lookup(k, k.last_user, tenant, alias, d)
        return None

    async def stale(self, k: CacheKey, tenant: str, d: Decision) -> Hit | None:
        got = await self.store.get(k.key, allow_stale_s=d.stale_if_error_s)
        if got is None or got[0].tenant != tenant:
            return None
        return Hit(got[0], "hit" if got[1] else "stale")

    def _index(self) -> Any:
        if self._semantic is None:
            from .semantic import SemanticIndex

            self._semantic = SemanticIndex()
        return self._semantic

    def _semantic_ready(self) -> bool:
        """The semantic extra is installed and loads; otherwise semantic lookups are skipped (logged once)."""
        if self._semantic_ok is None:
            try:
                from .embedder import available

                self._semantic_ok = available()
                if self._semantic_ok:
                    self._index()
            except Exception as e:  # an optional extra that is broken must not break the exact cache
                log.warning("semantic cache unavailable (%s: %s); exact cache only", type(e).__name__, e)
                self._semantic_ok = False
            if self._semantic_ok is False:
                log.warning("semantic cache is enabled but unavailable: pip install 'bastion-gateway[semantic]'")
        return bool(self._semantic_ok)

    async def _semantic_lookup(self, k: CacheKey, text: str, tenant: str, alias: str,
                               d: Decision) -> Hit | None:
        if not self._semantic_ready():
            return None
        from .embedder import Embedder
        from .semantic import DEFAULT_THRESHOLD

        index = self._index()
        try:
            vec = (await asyncio.to_thread(Embedder.shared().embed, [text]))[0]
            found = index.search((tenant, alias, k.context), vec, d.threshold or DEFAULT_THRESHOLD, text=text)
        except Exception:  # a failing embedder costs a miss, never the request
            log.exception("semantic lookup failed; treated as a miss")
            return None
        if found is None:
            return None
        entry_id, similarity = found
        got = await self.store.get(entry_id)
        if got is None or got[0].tenant != tenant:
            index.remove(entry_id)
            return None
        got[0].hits += 1
        return Hit(got[0], "semantic-hit", similarity)

    # ---- store -------------------------------------------------------------------------------
    async def put(self, k: CacheKey, entry: Entry, d: Decision) -> None:
        entry.expires_at = entry.created_at + d.ttl_s
        entry.context = k.context
        evicted = await self.store.put(entry)
        if self._semantic is not None:
            for key in evicted:
                self._semantic.remove(key)
        if d.semantic and k.last_user:
            self.background.spawn(self._semantic_add(k, k.last_user, entry))

    async def _semantic_add(self, k: CacheKey, text: str, entry: Entry) -> None:
        if not self._semantic_ready():
            return
        from .embedder import Embedder

        try:
            vec = (await asyncio.to_thread(Embedder.shared().embed, [text]))[0]
            if await self.store.get(entry.key) is not None:
                self._index().add((entry.tenant, entry.alias, k.context), entry.key, vec, text=text)
        except Exception:
            log.exception("could not index a cache entry for semantic lookup")

    async def purge(self, *, tenant: str | None = None, alias: str | None = None) -> int:
        gone = await self.store.purge(tenant=tenant, alias=alias)
        if self._semantic is not None:
            for e in gone:
                self._semantic.remove(e.key)
        return len(gone)

    async def stats(self) -> dict[str, Any]:
        out = await self.store.stats()
        out["semantic_entries"] = len(self._semantic) if self._semantic is not None else 0
        return out

    async def drain(self) -> None:
        await self.background.drain(timeout=10)
