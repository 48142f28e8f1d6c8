"""Answers Bastion makes itself (a cached answer, a degraded answer), streamed like a live one.

A ``chat.completion`` is cut into ``chat.completion.chunk`` events the way upstreams send them: a role
chunk, one chunk per word-sized piece of content, tool calls, a finish chunk, a usage chunk when asked
for, and ``[DONE]``; Anthropic clients get the same through the OpenAI→Anthropic stream translator.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson

from bastion.dialects import ChatToMessagesStream

_PIECE = re.compile(r"\s*\S+|\s+$")


def chat_chunks(chat: dict[str, Any], *, include_usage: bool) -> Iterator[dict[str, Any]]:
    base = {"id": chat.get("id"), "object": "chat.completion.chunk", "created": chat.get("created"),
            "model": chat.get("model"), "system_fingerprint": chat.get("system_fingerprint")}
    for choice in chat.get("choices") or []:
        i = choice.get("index", 0)
        msg = choice.get("message") or {}

        def one(delta: dict[str, Any], finish: str | None = None, i: int = i) -> dict[str, Any]:
            return base | {"choices": [{"index": i, "delta": delta, "logprobs": None, "finish_reason": finish}]}

        yield one({"role": "assistant", "content": ""})
        content = msg.get("content")
        if isinstance(content, str):
            for piece in _PIECE.findall(content):
                yield one({"content": piece})
        for n, call in enumerate(msg.get("tool_calls") or []):
            fn = call.get("function") or {}
            yield one({"tool_calls": [{"index": n, "id": call.get("id"), "type": "function",
                                       "function": {"name": fn.get("name"), "arguments": ""}}]})
            if fn.get("arguments"):
                yield one({"tool_calls": [{"index": n, "function": {"arguments": fn.get("arguments")}}]})
        yield one({}, choice.get("finish_reason") or "stop")
    if include_usage:
        yield base | {"choices": [], "usage": chat.get("usage")}


async def stream_chat(chat: dict[str, Any], dialect: str, *, include_usage: bool) -> AsyncIterator[bytes]:
    """The SSE bytes of ``chat`` in ``dialect``, in one write (it is all in hand)."""
    if dialect == "openai":
        out = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chat_chunks(chat, include_usage=include_usage)]
        yield b"".join(out) + b"data: [DONE]\n\n"
        return
    usage = chat.get("usage") or {}
    conv = ChatToMessagesStream(model=str(chat.get("model") or ""),
                                message_id="msg_" + str(chat.get("id") or "").removeprefix("chatcmpl-"),
                                input_tokens=int(usage.get("prompt_tokens") or 0))
    events: list[tuple[str, dict[str, Any]]] = []
    for c in chat_chunks(chat, include_usage=True):
        events.extend(conv.feed(c))
    events.extend(conv.finish())
    yield b"".join(b"event: " + t.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for t, d in events)
