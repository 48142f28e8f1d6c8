"""Read a stream up to its first token, holding back what came before it.

Nothing reaches the client until an upstream has produced a token, so that a failure up to then (a hang,
a drop, an error event) can be re-tried on another deployment without the client seeing two answers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson

from bastion.errors import UpstreamError, UpstreamUnavailable
from bastion.providers import SSEEvent
from bastion.scrub import excerpt

_ANTHROPIC_TOKEN_EVENTS = frozenset({"content_block_delta", "message_delta", "message_stop"})


def _openai_has_token(chunk: dict[str, Any]) -> bool:
    choices = chunk.get("choices")
    if not choices:
        return bool(chunk.get("usage"))  # usage-only chunk: the answer is over
    for c in choices:
        if not isinstance(c, dict):
            continue
        if c.get("finish_reason"):
            return True
        delta = c.get("delta") or {}
        if isinstance(delta, dict) and (delta.get("content") or delta.get("tool_calls") or delta.get("refusal")
                                        or delta.get("reasoning_content")):
            return True
    return False


def _stream_error(data: dict[str, Any], dep: str) -> UpstreamError:
    err = e if isinstance(e := data.get("error"), dict) else {}
    msg = excerpt(str(err.get("message") or "unknown error"))  # upstreams quote the key they were sent
    return UpstreamError(
        f"deployment {dep!r} sent an error event before the first token: {msg}",
        status=502, code="upstream_stream_error",
    )


def has_token(ev: SSEEvent, dialect: str, dep: str) -> bool:
    """Whether ``ev`` carries (or ends) the answer; raises on an error event or unreadable data."""
    if ev.data == b"[DONE]":
        return True
    try:
        data = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(
            f"deployment {dep!r} sent a malformed stream event (not valid JSON)", code="upstream_malformed"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable(f"deployment {dep!r} sent a stream event that is not an object")
    if dialect == "openai":
        if "error" in data and "choices" not in data:
            raise _stream_error(data, dep)
        return _openai_has_token(data)
    kind = ev.event or str(data.get("type") or "")
    if kind == "error":
        raise _stream_error(data, dep)
    return kind in _ANTHROPIC_TOKEN_EVENTS


async def read_to_first_token(events: AsyncIterator[list[SSEEvent]], dialect: str, dep: str) -> list[SSEEvent]:
    """The events up to and including the batch that holds the first token."""
    held: list[SSEEvent] = []
    async for batch in events:
        held.extend(batch)
        if any(has_token(ev, dialect, dep) for ev in batch):
            return held
    raise UpstreamUnavailable(
        f"deployment {dep!r} ended the stream before its first token" if held else
        f"deployment {dep!r} sent an empty stream", code="upstream_stream_truncated",
    )
