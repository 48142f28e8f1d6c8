"""Small helpers shared by the dialect translators: validation, JSON, id and reason mappings."""

from __future__ import annotations

import json
from typing import Any

import orjson

from bastion.errors import InvalidRequest

# Anthropic stop_reason -> OpenAI finish_reason.
STOP_TO_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason.
FINISH_TO_STOP: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# Prefix that carries Anthropic's tool_result ``is_error`` flag through an OpenAI tool message.
TOOL_ERROR_PREFIX = "[tool_error] "

# Separator used when several system texts become one string.
SYSTEM_JOINER = "\n\n"


def finish_reason_for(stop_reason: str | None) -> str:
    if stop_reason is None:
        return "stop"
    return STOP_TO_FINISH.get(stop_reason, "stop")


def stop_reason_for(finish_reason: str | None) -> str:
    if finish_reason is None:
        return "end_turn"
    return FINISH_TO_STOP.get(finish_reason, "end_turn")


def dumps(value: Any) -> str:
    """Compact JSON text (what OpenAI puts in ``function.arguments``)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # integers beyond 64 bits: the standard library writes them exactly
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def chat_id_for(message_id: str) -> str:
    """OpenAI completion id for an Anthropic message id (reversible by :func:`message_id_for`)."""
    return message_id if message_id.startswith("chatcmpl-") else f"chatcmpl-{message_id}"


def message_id_for(chat_id: str) -> str:
    """Anthropic message id ("msg_…") derived from an OpenAI completion id."""
    rest = chat_id[len("chatcmpl-") :] if chat_id.startswith("chatcmpl-") else chat_id
    return rest if rest.startswith("msg_") else f"msg_{rest}"


# --- validation -------------------------------------------------------------------------------------


def fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def require_dict(value: Any, param: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise fail(f"must be an object, got {type_name(value)}", param)
    return value


def require_list(value: Any, param: str) -> list[Any]:
    if not isinstance(value, list):
        raise fail(f"must be an array, got {type_name(value)}", param)
    return value


def require_str(value: Any, param: str) -> str:
    if not isinstance(value, str):
        raise fail(f"must be a string, got {type_name(value)}", param)
    return value


def require_bool(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise fail(f"must be a boolean, got {type_name(value)}", param)
    return value


def require_int(value: Any, param: str, *, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(f"must be an integer, got {type_name(value)}", param)
    if minimum is not None and value < minimum:
        raise fail(f"must be at least {minimum}, got {value}", param)
    return value


def require_number(value: Any, param: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"must be a number, got {type_name(value)}", param)
    return value


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def parse_data_url(url: str, param: str) -> tuple[str, str]:
    """Split ``data:<media type>;base64,<data>`` into (media type, base64 data)."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or not head.endswith(";base64"):
        raise fail("data URLs must have the form data:<media type>;base64,<data>", param)
    media_type = head[len("data:") : -len(";base64")]
    if not media_type:
        raise fail("the data URL has no media type (data:image/png;base64,...)", param)
    return media_type, data
