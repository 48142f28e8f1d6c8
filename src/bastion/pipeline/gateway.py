"""The gateway: config, router, keys, request log and metrics, and the chat/embeddings pipelines."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from bastion.cache.service import ResponseCache
from bastion.config.model import BastionConfig
from bastion.dialects import messages_response_to_chat
from bastion.errors import BastionError, LogUnavailable, ModelNotFound
from bastion.guards.stream_guard import StreamGuard
from bastion.keys import KeyRing
from bastion.metering.cut import cut_usage
from bastion.metering.meter import Meter
from bastion.metering.subjects import Subject
from bastion.routing import Candidate, Deployment, Route, Router
from bastion.state import open_state
from bastion.store import LogWriter, open_store
from bastion.telemetry import Metrics

from .accumulate import usage_from_anthropic, usage_from_openai
from .caching import CacheStage
from .context import RequestContext
from .degraded import degraded_body, degraded_stream
from .executor import Executor, Exhausted, MakeRequest, Ready
from .guarding import GuardStage, guard_summary
from .prompting import PromptStage
from .reask import ReaskMixin
from .relay import StreamRelay
from .synthetic import stream_chat
from .translate import client_response, response_facts, upstream_body

_CACHE_ANSWERS = frozenset(("hit", "semantic-hit", "stale"))


def _has_tokens(usage: dict[str, Any] | None) -> bool:
    if not usage:
        return False
    return any(isinstance(usage.get(k), int) and usage[k] > 0
               for k in ("prompt_tokens", "completion_tokens", "input_tokens", "output_tokens"))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _subject(ctx: RequestContext) -> Subject:
    key = ctx.key
    return Subject(key.tenant if key else "default", ctx.user, key.key_id if key else None, key.name if key else None)


FailureAnswer = Callable[[RequestContext, Route, dict[str, Any], BastionError], Awaitable["Result | None"]]


@dataclass(slots=True)
class Result:
    """What the HTTP layer sends: a whole body, or a stream of SSE bytes."""

    headers: dict[str, str]
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    status: int = 200
    media_type: str = "application/json"
    extra: dict[str, Any] = field(default_factory=dict)


class Gateway(ReaskMixin):
    def __init__(self, config: BastionConfig) -> None:
        self.config = config
        self.router = Router(config)
        self.state = open_state(config.state.url)
        self.store = open_store(config.store.url)
        self.keys = KeyRing(config, self.store)
        self.metrics = Metrics()
        self.executor = Executor(self.router, self.state, self.metrics)
        self.meter = Meter(config, self.state, self.store)
        self.cache = ResponseCache(config)
        self.guarding = GuardStage(config, self.metrics, self.store)
        self.prompting = PromptStage(config.prompts)
        self.caching = CacheStage(self.cache, self.metrics, self.finish, self.headers)
        sc = config.store
        self.writer = LogWriter(
            self.store,
            flush_interval_s=sc.flush_interval_ms / 1000,
            batch_size=sc.batch_size,
            queue_size=sc.queue_size,
            spill_path=sc.spill_path,
            on_flush=self.metrics.on_flush,
            on_write_failure=sc.on_write_failure,
            on_event=self._on_log_event,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self.ready = False
        self.started_at = time.time()
        # Consulted when every attempt failed, before the degraded answer: the response cache plugs in
        # here (serve a stored answer for the same request rather than an error). None: no such source.
        self.answer_on_failure: FailureAnswer | None = self.caching.on_failure

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.state.start()
        await asyncio.to_thread(self.writer.start)
        await self.meter.start()
        await asyncio.to_thread(self.guarding.warm)
        gc.freeze()  # what is loaded by now lives as long as the process: keep it out of every GC pass
        self.started_at = time.time()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.router.close()
        await self.executor.background.drain(timeout=10)  # settlements spawned as tasks (a shared state)
        await self.meter.stop()
        await self.cache.drain()
        await self.state.close()
        await asyncio.to_thread(self.writer.close)

    # ---- the request log's health ------------------------------------------------------------
    def check_log_writable(self) -> None:
        """Fail closed while the request log cannot be written (``store.on_write_failure: refuse``)."""
        if not self.writer.accepting:
            raise LogUnavailable(
                "the request log cannot be written right now (disk full or failing), so Bastion refuses new "
                "requests rather than serve them unrecorded (store.on_write_failure: refuse); retry shortly",
                headers={"retry-after": "5"})

    def _on_log_event(self, event: str, n: int) -> None:
        """From the writer thread: metrics at once; an alert on the event loop when the log is in trouble."""
        self.metrics.on_log_event(event, n)
        if event not in ("degraded", "lost") or self._loop is None or self._loop.is_closed():
            return
        w = self.writer
        if event == "degraded":
            msg = (f"the request log cannot be written: neither {w.store.path} nor {w.spill_path} takes writes; "
                   f"on_write_failure={w.on_write_failure}")
        else:
            msg = f"{w.lost} request-log records were lost (neither the store nor the spill file takes writes)"
        hour = int(time.time() // 3600)
        coro = self.meter.alerts.fire(f"alert:log:{event}:{hour}", f"log_{event}", "critical", "request_log", msg,
                                      {"store": str(w.store.path), "spill": str(w.spill_path), "lost": w.lost})
        self._loop.call_soon_threadsafe(self.meter.alerts.background.spawn, coro)

    def metric_model(self, ctx: RequestContext) -> str:
        """The alias as a metric label: only configured aliases, never a string a client made up."""
        alias = ctx.alias
        return alias if alias is not None and alias in self.router.routes else "-"

    # ---- accounting --------------------------------------------------------------------------
    def finish(self, ctx: RequestContext) -> None:
        """Close the books on a request: metrics, then one record to the log writer."""
        ctx.done_at = ctx.now()
        m = self.metrics
        model = self.metric_model(ctx)
        m.child(m.requests, ctx.endpoint, model, ctx.deployment or "-", str(ctx.status)).inc()
        if ctx.error_code:
            m.child(m.errors, ctx.endpoint, model, m.code_label(ctx.error_code)).inc()
        m.child(m.latency, ctx.endpoint, model, "true" if ctx.stream else "false").observe(
            ctx.done_at - ctx.received_at
        )
        if ctx.first_byte_at is not None:
            m.child(m.ttft, ctx.endpoint, model).observe(ctx.first_byte_at - ctx.received_at)
        if ctx.usage:
            m.child(m.tokens, model, "prompt").inc(ctx.usage.get("prompt_tokens", 0))
            m.child(m.tokens, model, "completion").inc(ctx.usage.get("completion_tokens", 0))
        for a in ctx.attempts:
            m.child(m.attempts, a.deployment, a.outcome).inc()
        if ctx.guards:
            self.guarding.count(ctx, model)
        ready = ctx.open_stream
        if ready is not None:
            ctx.open_stream = None
            self.executor.stream_finished(ready, usage_tokens=int(ctx.usage.get("total_tokens") or 0))
        self._meter_finish(ctx)
        if ctx.cache_key is not None and ctx.endpoint != "embeddings":
            self.caching.store_chat(ctx)
        sc = self.config.store
        record = ctx.to_record(log_bodies=sc.log_bodies, redact_keys=sc.redact_keys)
        loop = self._loop
        if sc.commit_before_answer and loop is not None:
            fut: asyncio.Future[None] = loop.create_future()
            ctx.stored = fut
            self.writer.submit(record, on_stored=lambda: loop.call_soon_threadsafe(_resolve, fut))
        else:
            self.writer.submit(record)

    @staticmethod
    async def stored(ctx: RequestContext) -> None:
        """Wait until the request's log record is stored (only under store.commit_before_answer)."""
        if ctx.stored is not None:
            await asyncio.shield(ctx.stored)

    async def _admit(self, ctx: RequestContext, route: Route, body: dict[str, Any]) -> None:
        adm = await self.meter.admit(_subject(ctx), route, body, ctx.dialect)
        if adm is not None:
            ctx.admission, ctx.admission_headers = adm, adm.headers

    def _billed_usage(self, ctx: RequestContext, dep: Deployment | None) -> tuple[dict[str, Any] | None, str]:
        """The usage the request is billed for, and its dialect: the upstream's, or counted offline (and
        flagged ``usage_estimated``) when it reported none or the stream was cut before its usage came."""
        raw = ctx.response.get("usage") if isinstance(ctx.response, dict) else None
        if not isinstance(raw, dict) or not raw:
            raw = ctx.usage or None
            dialect = "openai"
        else:
            dialect = ctx.dialect
        if dep is None or not isinstance(ctx.response, dict):
            return raw, dialect
        # a relayed stream that ended early: the client hung up (499), the upstream broke off, a guard stopped it
        cut = ctx.stream and ctx.status >= 400
        if not cut and (ctx.status >= 400 or _has_tokens(raw)):
            return raw, dialect
        adm = ctx.admission
        est = self.meter.estimate_usage(ctx.dialect, ctx.body or {}, ctx.response, dep.model,
                                        prompt_tokens=adm.prompt_tokens if adm is not None else None)
        if not est:
            return raw, dialect
        if cut:
            if ctx.status != 499 and not est["completion_tokens"]:
                return raw, dialect  # the upstream failed before relaying anything: nothing to bill beyond it
            final = ctx.finish_reason is not None if dialect == "anthropic" else "completion_tokens" in (raw or {})
            raw, dialect, estimated = cut_usage(raw, dialect, est, final)
            ctx.usage = usage_from_anthropic(raw) if dialect == "anthropic" else usage_from_openai(raw)
        else:  # the upstream reported no usage: count it ourselves, and say so
            raw, dialect, estimated = est, "openai", True
            ctx.usage = est
        if estimated:
            ctx.flags.append("usage_estimated")
        return raw, dialect

    def _meter_finish(self, ctx: RequestContext) -> None:
        """Price the request exactly, then settle its quota and budget holds (exactly once)."""
        dep = self.router.deployment(ctx.deployment) if ctx.deployment and not ctx.degraded else None
        if ctx.cache_status in _CACHE_ANSWERS:
            dep = None  # answered from the cache (a stale answer after failed attempts too): no upstream answer
        if dep is None and ctx.admission is None:
            return
        raw, dialect = self._billed_usage(ctx, dep)
        c, price = self.meter.cost_of(dep, ctx.served_model, dialect, raw)
        usd = Decimal(0)
        for dep_id, served, usage in ctx.prior_usage:  # earlier answers the guards asked again for
            prior_dep = self.router.deployment(dep_id) if dep_id else None
            pc, _ = self.meter.cost_of(prior_dep, served, "openai", usage) if prior_dep is not None else (None, None)
            if pc is not None:
                usd += pc.total
        if c is not None:
            usd += c.total
            ctx.cost_usd = usd
            ctx.cost_detail = {"usd": str(usd), **{k: str(v) for k, v in c.breakdown.items()},
                               "prices": self.meter.prices.version}
        elif dep is not None and ctx.usage:
            ctx.flags.append("unpriced")
        adm = ctx.admission
        if adm is not None:
            ctx.flags.extend(adm.budget.flags)
            ctx.admission = None
            if self.meter.over_reservation(adm, usd):  # spent all the same: recorded as it is, and said
                ctx.flags.append("over_reservation")
                self.metrics.over_reservation.labels(ctx.alias or "-", ctx.deployment or "-").inc()
                self.meter.alerts.on_over_reservation(ctx.deployment or "-", ctx.alias, ctx.request_id,
                                                      adm.worst_usd, usd)
        if adm is not None:
            tokens = int(ctx.usage.get("total_tokens") or 0) if ctx.usage else 0
            self.executor.background.spawn(self.meter.settle(adm, usd, tokens))
        if usd > 0 and self.meter.alerts.wants_costs:
            self.meter.alerts.on_cost(adm.subject if adm is not None else _subject(ctx), usd)

    @staticmethod
    def headers(ctx: RequestContext) -> dict[str, str]:
        sent = sum(1 for a in ctx.attempts if a.outcome != "skipped")
        h = {"x-bastion-request-id": ctx.request_id, "x-bastion-attempts": str(sent)}
        h["x-request-id" if ctx.dialect == "openai" else "request-id"] = ctx.request_id
        if ctx.deployment:
            h["x-bastion-deployment"] = ctx.deployment
        if ctx.served_model:
            h["x-bastion-model"] = ctx.served_model
        if ctx.served_alias and ctx.served_alias != ctx.alias:
            h["x-bastion-fallback-model"] = ctx.served_alias
        if ctx.cost_usd is not None:
            h["x-bastion-cost"] = f"{ctx.cost_usd:f}"
        if ctx.prompt_version:
            h["x-bastion-prompt-version"] = ctx.prompt_version
        summary = guard_summary(ctx.guards)
        if summary:
            h["x-bastion-guard"] = summary
        if ctx.cache_status in ("miss", "bypass", "refresh"):
            h["x-bastion-cache"] = ctx.cache_status
        if ctx.admission_headers:
            h.update(ctx.admission_headers)
        if len(ctx.attempts) > 1:
            h["x-bastion-trail"] = ", ".join(
                f"{a.deployment}={a.error_code or a.outcome}" if a.outcome != "ok" else f"{a.deployment}=ok"
                for a in ctx.attempts
            )[:1000]
        return h

    # ---- upstream calls through the attempt loop -----------------------------------------------
    def _serve(self, ctx: RequestContext, ready: Ready) -> None:
        dep = ready.cand.deployment
        ctx.deployment, ctx.provider, ctx.upstream_model = dep.id, dep.provider.name, dep.model
        ctx.served_alias = ready.cand.route.alias
        ctx.mark_first_byte_at(ready.attempt.first_byte_at)

    def _note_failure(self, ctx: RequestContext) -> None:
        sent = [a for a in ctx.attempts if a.outcome != "skipped"]
        if sent:
            last = self.router.deployment(sent[-1].deployment)
            if last is not None:
                ctx.deployment, ctx.provider, ctx.upstream_model = last.id, last.provider.name, last.model

    async def _execute(
        self, ctx: RequestContext, route: Route, make: MakeRequest, *, stream: bool, body: dict[str, Any]
    ) -> Ready | Result:
        try:
            return await self.executor.run(ctx, route, make, stream=stream, body=body)
        except Exhausted as ex:
            self._note_failure(ctx)
            if self.answer_on_failure is not None:
                cached = await self.answer_on_failure(ctx, route, body, ex.error)
                if cached is not None:
                    return cached
            degraded = route.policy.fallback.degraded
            if degraded is None or route.kind != "chat":
                raise ex.error from None
            return self._degraded(ctx, route, ex.error, stream)

    def _degraded(self, ctx: RequestContext, route: Route, err: BastionError, stream: bool) -> Result:
        cfg = route.policy.fallback.degraded
        assert cfg is not None
        ctx.degraded = True
        ctx.error_code, ctx.error_message = "degraded", f"served the degraded answer because {err.message}"
        ctx.response = degraded_body(ctx.dialect, route.alias, cfg)
        ctx.finish_reason = cfg.finish_reason
        ctx.served_model = route.alias
        self.metrics.degraded.labels(route.alias).inc()
        headers = self.headers(ctx) | {"x-bastion-degraded": "true"}
        self.finish(ctx)
        if stream:
            wants_usage = bool(((ctx.body or {}).get("stream_options") or {}).get("include_usage"))
            return Result(headers=headers, stream=degraded_stream(ctx.dialect, route.alias, cfg, wants_usage),
                          media_type="text/event-stream")
        return Result(headers=headers, body=orjson.dumps(ctx.response))

    # ---- chat (both dialects) ----------------------------------------------------------------
    async def chat(self, ctx: RequestContext, body: dict[str, Any], *, pin: str | None = None) -> Result:
        """Serve a chat request in ``ctx.dialect``; ``pin`` forces one deployment (replay)."""
        if pin is not None:
            pinned = self.router.deployment(pin)
            if pinned is None:
                raise ModelNotFound(f"deployment {pin!r} is no longer in the config; cannot send to it")
            ctx.alias = ctx.alias or pinned.alias
            route = self.router.pinned_route(pinned)
        else:
            route = self.router.route(body.get("model"), "chat")
            ctx.alias = route.alias
        ctx.stream = stream = bool(body.get("stream"))
        policy = self.guarding.policy(route.alias, ctx.key.tenant if ctx.key else "default")
        self.guarding.check_schemas(policy, body, ctx.dialect)
        await self.guarding.scan_input(ctx, policy, body)
        if pin is None:
            hit = await self.caching.before(ctx, route, body, "chat")
            if hit is not None:
                return hit
        up_body, prot = self.guarding.protect(policy, body, ctx.dialect)
        await self._admit(ctx, route, up_body)  # the reservation prices the prompt the upstream will bill
        whole = stream and self.guarding.needs_whole_answer(ctx, policy, body, prot)
        if whole:
            up_body = {k: v for k, v in up_body.items() if k != "stream_options"} | {"stream": False}
        up_stream = stream and not whole
        ready = await self._execute(ctx, route, self._maker(ctx, up_body, up_stream), stream=up_stream,
                                    body=up_body)
        if isinstance(ready, Result):
            return ready
        self._serve(ctx, ready)
        up = ready.cand.deployment.provider.dialect
        if up_stream:
            if policy.refusal.action == "fallback" and policy.refusal.fallback:
                ready = await self._stream_refusal_fallback(ctx, policy, ready, body, up_body)
                up = ready.cand.deployment.provider.dialect
            return self._start_stream(ctx, up, ready, self.guarding.stream_guard(policy, prot, body, ctx.dialect))
        out, raw = self._answer(ctx, up, ready)
        self._settle_tokens(ready, ctx)
        out, changed = await self._guard_answer(ctx, route, policy, prot, body, up_body, out)
        ctx.response = out
        if changed:  # a held tool call turns the finish reason into stop / end_turn
            ctx.finish_reason = response_facts(ctx.dialect, out)[3]
        self.finish(ctx)
        if stream:  # read whole for the guards: streamed to the client now
            wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            chat = out if ctx.dialect == "openai" else messages_response_to_chat(out)
            return Result(headers=self.headers(ctx), stream=stream_chat(chat, ctx.dialect, include_usage=wants_usage),
                          media_type="text/event-stream")
        return Result(headers=self.headers(ctx), body=orjson.dumps(out) if changed else raw)

    def _maker(self, ctx: RequestContext, up_body: dict[str, Any], stream: bool) -> MakeRequest:
        def make(cand: Candidate) -> tuple[str, bytes]:
            dep = cand.deployment
            payload = upstream_body(ctx.dialect, dep.provider.dialect, up_body, dep.model, stream)
            return dep.provider.chat_url(dep.model), orjson.dumps(payload)
        return make

    def _answer(self, ctx: RequestContext, up: str, ready: Ready) -> tuple[dict[str, Any], bytes]:
        """The upstream's whole answer in the client's dialect (and its bytes), with its facts in ``ctx``."""
        raw, data = ready.raw, ready.data
        out = client_response(ctx.dialect, up, data)
        ctx.response = out
        ctx.usage, ctx.served_model, ctx.system_fingerprint, ctx.finish_reason = response_facts(ctx.dialect, out)
        if up != ctx.dialect:
            _, served, fp, _ = response_facts(up, data)
            ctx.served_model, ctx.system_fingerprint = served or ctx.served_model, fp or ctx.system_fingerprint
            raw = orjson.dumps(out)  # same dialect: the upstream's bytes go through untouched
        return out, raw

    def _settle_tokens(self, ready: Ready, ctx: RequestContext) -> None:
        dep = ready.cand.deployment
        if dep.tpm is not None:
            self.executor.settle_tokens(dep, ready.est_tokens, int(ctx.usage.get("total_tokens") or 0))

    def _start_stream(self, ctx: RequestContext, up: str, ready: Ready, guard: StreamGuard | None = None) -> Result:
        first, attempt = ready.first, ready.attempt
        try:
            peek = orjson.loads(first[0].data) if first[0].data != b"[DONE]" else {}
        except orjson.JSONDecodeError:
            peek = {}
        if isinstance(peek, dict):
            ctx.served_model = peek.get("model") or (peek.get("message") or {}).get("model")
        assert ready.resp is not None and ready.events is not None
        ctx.open_stream = ready
        relay = StreamRelay(ctx, up, ready.resp, ready.events, first, attempt, self.finish, guard)
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
        hit = await self.caching.before(ctx, route, body, "embedding")
        if hit is not None:
            return hit
        await self._admit(ctx, route, body)

        def make(cand: Candidate) -> tuple[str, bytes]:
            dep = cand.deployment
            return dep.provider.embeddings_url(dep.model), orjson.dumps({**body, "model": dep.model})

        ready = await self._execute(ctx, route, make, stream=False, body=body)
        assert isinstance(ready, Ready)
        self._serve(ctx, ready)
        raw, raw_data = ready.raw, ready.data
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
        self._settle_tokens(ready, ctx)
        self.finish(ctx)
        self.caching.store_embedding(ctx, raw_data)
        return Result(headers=self.headers(ctx), body=raw)
