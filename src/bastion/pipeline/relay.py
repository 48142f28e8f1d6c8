"""Relay an upstream SSE stream to the client in the client's dialect, and account for it.

Four cases: OpenAI→OpenAI and Anthropic→Anthropic pass the upstream's event bytes through untouched
(parsing each event only to meter it); the two cross cases translate event by event. A stream that breaks
or ends before its terminator gives the client a clean error event in its dialect, and the request is
logged with the error, never as a success.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import orjson

from bastion.dialects import ChatToMessagesStream, MessagesToChatStream
from bastion.errors import BastionError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bastion.guards.stream_guard import StreamGuard
from bastion.guards.verdicts import OutputBlocked
from bastion.providers import SSEEvent
from bastion.scrub import excerpt

from .accumulate import (
    AnthropicStreamAccumulator,
    OpenAIStreamAccumulator,
    usage_from_anthropic,
    usage_from_openai,
)
from .context import Attempt, RequestContext
from .guarding import guard_summary, record_verdicts

log = logging.getLogger("bastion.relay")

DONE = b"data: [DONE]\n\n"


def _message_id(chat_id: Any) -> str | None:
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return None


def openai_sse(chunk: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"


def anthropic_sse(event_type: str, data: dict[str, Any]) -> bytes:
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def error_event(dialect: str, err: BastionError, request_id: str) -> bytes:
    if dialect == "openai":
        return openai_sse(err.to_openai(request_id))
    return anthropic_sse("error", err.to_anthropic(request_id))


def _upstream_stream_error(data: dict[str, Any], deployment: str) -> UpstreamError:
    """The upstream's own words, without the credentials upstreams like to quote (bastion.scrub)."""
    err = e if isinstance(e := data.get("error"), dict) else {}
    msg = excerpt(str(err.get("message") or "unknown error"))
    return UpstreamError(
        f"deployment {deployment!r} sent an error in the middle of the stream: {msg}",
        status=502,
        code="upstream_stream_error",
    )


