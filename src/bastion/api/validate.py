"""Checks of client request bodies, with messages that say what to fix.

Only what Bastion itself needs, plus the mistakes upstreams would reject anyway: a bad request gets a 400
here, before it costs an upstream call.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import InvalidRequest
from bastion.jsontypes import json_type

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant"})


def _fail(message: str, param: str) -> InvalidRequest:
    return InvalidRequest(f"{param}: {message}", param=param)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest(f"the request body must be a JSON object, got {json_type(body)}")
    return body


def _model(body: dict[str, Any]) -> None:
    m = body.get("model")
    if m is None:
        raise _fail("required: name the model alias to call (see GET /v1/models)", "model")
    if not isinstance(m, str) or not m:
        raise _fail(f"must be a non-empty string, got {json_type(m)}", "model")


def _opt(body: dict[str, Any], key: str, check: Any, want: str) -> None:
    if key in body and body[key] is not None and not check(body[key]):
        raise _fail(f"must be {want}, got {json_type(body[key])} {body[key]!r:.60}", key)


def _range(body: dict[str, Any], key: str, lo: float, hi: float) -> None:
    v = body.get(key)
    if v is not None:
        if not _is_num(v):
            raise _fail(f"must be a number between {lo} and {hi}, got {json_type(v)}", key)
        if not lo <= v <= hi:
            raise _fail(f"must be between {lo} and {hi}, got {v}", key)


def _positive_int(body: dict[str, Any], key: str) -> None:
    v = body.get(key)
    if v is not None and (not _is_int(v) or v < 1):
        raise _fail(f"must be a positive integer, got {v!r:.40}", key)


def _content_parts(content: Any, param: str, *, allow_none: bool) -> None:
    if content is None:
        if not allow_none:
            raise _fail("is required", param)
        return
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise _fail(f"must be a string or an array of content parts, got {json_type(content)}", param)
    for j, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            raise _fail("each content part must be an object with a string 'type'", f"{param}[{j}]")
        _untrusted(part, f"{param}[{j}]")


def _untrusted(item: dict[str, Any], param: str) -> None:
    """Bastion's marker for untrusted content (docs/guards.md): a boolean, or a short source label."""
    v = item.get("untrusted")
    if v is not None and not isinstance(v, bool | str):
        raise _fail(f"must be true, false or a short source label such as \"web\", got {json_type(v)}",
                    f"{param}.untrusted")


def _tools_openai(tools: Any) -> None:
    if not isinstance(tools, list):
        raise _fail(f"must be an array of tools, got {json_type(tools)}", "tools")
    for i, t in enumerate(tools):
        p = f"tools[{i}]"
        if not isinstance(t, dict):
            raise _fail("must be an object like {'type': 'function', 'function': {'name': ...}}", p)
        if not isinstance(t.get("type", "function"), str):
            raise _fail(f"must be a string such as 'function', got {json_type(t['type'])}", f"{p}.type")
        if t.get("type", "function") == "function":
            fn = t.get("function")
            if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
                raise _fail("needs function.name (a non-empty string)", f"{p}.function.name")
            params = fn.get("parameters")
            if params is not None and not isinstance(params, dict):
                raise _fail("must be a JSON Schema object", f"{p}.function.parameters")


def _tool_choice_openai(choice: Any) -> None:
    if isinstance(choice, str) and choice in ("auto", "none", "required"):
        return
    if not isinstance(choice, dict) or not isinstance(choice.get("type"), str):
        raise _fail("must be 'auto', 'none', 'required' or an object like {'type': 'function', 'function': "
                    f"{{'name': ...}}}}, got {json_type(choice)} {choice!r:.40}", "tool_choice")
    if choice["type"] == "function":
        fn = choice.get("function")
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise _fail("needs the name of the function to call (a non-empty string)",
                        "tool_choice.function.name")


def _tool_choice_anthropic(choice: Any) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _fail("must be an object with type 'auto', 'any', 'tool' or 'none', e.g. {'type': 'auto'}, got "
                    f"{json_type(choice)} {choice!r:.40}", "tool_choice")
    if choice["type"] == "tool" and (not isinstance(choice.get("name"), str) or not choice["name"]):
        raise _fail("needs the name of the tool to call (a non-empty string)", "tool_choice.name")
    _opt(choice, "disable_parallel_tool_use", lambda v: isinstance(v, bool), "a boolean")


