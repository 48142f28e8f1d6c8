"""Non-streaming responses: Anthropic message <-> OpenAI chat.completion."""

from __future__ import annotations

import time
from typing import Any

import orjson

from ._common import chat_id_for, dumps, finish_reason_for, message_id_for, stop_reason_for

# Key under which a tool call's arguments are kept when an OpenAI upstream produced invalid JSON.
RAW_ARGUMENTS_KEY = "_raw_arguments"


def chat_usage_from_anthropic(usage: dict[str, Any] | None) -> dict[str, Any]:
    """OpenAI usage from an Anthropic usage object (prompt tokens include cache reads and writes)."""
    usage = usage or {}
    fresh = usage.get("input_tokens") or 0
    cache_read = usage.get("cache_read_input_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    output = usage.get("output_tokens") or 0
    prompt = fresh + cache_read + cache_write
    out: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": output,
        "total_tokens": prompt + output,
        "prompt_tokens_details": {"cached_tokens": cache_read},
    }
    if cache_write:
        # Not OpenAI: kept so that metering can price cache writes.
        out["cache_creation_input_tokens"] = cache_write
    return out


def anthropic_usage_from_chat(usage: dict[str, Any] | None) -> dict[str, Any]:
    """Anthropic usage from an OpenAI usage object (input_tokens excludes cached tokens)."""
    usage = usage or {}
    prompt = usage.get("prompt_tokens") or 0
    details = usage.get("prompt_tokens_details") or {}
    cache_read = details.get("cached_tokens") or 0
    cache_write = usage.get("cache_creation_input_tokens") or 0
    return {
        "input_tokens": max(prompt - cache_read - cache_write, 0),
        "output_tokens": usage.get("completion_tokens") or 0,
        "cache_read_input_tokens": cache_read,
        "cache_creation_input_tokens": cache_write,
    }


def messages_response_to_chat(resp: dict, *, model: str | None = None) -> dict:
    """Translate an Anthropic ``message`` object into an OpenAI ``chat.completion``."""
    texts: list[str] = []
    thinking: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for block in resp.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            tool_calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": dumps(block.get("input") or {})},
                }
            )
        elif kind == "thinking":
            thinking.append(block.get("thinking") or "")
        # redacted_thinking and server-tool blocks have no OpenAI form: dropped.
    message: dict[str, Any] = {"role": "assistant"}
    if texts:
        message["content"] = "".join(texts)
    else:
        message["content"] = None if tool_calls else ""
    if tool_calls:
        message["tool_calls"] = tool_calls
    if thinking:
        message["reasoning_content"] = "".join(thinking)
    message["refusal"] = None
    return {
        "id": chat_id_for(resp.get("id") or "msg_unknown"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model or resp.get("model") or "",
        "system_fingerprint": None,
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason_for(resp.get("stop_reason")),
            }
        ],
        "usage": chat_usage_from_anthropic(resp.get("usage")),
    }


def chat_response_to_messages(resp: dict, *, model: str | None = None) -> dict:
    """Translate an OpenAI ``chat.completion`` into an Anthropic ``message`` (first choice only)."""
    choices = resp.get("choices") or []
    choice = choices[0] if choices else {}
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    text = message.get("content")
    if isinstance(text, list):  # some servers return content parts
        text = "".join(p.get("text") or "" for p in text if isinstance(p, dict))
    if text:
        content.append({"type": "text", "text": text})
    refusal = message.get("refusal")
    if refusal and not text:
        content.append({"type": "text", "text": refusal})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id") or "",
                "name": function.get("name") or "",
                "input": _parse_arguments(function.get("arguments")),
            }
        )
    stop_reason = stop_reason_for(choice.get("finish_reason"))
    if refusal and choice.get("finish_reason") in (None, "stop"):
        stop_reason = "refusal"
    return {
        "id": message_id_for(resp.get("id") or "unknown"),
        "type": "message",
        "role": "assistant",
        "model": model or resp.get("model") or "",
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": anthropic_usage_from_chat(resp.get("usage")),
    }


def _parse_arguments(arguments: Any) -> dict[str, Any]:
    if isinstance(arguments, dict):
        return arguments
    if not isinstance(arguments, str) or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if isinstance(value, dict):
        return value
    # The upstream model produced arguments that are not a JSON object: keep them visible, not lost.
    return {RAW_ARGUMENTS_KEY: arguments}
