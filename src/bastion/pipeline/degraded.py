"""The static degraded answer a route may configure for when every attempt failed.

It is a normal answer in the client's dialect (streamed if the client asked for a stream), marked with
``x-bastion-degraded: true`` and ``model`` set to the alias, and logged with the failures that led to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson

from bastion.config.reliability import DegradedConfig
from bastion.dialects import ChatToMessagesStream, chat_response_to_messages


def degraded_chat(alias: str, cfg: DegradedConfig) -> dict[str, Any]:
    return {
        "id": "chatcmpl-degraded-" + uuid.uuid4().hex[:16],
        "object": "chat.completion",
        "created": int(time.time()),
        "model": alias,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": cfg.content, "refusal": None},
            "logprobs": None,
            "finish_reason": cfg.finish_reason,
        }],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        "system_fingerprint": None,
    }


def degraded_body(dialect: str, alias: str, cfg: DegradedConfig) -> dict[str, Any]:
    chat = degraded_chat(alias, cfg)
    return chat if dialect == "openai" else chat_response_to_messages(chat, model=alias)


def _chunks(chat: dict[str, Any], include_usage: bool) -> list[dict[str, Any]]:
    base = {k: chat[k] for k in ("id", "created", "model", "system_fingerprint")} | {"object": "chat.completion.chunk"}
    choice = chat["choices"][0]
    out = [
        base | {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        base | {"choices": [{"index": 0, "delta": {"content": choice["message"]["content"]}, "finish_reason": None}]},
        base | {"choices": [{"index": 0, "delta": {}, "finish_reason": choice["finish_reason"]}]},
    ]
    if include_usage:
        out.append(base | {"choices": [], "usage": chat["usage"]})
    return out


async def degraded_stream(dialect: str, alias: str, cfg: DegradedConfig, include_usage: bool) -> AsyncIterator[bytes]:
    chat = degraded_chat(alias, cfg)
    if dialect == "openai":
        parts = [b"data: " + orjson.dumps(c) + b"\n\n" for c in _chunks(chat, include_usage)]
        yield b"".join(parts) + b"data: [DONE]\n\n"
        return
    conv = ChatToMessagesStream(model=alias, message_id="msg_" + chat["id"].removeprefix("chatcmpl-"))
    events: list[tuple[str, dict[str, Any]]] = []
    for c in _chunks(chat, True):
        events.extend(conv.feed(c))
    events.extend(conv.finish())
    yield b"".join(b"event: " + t.encode() + b"\ndata: " + orjson.dumps(d) + b"\n\n" for t, d in events)