def validate_chat(body: dict[str, Any]) -> None:
    """OpenAI Chat Completions request."""
    _model(body)
    messages = body.get("messages")
    if messages is None:
        raise _fail("required: an array of {role, content} messages", "messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(f"must be a non-empty array of messages, got {json_type(messages)}", "messages")
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _fail(f"must be an object with role and content, got {json_type(msg)}", p)
        role = msg.get("role")
        if not isinstance(role, str) or role not in OPENAI_ROLES:
            raise _fail(f"must be one of {', '.join(sorted(OPENAI_ROLES))}, got {role!r:.40}", f"{p}.role")
        allow_none = role == "assistant"
        _untrusted(msg, p)
        _content_parts(msg.get("content"), f"{p}.content", allow_none=allow_none)
        if role == "tool" and not isinstance(msg.get("tool_call_id"), str):
            raise _fail("a tool message needs tool_call_id (the id of the call it answers)", f"{p}.tool_call_id")
        calls = msg.get("tool_calls")
        if calls is not None and not isinstance(calls, list):
            raise _fail("must be an array", f"{p}.tool_calls")
    _opt(body, "stream", lambda v: isinstance(v, bool), "a boolean")
    _range(body, "temperature", 0, 2)
    _range(body, "top_p", 0, 1)
    _range(body, "presence_penalty", -2, 2)
    _range(body, "frequency_penalty", -2, 2)
    _positive_int(body, "max_tokens")
    _positive_int(body, "max_completion_tokens")
    n = body.get("n")
    if n is not None and (not _is_int(n) or not 1 <= n <= 128):
        raise _fail(f"must be an integer from 1 to 128, got {n!r:.40}", "n")
    _opt(body, "seed", _is_int, "an integer")
    _opt(body, "logprobs", lambda v: isinstance(v, bool), "a boolean")
    tlp = body.get("top_logprobs")
    if tlp is not None and (not _is_int(tlp) or not 0 <= tlp <= 20):
        raise _fail(f"must be an integer from 0 to 20, got {tlp!r:.40}", "top_logprobs")
    _opt(body, "user", lambda v: isinstance(v, str), "a string")
    stop = body.get("stop")
    if stop is not None and not (
        isinstance(stop, str) or (isinstance(stop, list) and all(isinstance(s, str) for s in stop))
    ):
        raise _fail("must be a string or an array of strings", "stop")
    if body.get("tools") is not None:
        _tools_openai(body["tools"])
    if body.get("tool_choice") is not None:
        _tool_choice_openai(body["tool_choice"])
    modalities = body.get("modalities")
    if modalities is not None and not (isinstance(modalities, list)
                                       and all(isinstance(m, str) for m in modalities)):
        raise _fail("must be an array of strings such as ['text']", "modalities")
    rf = body.get("response_format")
    if rf is not None:
        if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
            raise _fail("must be an object with type 'text', 'json_object' or 'json_schema'", "response_format")
        if rf["type"] == "json_schema":
            js = rf.get("json_schema")
            if not isinstance(js, dict) or not isinstance(js.get("name"), str):
                raise _fail("needs json_schema.name and json_schema.schema", "response_format.json_schema")
    so = body.get("stream_options")
    if so is not None:
        if not isinstance(so, dict):
            raise _fail("must be an object like {'include_usage': true}", "stream_options")
        if not body.get("stream"):
            raise _fail("is only allowed when stream is true", "stream_options")


def validate_messages(body: dict[str, Any]) -> None:
    """Anthropic Messages request."""
    _model(body)
    mt = body.get("max_tokens")
    if mt is None:
        raise _fail("required: the maximum number of tokens to generate (a positive integer)", "max_tokens")
    _positive_int(body, "max_tokens")
    messages = body.get("messages")
    if messages is None:
        raise _fail("required: an array of {role, content} messages", "messages")
    if not isinstance(messages, list) or not messages:
        raise _fail(f"must be a non-empty array of messages, got {json_type(messages)}", "messages")
    for i, msg in enumerate(messages):
        p = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise _fail(f"must be an object with role and content, got {json_type(msg)}", p)
        role = msg.get("role")
        if not isinstance(role, str) or role not in ANTHROPIC_ROLES:
            raise _fail(f"must be 'user' or 'assistant', got {msg.get('role')!r:.40}", f"{p}.role")
        _untrusted(msg, p)
        _content_parts(msg.get("content"), f"{p}.content", allow_none=False)
    system = body.get("system")
    if system is not None and not isinstance(system, str | list):
        raise _fail("must be a string or an array of text blocks", "system")
    _opt(body, "stream", lambda v: isinstance(v, bool), "a boolean")
    _range(body, "temperature", 0, 1)
    _range(body, "top_p", 0, 1)
    _positive_int(body, "top_k")
    ss = body.get("stop_sequences")
    if ss is not None and not (isinstance(ss, list) and all(isinstance(s, str) for s in ss)):
        raise _fail("must be an array of strings", "stop_sequences")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _fail("must be an array of tools", "tools")
        for i, t in enumerate(tools):
            if not isinstance(t, dict) or not isinstance(t.get("name"), str):
                raise _fail("each tool needs a name (and an input_schema)", f"tools[{i}].name")
    if body.get("tool_choice") is not None:
        _tool_choice_anthropic(body["tool_choice"])


def validate_embeddings(body: dict[str, Any]) -> None:
    _model(body)
    inp = body.get("input")
    if inp is None:
        raise _fail("required: a string or an array of strings to embed", "input")
    ok = isinstance(inp, str) or (
        isinstance(inp, list)
        and inp
        and (
            all(isinstance(x, str) for x in inp)
            or all(_is_int(x) for x in inp)
            or all(isinstance(x, list) and all(_is_int(t) for t in x) for x in inp)
        )
    )
    if not ok:
        raise _fail("must be a string, a non-empty array of strings, or token arrays", "input")
    ef = body.get("encoding_format")
    if ef is not None and ef not in ("float", "base64"):
        raise _fail(f"must be 'float' or 'base64', got {ef!r:.40}", "encoding_format")
    _positive_int(body, "dimensions")
