"""The cache stage of the pipeline: serve a hit before any upstream call, store a clean answer after it,
and stand in (stale) when every upstream failed."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import orjson

from bastion.background import run_inline
from bastion.cache.service import Hit, ResponseCache
from bastion.cache.store import Entry
from bastion.dialects import chat_response_to_messages, messages_response_to_chat
from bastion.errors import BastionError
from bastion.routing import Route
from bastion.telemetry import Metrics

from .context import RequestContext
from .synthetic import stream_chat


class CacheMiss(BastionError):
    status = 504
    code = "cache_miss"


class CacheStage:
    def __init__(self, cache: ResponseCache, metrics: Metrics, finish: Callable[[RequestContext], None],
                 headers: Callable[[RequestContext], dict[str, str]]) -> None:
        self.cache = cache
        self.metrics = metrics
        self.finish = finish
        self.headers = headers

    # ---- before ------------------------------------------------------------------------------
    async def before(self, ctx: RequestContext, route: Route, body: dict[str, Any], kind: str) -> Any:
        """A ready answer from the cache, or None (and the request remembers how to store its answer)."""
        d = self.cache.decide(route.alias, body, ctx.dialect, ctx.options, kind)
        if d is None:
            return None
        tenant = ctx.key.tenant if ctx.key else "default"
        versions = tuple(dep.model for dep in route.deployments)
        k = self.cache.key(tenant, route.alias, versions, ctx.prompt_version, body, ctx.dialect, kind)
        ctx.cache_key = (k, d)
        if d.read:
            hit = await self.cache.lookup(k, tenant, route.alias, d)
            if hit is not None:
                return self.serve(ctx, hit, kind, bool(body.get("stream")))
        if d.only_if_cached:
            ctx.cache_status = "miss"
            self.metrics.cache_lookups.labels(route.alias, "miss").inc()
            raise CacheMiss("no cached answer for this request (x-bastion-cache: only-if-cached)",
                            headers={"x-bastion-cache": "miss"})
        ctx.cache_status = "miss" if d.read else ("refresh" if d.write else "bypass")
        self.metrics.cache_lookups.labels(route.alias, ctx.cache_status).inc()
        return None

    # ---- a hit -------------------------------------------------------------------------------
    def serve(self, ctx: RequestContext, hit: Hit, kind: str, stream: bool) -> Any:
        from .gateway import Result

        e = hit.entry
        alias = ctx.alias or e.alias
        ctx.cache_status = hit.status
        ctx.saved_usd = Decimal(e.cost_usd) if hit.status != "stale" else Decimal(0)
        ctx.cache_info = {"entry_request_id": e.request_id, "age_s": round(time.time() - e.created_at, 3),
                          "similarity": hit.similarity, "saved_usd": str(ctx.saved_usd), "key": e.key[:16]}
        self.metrics.cache_lookups.labels(alias, hit.status).inc()
        self.metrics.cache_saved_tokens.labels(alias).inc(e.prompt_tokens + e.completion_tokens)
        self.metrics.cache_saved_usd.labels(alias).inc(float(ctx.saved_usd))
        value = hit.status if hit.similarity is None else f"{hit.status}; similarity={hit.similarity:.4f}"
        extra = {"x-bastion-cache": value, "x-bastion-cache-age": str(int(time.time() - e.created_at))}
        if kind == "embedding":
            ctx.response = {k: v for k, v in e.response.items() if k != "data"} | {
                "data_count": len(e.response.get("data") or [])}
            ctx.served_model = e.response.get("model")
            self.finish(ctx)
            return Result(headers=self.headers(ctx) | extra, body=orjson.dumps(e.response))
        chat = dict(e.response)
        chat["id"] = "chatcmpl-" + uuid.uuid4().hex[:24]
        chat["created"] = int(time.time())
        ctx.served_model = chat.get("model")
        ctx.system_fingerprint = chat.get("system_fingerprint")
        choices = chat.get("choices") or [{}]
        ctx.finish_reason = choices[0].get("finish_reason")
        out = chat if ctx.dialect == "openai" else chat_response_to_messages(chat, model=chat.get("model"))
        ctx.response = out
        self.finish(ctx)
        headers = self.headers(ctx) | extra
        if stream:
            wants_usage = bool(((ctx.body or {}).get("stream_options") or {}).get("include_usage"))
            return Result(headers=headers, stream=stream_chat(chat, ctx.dialect, include_usage=wants_usage),
                          media_type="text/event-stream")
        return Result(headers=headers, body=orjson.dumps(out))

    # ---- after -------------------------------------------------------------------------------
    def store_chat(self, ctx: RequestContext) -> None:
        """Keep a cleanly completed chat answer (called once the request is over)."""
        if ctx.cache_key is None or ctx.status != 200 or ctx.degraded or ctx.error_code is not None:
            return
        k, d = ctx.cache_key
        if not d.write or ctx.cache_status not in ("miss", "refresh") or not isinstance(ctx.response, dict):
            return
        if not ctx.finish_reason:  # a stream that did not finish: never cached
            return
        chat = ctx.response if ctx.dialect == "openai" else messages_response_to_chat(ctx.response)
        if not chat.get("choices"):
            return
        usage = chat.get("usage") or {}
        if not usage and ctx.usage:
            chat = {**chat, "usage": dict(ctx.usage)}
            usage = ctx.usage
        self._put(ctx, k, d, chat, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))

    def store_embedding(self, ctx: RequestContext, raw: dict[str, Any]) -> None:
        if ctx.cache_key is None or ctx.cache_status not in ("miss", "refresh"):
            return
        k, d = ctx.cache_key
        if d.write:
            self._put(ctx, k, d, raw, int(ctx.usage.get("prompt_tokens") or 0), 0)

    def _put(self, ctx: RequestContext, k: Any, d: Any, response: dict[str, Any], pt: int, ct: int) -> None:
        now = time.time()
        entry = Entry(key=k.key, tenant=ctx.key.tenant if ctx.key else "default", alias=ctx.alias or "",
                      kind="embedding" if ctx.endpoint == "embeddings" else "chat", response=response,
                      created_at=now, expires_at=now + d.ttl_s, request_id=ctx.request_id,
                      cost_usd=str(ctx.cost_usd or 0), prompt_tokens=pt, completion_tokens=ct)
        run_inline(self.cache.put(k, entry, d))  # the in-process store never suspends
        self.metrics.cache_entries.set(len(self.cache.store._entries))

    # ---- when every upstream failed ----------------------------------------------------------
    async def on_failure(self, ctx: RequestContext, route: Route, body: dict[str, Any], err: BastionError) -> Any:
        if ctx.cache_key is None:
            return None
        k, d = ctx.cache_key
        tenant = ctx.key.tenant if ctx.key else "default"
        hit = await self.cache.stale(k, tenant, d)
        if hit is None:
            return None
        ctx.flags.append("served_from_cache_after_upstream_failure")
        ctx.error_code, ctx.status = None, 200
        ctx.error_message = f"every upstream failed ({err.message}); served the cached answer"
        kind = "embedding" if ctx.endpoint == "embeddings" else "chat"
        return self.serve(ctx, hit if hit.status == "stale" else Hit(hit.entry, "stale"), kind, bool(body.get("stream")))
