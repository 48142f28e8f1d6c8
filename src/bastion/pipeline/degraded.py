"""The static degraded answer a route may configure for when every attempt failed.

It is a normal answer in the client's dialect (streamed if the client asked for a stream), marked with
``x-bastion-degraded: true`` and ``model`` set to the alias, and logged with the failures that led to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from bastion.config.reliability import DegradedConfig
from bastion.dialects import chat_response_to_messages

from .synthetic import stream_chat


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


async def degraded_stream(dialect: str, alias: str, cfg: DegradedConfig, include_usage: bool) -> AsyncIterator[bytes]:
    async for part in stream_chat(degraded_chat(alias, cfg), dialect, include_usage=include_usage):
        yield part
