"""The gateway: config, router, keys, request log and metrics, and the chat/embeddings pipelines."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bastion.config.model import BastionConfig
from bastion.errors import BastionError, ModelNotFound, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bastion.keys import KeyRing
from bastion.providers import iter_sse_batches
from bastion.routing import Deployment, Router
from bastion.store import LogWriter, open_store
from bastion.telemetry import Metrics

from .context import Attempt, RequestContext
from .relay import StreamRelay
from .translate import client_response, response_facts, upstream_body


@dataclass(slots=True)
class Result:
    """What the HTTP layer sends: a whole body, or a stream of SSE bytes."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200
    media_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway:
    def __init__(self, config: BastionConfig) -> None:
        self.config = config
        self.router = Router(config)
        self.store = open_store(config.store.url)
        self.keys = KeyRing(config, self.store)
        self.metrics = Metrics()
        sc = config.store
        self.writer = LogWriter(
            self.store,
            flush_interval_s=sc.flush_interval_ms / 1000,
            batch_size=sc.batch_size,
            queue_size=sc.queue_size,
            spill_path=sc.spill_path,
            on_flush=self.metrics.on_flush,
        )
        self.ready = False
        self.started_at = time.time()

    async def start(self) -> None:
        await asyncio.to_thread(self.writer.start)
        self.started_at = time.time()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.router.close()
        await asyncio.to_thread(self.writer.close)

    # ---- accounting --------------------------------------------------------------------------
    def finish(self, ctx: RequestContext) -> None:
        """Close the books on a request: metrics, then one record to the log writer."""
        ctx.done_at = ctx.now()
        m = self.metrics
        model = ctx.alias or "-"
        m.requests.labels(ctx.endpoint, model, ctx.deployment or "-", str(ctx.status)).inc()
        if ctx.error_code:
            m.errors.labels(ctx.endpoint, model, ctx.error_code).inc()
        m.latency.labels(ctx.endpoint, model, "true" if ctx.stream else "false").observe(
            ctx.done_at - ctx.received_at
        )
        if ctx.first_byte_at is not None:
            m.ttft.labels(ctx.endpoint, model).observe(ctx.first_byte_at - ctx.received_at)
        if ctx.usage:
            m.tokens.labels(model, "prompt").inc(ctx.usage.get("prompt_tokens", 0))
            m.tokens.labels(model, "completion").inc(ctx.usage.get("completion_tokens", 0))
        for a in ctx.attempts:
            m.attempts.labels(a.deployment, a.outcome).inc()
        sc = self.config.store
        self.writer.submit(ctx.to_record(log_bodies=sc.log_bodies, redact_keys=sc.redact_keys))

    @staticmethod
    def headers(ctx: RequestContext) -> dict[str, str]:
        h = {"x-bastion-request-id": ctx.request_id, "x-bastion-attempts": str(len(ctx.attempts))}
        h["x-request-id" if ctx.dialect == "openai" else "request-id"] = ctx.request_id
        if ctx.deployment:
            h["x-bastion-deployment"] = ctx.deployment
        if ctx.served_model:
            h["x-bastion-model"] = ctx.served_model
        return h

    # ---- upstream call -----------------------------------------------------------------------
    async def _open(self, ctx: RequestContext, dep: Deployment, url: str, payload: bytes) -> tuple[aiohttp.ClientResponse, Attempt]:
        ctx.deployment, ctx.provider, ctx.upstream_model = dep.id, dep.provider.name, dep.model
        attempt = Attempt(dep.id, ctx.now())
        ctx.attempts.append(attempt)
        try:
            resp = await dep.provider.post(url, payload, deployment=dep.id)
        except UpstreamError as e:
            attempt.ended_at, attempt.outcome = ctx.now(), "error"
            attempt.status, attempt.error = e.upstream_status, e.message
            raise
        attempt.status = resp.status
        return resp, attempt

    async def _read_json(
        self, resp: aiohttp.ClientResponse, attempt: Attempt, ctx: RequestContext
    ) -> tuple[bytes, dict[str, Any]]:
        try:
            raw = await resp.read()
        except TimeoutError:
            raise UpstreamTimeout(f"deployment {attempt.deployment!r} stopped sending its answer") from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailable(
                f"deployment {attempt.deployment!r} dropped the connection while answering ({type(e).__name__})"
            ) from None
        finally:
            resp.release()
        attempt.first_byte_at = ctx.now()
        ctx.mark_first_byte()
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise UpstreamUnavailable(
                f"deployment {attempt.deployment!r} answered with malformed JSON ({len(raw)} bytes)",
                code="upstream_malformed",
            ) from None
        if not isinstance(data, dict):
            raise UpstreamUnavailable(f"deployment {attempt.deployment!r} answered with a non-object JSON body")
        return raw, data

    # ---- chat (both dialects) ----------------------------------------------------------------
    async def chat(self, ctx: RequestContext, body: dict[str, Any], *, pin: str | None = None) -> Result:
        """Serve a chat request in ``ctx.dialect``; ``pin`` forces one deployment (replay)."""
        if pin is not None:
            pinned = self.router.deployment(pin)
            if pinned is None:
                raise ModelNotFound(f"deployment {pin!r} is no longer in the config; cannot send to it")
            dep = pinned
            ctx.alias = ctx.alias or dep.alias
        else:
            route = self.router.route(body.get("model"), "chat")
            ctx.alias = route.alias
            dep = self.router.plan(route)[0]
        ctx.stream = bool(body.get("stream"))
        up = dep.provider.dialect
        payload = orjson.dumps(upstream_body(ctx.dialect, up, body, dep.model, ctx.stream))
        resp, attempt = await self._open(ctx, dep, dep.provider.chat_url(dep.model), payload)
        try:
            if ctx.stream:
                return await self._start_stream(ctx, up, resp, attempt)
            raw, data = await self._read_json(resp, attempt, ctx)
        except BastionError as e:
            attempt.ended_at, attempt.outcome, attempt.error = ctx.now(), "error", e.message
            resp.close()
            raise
        attempt.ended_at, attempt.outcome = ctx.now(), "ok"
        out = client_response(ctx.dialect, up, data)
        ctx.response = out
        ctx.usage, ctx.served_model, ctx.system_fingerprint, ctx.finish_reason = response_facts(ctx.dialect, out)
        if up != ctx.dialect:
            _, served, fp, _ = response_facts(up, data)
            ctx.served_model, ctx.system_fingerprint = served or ctx.served_model, fp or ctx.system_fingerprint
        if up != ctx.dialect:
            raw = orjson.dumps(out)  # same dialect: the upstream's bytes go through untouched
        self.finish(ctx)
        return Result(headers=self.headers(ctx), body=raw)

    async def _start_stream(self, ctx: RequestContext, up: str, resp: aiohttp.ClientResponse, attempt: Attempt) -> Result:
        events = iter_sse_batches(resp)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise UpstreamUnavailable(f"deployment {attempt.deployment!r} sent an empty stream") from None
        except TimeoutError:
            raise UpstreamTimeout(f"deployment {attempt.deployment!r} sent no first token in time") from None
        except aiohttp.ClientError as e:
            raise UpstreamUnavailable(
                f"deployment {attempt.deployment!r} dropped the connection before the first token ({type(e).__name__})"
            ) from None
        attempt.first_byte_at = ctx.now()
        try:
            peek = orjson.loads(first[0].data) if first[0].data != b"[DONE]" else {}
        except orjson.JSONDecodeError:
            peek = {}
        if isinstance(peek, dict):
            ctx.served_model = peek.get("model") or (peek.get("message") or {}).get("model")
        relay = StreamRelay(ctx, up, resp, events, first, attempt, self.finish)
        return Result(
            headers=self.headers(ctx),
            stream=relay.__aiter__(),
            media_type="text/event-stream",
            extra={"on_close": relay.ensure_finished},
        )

    # ---- embeddings --------------------------------------------------------------------------
    async def embeddings(self, ctx: RequestContext, body: dict[str, Any]) -> Result:
        route = self.router.route(body.get("model"), "embedding")
        ctx.alias = route.alias
        dep = self.router.plan(route)[0]
        url = dep.provider.embeddings_url(dep.model)
        resp, attempt = await self._open(ctx, dep, url, orjson.dumps({**body, "model": dep.model}))
        try:
            raw, raw_data = await self._read_json(resp, attempt, ctx)
        except BastionError as e:
            attempt.ended_at, attempt.outcome, attempt.error = ctx.now(), "error", e.message
            raise
        attempt.ended_at, attempt.outcome = ctx.now(), "ok"
        usage = raw_data.get("usage") or {}
        ctx.usage = {
            "prompt_tokens": int(usage.get("prompt_tokens") or 0),
            "completion_tokens": 0,
            "total_tokens": int(usage.get("total_tokens") or usage.get("prompt_tokens") or 0),
        }
        ctx.served_model = raw_data.get("model")
        vectors = raw_data.get("data") or []
        # Vectors are derived data, reproducible by replay: the log keeps their count, not their bytes.
        ctx.response = {k: v for k, v in raw_data.items() if k != "data"} | {"data_count": len(vectors)}
        self.finish(ctx)
        return Result(headers=self.headers(ctx), body=raw)
