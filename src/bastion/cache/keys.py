"""The cache key: a canonical hash of everything that determines an answer, and the tenant.

Requests are first brought to one form (the OpenAI chat body; Anthropic requests are translated), then
normalised so that requests that must get the same answer get the same key: JSON key order and whitespace
do not matter (the parsed structure is hashed with sorted keys), a lone text part equals a plain string,
a string ``stop`` equals a one-element list, ``max_completion_tokens`` equals ``max_tokens``, and defaults
are made explicit (``temperature`` 1, ``top_p`` 1, ``n`` 1, penalties 0). Fields that cannot change the
answer (``stream``, ``stream_options``, ``user``, ``metadata``, ``service_tier``…) are left out.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

from bastion.dialects import messages_request_to_chat

# Parameters that change the answer, with the default that makes "absent" and "explicit default" equal.
ANSWER_PARAMS: dict[str, Any] = {
    "temperature": 1.0, "top_p": 1.0, "n": 1, "presence_penalty": 0.0, "frequency_penalty": 0.0,
    "max_tokens": None, "stop": None, "seed": None, "logit_bias": None, "logprobs": False, "top_logprobs": None,
    "response_format": None, "tools": None, "tool_choice": None, "parallel_tool_calls": None,
    "reasoning_effort": None, "top_k": None, "modalities": None, "prediction": None,
}


@dataclass(frozen=True, slots=True)
class CacheKey:
    key: str  # the exact-cache key (hex sha256), tenant included
    context: str  # hash of everything but the last user turn: the semantic partition
    last_user: str | None  # the last user turn's text (what the semantic cache embeds)


def _content(c: Any) -> Any:
    if isinstance(c, list):
        parts = [_content_part(p) for p in c]
        if len(parts) == 1 and isinstance(parts[0], dict) and parts[0].get("type") == "text":
            return parts[0].get("text")
        return parts
    return c


def _content_part(p: Any) -> Any:
    if isinstance(p, dict) and p.get("type") == "text":
        return {"type": "text", "text": p.get("text")}  # drop cache_control and the like
    return p


def _message(m: Any) -> Any:
    if not isinstance(m, dict):
        return m
    out = {k: v for k, v in m.items() if v is not None and k not in ("cache_control",)}
    if "content" in out:
        out["content"] = _content(out["content"])
    return out


def _number(v: Any) -> Any:
    return float(v) if isinstance(v, int) and not isinstance(v, bool) else v


def canonical_request(body: dict[str, Any], dialect: str) -> dict[str, Any]:
    chat = messages_request_to_chat(body) if dialect == "anthropic" else body
    params: dict[str, Any] = {}
    for name, default in ANSWER_PARAMS.items():
        v = chat.get(name, default)
        if name == "max_tokens":
            v = chat.get("max_completion_tokens", chat.get("max_tokens"))
        elif name == "stop" and isinstance(v, str):
            v = [v]
        elif name in ("temperature", "top_p", "presence_penalty", "frequency_penalty"):
            v = _number(v)
        params[name] = v
    return {"messages": [_message(m) for m in chat.get("messages") or []], "params": params}


def _digest(obj: Any) -> str:
    return hashlib.sha256(orjson.dumps(obj, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)).hexdigest()


def cache_key(*, tenant: str, alias: str, versions: tuple[str, ...], prompt_version: str | None,
              body: dict[str, Any], dialect: str, kind: str = "chat") -> CacheKey:
    """``versions``: the pinned upstream model ids of the alias's deployments (a change is a new key)."""
    if kind == "embedding":
        canon: dict[str, Any] = {"input": body.get("input"), "dimensions": body.get("dimensions"),
                                 "encoding_format": body.get("encoding_format") or "float"}
        messages: list[Any] = []
    else:
        canon = canonical_request(body, dialect)
        messages = canon["messages"]
    scope = {"tenant": tenant, "alias": alias, "versions": list(versions), "prompt_version": prompt_version,
             "kind": kind}
    key = _digest({"scope": scope, "request": canon})
    last_user = None
    context_messages = messages
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "user" and isinstance(
            messages[-1].get("content"), str):
        last_user = messages[-1]["content"]
        context_messages = messages[:-1]
    context = _digest({"scope": scope, "context": context_messages, "params": canon.get("params")})
    return CacheKey(key, context, last_user)