class StreamRelay:
    """One streamed answer: ``first`` is the upstream's first batch of events, already read.

    Events are read in batches (what one network read carried) and forwarded in one write per batch.
    """

    def __init__(
        self,
        ctx: RequestContext,
        upstream_dialect: str,
        response: aiohttp.ClientResponse,
        events: AsyncIterator[list[SSEEvent]],
        first: list[SSEEvent],
        attempt: Attempt,
        finish: Callable[[RequestContext], None],
        guard: StreamGuard | None = None,
    ) -> None:
        self.ctx = ctx
        self.up = upstream_dialect
        self.response = response
        self.events = events
        self.first = first
        self.attempt = attempt
        self.finish = finish
        self.guard = guard  # output guards: text is re-serialised, not passed through, when present
        body = ctx.body or {}
        self.client_wants_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        self.acc_openai = OpenAIStreamAccumulator() if ctx.dialect == "openai" else None
        self.acc_anthropic = AnthropicStreamAccumulator() if ctx.dialect == "anthropic" else None
        self.to_chat = MessagesToChatStream(include_usage=True) if (ctx.dialect, upstream_dialect) == (
            "openai", "anthropic") else None
        self.needs_to_messages = (ctx.dialect, upstream_dialect) == ("anthropic", "openai")
        self.to_messages: ChatToMessagesStream | None = None
        self.completed = False
        self.finished = False
        self.upstream_fingerprint: str | None = None
        self._out: list[bytes] = []  # this batch's output, not yet sent
        self._pending = b""  # events owed to the client before an error event

    # -- per-event handling: returns the bytes to send to the client ----------------------------
    def _send_chunk(self, chunk: dict[str, Any], raw: bytes | None) -> bytes:
        assert self.acc_openai is not None
        if self.guard is not None and chunk.get("choices"):
            chunk, raw = self.guard.openai_chunk(chunk), None
            if any(isinstance(c, dict) and c.get("finish_reason") is not None for c in chunk["choices"]):
                self._summarise(chunk)
        self.acc_openai.feed(chunk)
        if self.acc_openai.saw_token:
            self.ctx.mark_first_byte()
        if not self.client_wants_usage and not chunk.get("choices") and chunk.get("usage"):
            return b""  # usage-only chunk the client did not ask for (Bastion asked for it)
        return raw if raw is not None else openai_sse(chunk)

    def _send_event(self, event_type: str, data: dict[str, Any], raw: bytes | None) -> bytes:
        assert self.acc_anthropic is not None
        if self.guard is not None:
            if event_type.startswith("content_block"):
                return b"".join(self._send_one(t, d, None) for t, d in self.guard.anthropic_event(event_type, data))
            if event_type == "message_delta":
                data = dict(data)
                if self._summarise(data):
                    raw = None
        return self._send_one(event_type, data, raw)

    def _summarise(self, data: dict[str, Any]) -> bool:
        """The headers left before the answer was scanned: the stream's last chunk (OpenAI: the one with
        ``finish_reason``; Anthropic: ``message_delta``) says what the guards did, as ``bastion.guard``."""
        assert self.guard is not None
        summary = guard_summary(self.ctx.guards + self.guard.verdicts)
        if summary is None:
            return False
        data["bastion"] = {**(data.get("bastion") or {}), "guard": summary}
        return True

    def _send_one(self, event_type: str, data: dict[str, Any], raw: bytes | None) -> bytes:
        assert self.acc_anthropic is not None
        self.acc_anthropic.feed(event_type, data)
        if self.acc_anthropic.saw_token:
            self.ctx.mark_first_byte()
        return raw if raw is not None else anthropic_sse(event_type, data)

    def handle(self, ev: SSEEvent) -> bytes:
        deployment = self.attempt.deployment
        if self.up == "openai":
            if ev.data == b"[DONE]":
                self.completed = True
                if self.needs_to_messages and self.to_messages is None:
                    raise UpstreamUnavailable(f"deployment {deployment!r} ended the stream without any chunk")
                if self.to_messages is not None:
                    out = b"".join(self._send_event(t, d, None) for t, d in self.to_messages.finish())
                    if not self.to_messages.done:
                        self.completed = False
                        self._pending = out
                        raise UpstreamUnavailable(
                            f"deployment {deployment!r} ended the stream without a finish reason: "
                            "the answer is incomplete",
                            code="upstream_stream_truncated",
                        )
                    return out
                return DONE
            chunk = orjson.loads(ev.data)
            if not isinstance(chunk, dict):
                raise UpstreamUnavailable(f"deployment {deployment!r} sent a stream chunk that is not an object")
            if "error" in chunk and "choices" not in chunk:
                raise _upstream_stream_error(chunk, deployment)
            if chunk.get("system_fingerprint"):
                self.upstream_fingerprint = chunk["system_fingerprint"]
            if self.needs_to_messages:
                if self.to_messages is None:
                    self.to_messages = ChatToMessagesStream(
                        model=str(chunk.get("model") or self.ctx.upstream_model or ""),
                        message_id=_message_id(chunk.get("id")),
                    )
                return b"".join(self._send_event(t, d, None) for t, d in self.to_messages.feed(chunk))
            return self._send_chunk(chunk, ev.raw if ev.raw.startswith(b"data:") else None)
        # upstream speaks Anthropic
        data = orjson.loads(ev.data)
        if not isinstance(data, dict):
            raise UpstreamUnavailable(f"deployment {deployment!r} sent a stream event that is not an object")
        event_type = ev.event or str(data.get("type") or "")
        if event_type == "error":
            raise _upstream_stream_error(data, deployment)
        if self.to_chat is not None:
            parts = [self._send_chunk(c, None) for c in self.to_chat.feed(event_type, data)]
            if event_type == "message_stop":
                self.completed = True
                parts.extend(self._send_chunk(c, None) for c in self.to_chat.finish())
                parts.append(DONE)
            return b"".join(parts)
        if event_type == "message_stop":
            self.completed = True
        return self._send_event(event_type, data, ev.raw)

    # -- the generator handed to the HTTP layer -------------------------------------------------
    async def __aiter__(self) -> AsyncIterator[bytes]:
        ctx = self.ctx
        try:
            batch: list[SSEEvent] | None = self.first
            while batch is not None:
                for ev in batch:
                    out = self.handle(ev)
                    if out:
                        self._out.append(out)
                    if self.completed:
                        break
                if self._out:
                    data = b"".join(self._out)
                    self._out = []
                    yield data
                if self.completed:
                    break
                batch = await anext(self.events, None)
            if not self.completed:
                raise UpstreamUnavailable(
                    f"deployment {self.attempt.deployment!r} ended the stream before it was complete "
                    "(no terminator): the answer is truncated",
                    code="upstream_stream_truncated",
                )
            self.attempt.outcome = "ok"
        except OutputBlocked as e:  # the answer, not the upstream, failed: the attempt itself went fine
            ctx.fail(e)
            self.attempt.outcome = "ok"
            if self.guard is not None:
                ctx.guards.extend(self.guard.verdicts)
                self.guard.verdicts = []
            yield b"".join(self._out) + error_event(ctx.dialect, e, ctx.request_id)
        except (TimeoutError, BastionError, aiohttp.ClientError, orjson.JSONDecodeError) as e:
            err = _as_stream_error(e, self.attempt.deployment)
            ctx.fail(err)
            self.attempt.outcome, self.attempt.error, self.attempt.error_code = "error", err.message, err.code
            yield b"".join(self._out) + self._pending + error_event(ctx.dialect, err, ctx.request_id)
        except (asyncio.CancelledError, GeneratorExit):
            ctx.status, ctx.error_code = 499, "client_closed"
            ctx.error_message = "the client closed the connection before the stream ended"
            self.attempt.outcome = "client_closed"
            raise
        except Exception as e:  # a bug of ours: say so in the stream rather than cut it silently
            log.exception("stream relay failed for %s", ctx.request_id)
            err = BastionError(f"internal error while relaying the stream: {type(e).__name__}", status=500)
            ctx.fail(err)
            self.attempt.outcome, self.attempt.error, self.attempt.error_code = "error", err.message, err.code
            yield b"".join(self._out) + error_event(ctx.dialect, err, ctx.request_id)
        finally:
            self.attempt.ended_at = ctx.now()
            if self.completed:
                self.response.release()
            else:
                self.response.close()
            self._close()

    def _close(self) -> None:
        if self.finished:
            return
        self.finished = True
        self._settle()
        self.finish(self.ctx)

    def ensure_finished(self) -> None:
        """Called by the HTTP layer when the response is over; records a stream that never started."""
        if self.finished:
            return
        ctx = self.ctx
        if ctx.error_code is None and not self.completed:
            ctx.status, ctx.error_code = 499, "client_closed"
            ctx.error_message = "the client closed the connection before the stream started"
            self.attempt.outcome = "client_closed"
        self.attempt.ended_at = self.attempt.ended_at or ctx.now()
        if not self.response.closed:
            self.response.close()
        self._close()

    def _settle(self) -> None:
        ctx = self.ctx
        if self.guard is not None and self.guard.verdicts:
            record_verdicts(ctx, self.guard.verdicts)
            self.guard.verdicts = []
        if self.acc_openai is not None:
            ctx.response = self.acc_openai.result()
            ctx.usage = usage_from_openai(self.acc_openai.usage)
            ctx.served_model = self.acc_openai.model
            ctx.system_fingerprint = self.acc_openai.system_fingerprint
            ctx.finish_reason = self.acc_openai.finish_reason
        elif self.acc_anthropic is not None:
            ctx.response = self.acc_anthropic.result()
            ctx.usage = usage_from_anthropic(self.acc_anthropic.usage)
            ctx.served_model = self.acc_anthropic.model
            ctx.system_fingerprint = self.upstream_fingerprint
            ctx.finish_reason = self.acc_anthropic.stop_reason


def _as_stream_error(e: Exception, deployment: str) -> BastionError:
    if isinstance(e, BastionError):
        return e
    if isinstance(e, asyncio.TimeoutError):
        return UpstreamTimeout(f"deployment {deployment!r} went silent in the middle of the stream")
    if isinstance(e, orjson.JSONDecodeError):
        return UpstreamUnavailable(
            f"deployment {deployment!r} sent a malformed stream event (not valid JSON)", code="upstream_malformed"
        )
    return UpstreamUnavailable(
        f"deployment {deployment!r} dropped the connection in the middle of the stream ({type(e).__name__})",
        code="upstream_stream_broken",
    )
