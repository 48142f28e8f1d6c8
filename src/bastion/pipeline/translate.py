"""Which translation a request needs, given the client's dialect and the upstream's."""

from __future__ import annotations

from typing import Any

from bastion.dialects import (
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)

from .accumulate import usage_from_anthropic, usage_from_openai


def upstream_body(client: str, upstream: str, body: dict[str, Any], model: str, stream: bool) -> dict[str, Any]:
    """The body to send upstream: translated if needed, pinned to ``model``, usage always requested."""
    if client == upstream:
        out = dict(body)
    elif client == "openai":
        out = chat_request_to_messages(body)
    else:
        out = messages_request_to_chat(body)
    out["model"] = model
    if upstream == "openai" and stream:
        # Always ask for usage, so that no streamed call is logged at zero tokens.
        out["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    return out


def client_response(client: str, upstream: str, data: dict[str, Any]) -> dict[str, Any]:
    """The upstream's (non-streamed) answer in the client's dialect."""
    if client == upstream:
        return data
    if client == "openai":
        return messages_response_to_chat(data)
    return chat_response_to_messages(data)


def response_facts(dialect: str, data: dict[str, Any]) -> tuple[dict[str, int], str | None, str | None, str | None]:
    """(usage, served model, system_fingerprint, finish reason) from a response in ``dialect``."""
    if dialect == "openai":
        choices = data.get("choices") or [{}]
        first = choices[0] if isinstance(choices[0], dict) else {}
        return (
            usage_from_openai(data.get("usage")),
            data.get("model"),
            data.get("system_fingerprint"),
            first.get("finish_reason"),
        )
    return usage_from_anthropic(data.get("usage")), data.get("model"), None, data.get("stop_reason")
