"""OpenAI Chat Completions request -> Anthropic Messages request (for Anthropic upstreams).

See docs/dialects.md for every mapping and what is approximated or dropped.
"""

from __future__ import annotations

from typing import Any

import orjson

from bastion.errors import UnsupportedParameter

from ._common import (
    TOOL_ERROR_PREFIX,
    dumps,
    fail,
    parse_data_url,
    require_bool,
    require_dict,
    require_int,
    require_list,
    require_number,
    require_str,
)

DEFAULT_MAX_TOKENS = 4096

# Accepted and dropped without error: Anthropic has no equivalent and they do not change what is asked.
DROPPED_PARAMETERS = (
    "seed",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "stream_options",
    "store",
    "metadata",
    "service_tier",
    "prediction",
    "reasoning_effort",
    "verbosity",
    "prompt_cache_key",
    "safety_identifier",
)

_JSON_ONLY = (
    "Respond with only a single valid JSON object: no prose, no explanation and no Markdown code fences."
)


def chat_request_to_messages(body: dict) -> dict:
    """Translate an OpenAI ``POST /v1/chat/completions`` body into an Anthropic Messages body."""
    body = require_dict(body, "body")
    _reject_unsupported(body)
    out: dict[str, Any] = {}
    if "model" not in body:
        raise fail("is required", "model")
    out["model"] = require_str(body["model"], "model")

    max_tokens = body.get("max_completion_tokens")
    key = "max_completion_tokens"
    if max_tokens is None:
        max_tokens, key = body.get("max_tokens"), "max_tokens"
    out["max_tokens"] = DEFAULT_MAX_TOKENS if max_tokens is None else require_int(max_tokens, key, minimum=1)

    raw = require_list(body.get("messages"), "messages")
    if not raw:
        raise fail("must contain at least one message", "messages")
    system: list[str] = []
    turns: list[tuple[str, list[dict[str, Any]]]] = []
    for i, msg in enumerate(raw):
        param = f"messages[{i}]"
        msg = require_dict(msg, param)
        role = msg.get("role")
        if role in ("system", "developer"):
            text = _text_only(msg.get("content"), f"{param}.content")
            if text:
                system.append(text)
        elif role == "user":
            _add_turn(turns, "user", _user_blocks(msg.get("content"), f"{param}.content"))
        elif role == "assistant":
            _add_turn(turns, "assistant", _assistant_blocks(msg, param))
        elif role == "tool":
            _add_turn(turns, "user", [_tool_result(msg, param)])
        elif role == "function":
            raise UnsupportedParameter(
                "role 'function' (deprecated) is not supported; use tool_calls and role 'tool'",
                param=f"{param}.role",
            )
        else:
            raise fail(
                f"must be 'system', 'developer', 'user', 'assistant' or 'tool', got {role!r}", f"{param}.role"
            )
    if not turns:
        raise fail("must contain at least one non-empty user or assistant message", "messages")
    _trim_prefill(turns)
    out["messages"] = [{"role": role, "content": _order(role, blocks)} for role, blocks in turns]

    instruction = _response_format_instruction(body.get("response_format"))
    if instruction:
        system.append(instruction)
    if len(system) == 1:
        out["system"] = system[0]
    elif system:
        out["system"] = [{"type": "text", "text": t} for t in system]

    if body.get("temperature") is not None:
        # OpenAI allows 0..2, Anthropic 0..1: clamp (documented approximation).
        out["temperature"] = min(float(require_number(body["temperature"], "temperature")), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = require_number(body["top_p"], "top_p")
    if body.get("top_k") is not None:
        out["top_k"] = require_int(body["top_k"], "top_k", minimum=0)

    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop is not None:
        out["stop_sequences"] = [
            require_str(s, f"stop[{i}]") for i, s in enumerate(require_list(stop, "stop"))
        ]

    if body.get("stream") is not None:
        out["stream"] = require_bool(body["stream"], "stream")
    if body.get("user") is not None:
        out["metadata"] = {"user_id": require_str(body["user"], "user")}

    if body.get("tools") is not None:
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(require_list(body["tools"], "tools"))]
    choice: dict[str, Any] | None = None
    if body.get("tool_choice") is not None:
        choice = _tool_choice(body["tool_choice"])
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not require_bool(parallel, "parallel_tool_calls"):
        if choice is None and out.get("tools"):
            choice = {"type": "auto"}
        if choice is not None and choice["type"] != "none":
            choice["disable_parallel_tool_use"] = True
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _reject_unsupported(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and require_int(n, "n", minimum=1) > 1:
        raise UnsupportedParameter(
            "n > 1 is not available from Anthropic models; send n separate requests", param="n"
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        param = "logprobs" if body.get("logprobs") else "top_logprobs"
        raise UnsupportedParameter("logprobs is not available from Anthropic models", param=param)
    if body.get("functions") is not None or body.get("function_call") is not None:
        param = "functions" if body.get("functions") is not None else "function_call"
        raise UnsupportedParameter(
            f"{param} (deprecated) is not supported; use tools and tool_choice", param=param
        )
    modalities = body.get("modalities")
    if modalities is not None:
        require_list(modalities, "modalities")
    if body.get("audio") is not None or "audio" in (modalities or []):
        raise UnsupportedParameter("audio output is not available from Anthropic models", param="modalities")
    if body.get("web_search_options") is not None:
        raise UnsupportedParameter(
            "web_search_options is not available from Anthropic models", param="web_search_options"
        )


def _add_turn(turns: list[tuple[str, list[dict[str, Any]]]], role: str, blocks: list[dict[str, Any]]) -> None:
    """Append blocks to the conversation, merging consecutive same-role messages (Anthropic alternates)."""
    if not blocks:
        return
    if turns and turns[-1][0] == role:
        turns[-1][1].extend(blocks)
    else:
        turns.append((role, blocks))


def _order(role: str, blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Anthropic wants tool_result blocks first in a user turn."""
    if role != "user":
        return blocks
    return [b for b in blocks if b["type"] == "tool_result"] + [
        b for b in blocks if b["type"] != "tool_result"
    ]


def _trim_prefill(turns: list[tuple[str, list[dict[str, Any]]]]) -> None:
    """Anthropic rejects a final assistant (prefill) text ending in whitespace."""
    role, blocks = turns[-1]
    if role == "assistant" and blocks and blocks[-1]["type"] == "text":
        blocks[-1]["text"] = blocks[-1]["text"].rstrip()
        if not blocks[-1]["text"]:
            blocks.pop()
            if not blocks:
                turns.pop()
                if not turns:
                    raise fail("must contain at least one non-empty user or assistant message", "messages")


def _text_only(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for i, part in enumerate(require_list(content, param)):
        part = require_dict(part, f"{param}[{i}]")
        if part.get("type") != "text":
            raise fail(f"only 'text' parts are allowed here, got {part.get('type')!r}", f"{param}[{i}].type")
        texts.append(require_str(part.get("text"), f"{param}[{i}].text"))
    return "\n".join(texts)


def _user_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        raise fail("is required", param)
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for i, part in enumerate(require_list(content, param)):
        pp = f"{param}[{i}]"
        part = require_dict(part, pp)
        kind = part.get("type")
        if kind == "text":
            text = require_str(part.get("text"), f"{pp}.text")
            if text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part, pp))
        elif kind == "file":
            blocks.append(_file(part, pp))
        elif kind == "input_audio":
            raise UnsupportedParameter(
                "audio input is not available from Anthropic models", param=f"{pp}.type"
            )
        else:
            raise fail(f"must be 'text', 'image_url' or 'file', got {kind!r}", f"{pp}.type")
    return blocks


def _image(part: dict[str, Any], pp: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image if isinstance(image, str) else require_dict(image, f"{pp}.image_url").get("url")
    url = require_str(url, f"{pp}.image_url.url")
    if url.startswith("data:"):
        media_type, data = parse_data_url(url, f"{pp}.image_url.url")
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise fail("must be an http(s) URL or a data: URL", f"{pp}.image_url.url")


def _file(part: dict[str, Any], pp: str) -> dict[str, Any]:
    file = require_dict(part.get("file"), f"{pp}.file")
    data_url = file.get("file_data")
    if data_url is None:
        raise UnsupportedParameter(
            "uploaded file ids cannot be sent to Anthropic models; send the file inline as file_data",
            param=f"{pp}.file.file_id",
        )
    media_type, data = parse_data_url(require_str(data_url, f"{pp}.file.file_data"), f"{pp}.file.file_data")
    if media_type != "application/pdf":
        raise UnsupportedParameter(
            f"only PDF files can be sent to Anthropic models, got {media_type}", param=f"{pp}.file.file_data"
        )
    block: dict[str, Any] = {
        "type": "document",
        "source": {"type": "base64", "media_type": media_type, "data": data},
    }
    if isinstance(file.get("filename"), str):
        block["title"] = file["filename"]
    return block


def _assistant_blocks(msg: dict[str, Any], param: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    content = msg.get("content")
    if isinstance(content, str):
        if content:
            blocks.append({"type": "text", "text": content})
    elif content is not None:
        for i, part in enumerate(require_list(content, f"{param}.content")):
            pp = f"{param}.content[{i}]"
            part = require_dict(part, pp)
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise fail(f"assistant content parts must be 'text' or 'refusal', got {kind!r}", f"{pp}.type")
            text = require_str(part.get(kind), f"{pp}.{kind}")
            if text:
                blocks.append({"type": "text", "text": text})
    if isinstance(msg.get("refusal"), str) and msg["refusal"] and not blocks:
        blocks.append({"type": "text", "text": msg["refusal"]})
    calls = msg.get("tool_calls")
    if calls is not None:
        for i, call in enumerate(require_list(calls, f"{param}.tool_calls")):
            cp = f"{param}.tool_calls[{i}]"
            call = require_dict(call, cp)
            if call.get("type", "function") != "function":
                raise UnsupportedParameter(
                    "only function tool calls can be sent to Anthropic models", param=f"{cp}.type"
                )
            function = require_dict(call.get("function"), f"{cp}.function")
            blocks.append(
                {
                    "type": "tool_use",
                    "id": require_str(call.get("id"), f"{cp}.id"),
                    "name": require_str(function.get("name"), f"{cp}.function.name"),
                    "input": _arguments(function.get("arguments"), f"{cp}.function.arguments"),
                }
            )
    return blocks


def _arguments(arguments: Any, param: str) -> dict[str, Any]:
    text = require_str(arguments, param)
    if not text.strip():
        return {}
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise fail(f"must be a JSON object encoded as a string ({exc})", param) from None
    if not isinstance(value, dict):
        raise fail('must be a JSON object encoded as a string, e.g. \'{"city": "Paris"}\'', param)
    return value


def _tool_result(msg: dict[str, Any], param: str) -> dict[str, Any]:
    tool_call_id = require_str(msg.get("tool_call_id"), f"{param}.tool_call_id")
    content = msg.get("content")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_call_id}
    if content is None:
        content = ""
    if isinstance(content, str):
        if content.startswith(TOOL_ERROR_PREFIX):
            content = content[len(TOOL_ERROR_PREFIX) :]
            block["is_error"] = True
        block["content"] = content
        return block
    texts = []
    for i, part in enumerate(require_list(content, f"{param}.content")):
        part = require_dict(part, f"{param}.content[{i}]")
        if part.get("type") != "text":
            raise fail(
                f"tool message parts must be 'text', got {part.get('type')!r}", f"{param}.content[{i}].type"
            )
        texts.append(require_str(part.get("text"), f"{param}.content[{i}].text"))
    if texts and texts[0].startswith(TOOL_ERROR_PREFIX):
        texts[0] = texts[0][len(TOOL_ERROR_PREFIX) :]
        block["is_error"] = True
    # Anthropic rejects empty text blocks.
    block["content"] = [{"type": "text", "text": t} for t in texts if t]
    return block


def _tool(tool: Any, param: str) -> dict[str, Any]:
    tool = require_dict(tool, param)
    if tool.get("type", "function") != "function":
        raise UnsupportedParameter(
            f"tool type {tool.get('type')!r} cannot be sent to Anthropic models; use function tools",
            param=f"{param}.type",
        )
    function = require_dict(tool.get("function"), f"{param}.function")
    out: dict[str, Any] = {"name": require_str(function.get("name"), f"{param}.function.name")}
    if function.get("description") is not None:
        out["description"] = require_str(function["description"], f"{param}.function.description")
    params = function.get("parameters")
    out["input_schema"] = (
        require_dict(params, f"{param}.function.parameters")
        if params is not None
        else {"type": "object", "properties": {}}
    )
    if function.get("strict") is not None:
        out["strict"] = require_bool(function["strict"], f"{param}.function.strict")
    return out


def _tool_choice(choice: Any) -> dict[str, Any]:
    if choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = require_dict(choice.get("function"), "tool_choice.function")
        return {"type": "tool", "name": require_str(function.get("name"), "tool_choice.function.name")}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        raise UnsupportedParameter(
            "tool_choice 'allowed_tools' is not available from Anthropic models", param="tool_choice"
        )
    raise fail(
        'must be \'auto\', \'required\', \'none\' or {"type": "function", "function": {"name": ...}}',
        "tool_choice",
    )


def _response_format_instruction(fmt: Any) -> str | None:
    """Anthropic has no response_format: ask for JSON in the system prompt (documented approximation)."""
    if fmt is None:
        return None
    fmt = require_dict(fmt, "response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return _JSON_ONLY
    if kind == "json_schema":
        spec = require_dict(fmt.get("json_schema"), "response_format.json_schema")
        schema = spec.get("schema")
        if schema is None:
            return _JSON_ONLY
        schema = require_dict(schema, "response_format.json_schema.schema")
        return f"{_JSON_ONLY} The JSON must match this JSON Schema:\n{dumps(schema)}"
    raise fail(f"must be 'text', 'json_object' or 'json_schema', got {kind!r}", "response_format.type")
