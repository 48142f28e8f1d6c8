"""Anthropic Messages request -> OpenAI Chat Completions request (for Anthropic clients).

See docs/dialects.md for every mapping and what is approximated or dropped.
"""

from __future__ import annotations

from typing import Any

from bastion.errors import UnsupportedParameter

from ._common import (
    SYSTEM_JOINER,
    TOOL_ERROR_PREFIX,
    dumps,
    fail,
    require_bool,
    require_dict,
    require_int,
    require_list,
    require_number,
    require_str,
)

# Assistant blocks we drop silently: they only make sense to Anthropic models.
_IGNORED_ASSISTANT_BLOCKS = {"thinking", "redacted_thinking"}


def messages_request_to_chat(body: dict) -> dict:
    """Translate an Anthropic ``POST /v1/messages`` body into an OpenAI chat completions body."""
    body = require_dict(body, "body")
    out: dict[str, Any] = {}

    if "model" not in body:
        raise fail("is required", "model")
    out["model"] = require_str(body["model"], "model")

    if "max_tokens" not in body:
        raise fail("is required (the maximum number of tokens to generate, e.g. 1024)", "max_tokens")
    out["max_tokens"] = require_int(body["max_tokens"], "max_tokens", minimum=1)

    messages: list[dict[str, Any]] = []
    system = body.get("system")
    if system is not None:
        text = _system_text(system)
        if text:
            messages.append({"role": "system", "content": text})

    raw_messages = require_list(body.get("messages"), "messages")
    if not raw_messages:
        raise fail("must contain at least one message", "messages")
    for i, msg in enumerate(raw_messages):
        messages.extend(_message(msg, f"messages[{i}]"))
    out["messages"] = messages

    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = require_number(body[key], key)
    if body.get("top_k") is not None:
        # Not OpenAI, but vLLM and other OpenAI-compatible servers accept it.
        out["top_k"] = require_int(body["top_k"], "top_k", minimum=0)

    if body.get("stop_sequences") is not None:
        stops = require_list(body["stop_sequences"], "stop_sequences")
        out["stop"] = [require_str(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)]

    if body.get("stream") is not None:
        out["stream"] = require_bool(body["stream"], "stream")
        if out["stream"]:
            # Anthropic clients always get usage at the end of a stream.
            out["stream_options"] = {"include_usage": True}

    metadata = body.get("metadata")
    if metadata is not None:
        metadata = require_dict(metadata, "metadata")
        if metadata.get("user_id") is not None:
            out["user"] = require_str(metadata["user_id"], "metadata.user_id")

    if body.get("tools") is not None:
        tools = require_list(body["tools"], "tools")
        out["tools"] = [_tool(t, f"tools[{i}]") for i, t in enumerate(tools)]

    if body.get("tool_choice") is not None:
        choice, parallel = _tool_choice(body["tool_choice"])
        out["tool_choice"] = choice
        if parallel is False:
            out["parallel_tool_calls"] = False

    output_config = body.get("output_config")
    if output_config is not None:
        fmt = require_dict(output_config, "output_config").get("format")
        if fmt is not None:
            fmt = require_dict(fmt, "output_config.format")
            if fmt.get("type") != "json_schema":
                raise fail("only type 'json_schema' is supported", "output_config.format.type")
            schema = require_dict(fmt.get("schema"), "output_config.format.schema")
            out["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema},
            }
    return out


def _system_text(system: Any) -> str:
    if isinstance(system, str):
        return system
    blocks = require_list(system, "system")
    texts = []
    for i, block in enumerate(blocks):
        block = require_dict(block, f"system[{i}]")
        if block.get("type") != "text":
            raise fail("system blocks must be of type 'text'", f"system[{i}].type")
        texts.append(require_str(block.get("text"), f"system[{i}].text"))
    return SYSTEM_JOINER.join(texts)


def _message(msg: Any, param: str) -> list[dict[str, Any]]:
    msg = require_dict(msg, param)
    role = msg.get("role")
    if role not in ("user", "assistant", "system"):
        raise fail(f"must be 'user' or 'assistant', got {role!r}", f"{param}.role")
    if "content" not in msg:
        raise fail("is required", f"{param}.content")
    content = msg["content"]
    if isinstance(content, str):
        return [{"role": role, "content": content}]
    blocks = require_list(content, f"{param}.content")
    if role == "system":
        return [{"role": "system", "content": _system_text(blocks)}]
    if role == "assistant":
        return [_assistant(blocks, param)]
    return _user(blocks, param)


def _assistant(blocks: list[Any], param: str) -> dict[str, Any]:
    texts: list[str] = []
    tool_calls: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        bp = f"{param}.content[{i}]"
        block = require_dict(block, bp)
        kind = block.get("type")
        if kind == "text":
            texts.append(require_str(block.get("text"), f"{bp}.text"))
        elif kind == "tool_use":
            tool_input = block.get("input", {})
            require_dict(tool_input, f"{bp}.input")
            tool_calls.append(
                {
                    "id": require_str(block.get("id"), f"{bp}.id"),
                    "type": "function",
                    "function": {
                        "name": require_str(block.get("name"), f"{bp}.name"),
                        "arguments": dumps(tool_input),
                    },
                }
            )
        elif kind in _IGNORED_ASSISTANT_BLOCKS:
            continue
        else:
            raise fail(
                f"assistant content blocks must be 'text' or 'tool_use' for this model, got {kind!r}",
                f"{bp}.type",
            )
    out: dict[str, Any] = {"role": "assistant"}
    if tool_calls:
        out["content"] = "".join(texts) if texts else None
        out["tool_calls"] = tool_calls
    else:
        out["content"] = "".join(texts)
    return out


def _user(blocks: list[Any], param: str) -> list[dict[str, Any]]:
    """A user turn: tool results become ``tool`` messages first, then the rest as one user message."""
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    moved_images: list[dict[str, Any]] = []
    for i, block in enumerate(blocks):
        bp = f"{param}.content[{i}]"
        block = require_dict(block, bp)
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(_tool_result(block, bp, moved_images))
        else:
            parts.append(_user_part(block, bp))
    if not blocks:
        raise fail("must not be empty (only a final assistant message may be empty)", f"{param}.content")
    parts = moved_images + parts
    out = list(tool_messages)
    if parts:
        out.append({"role": "user", "content": parts})
    return out


def _user_part(block: dict[str, Any], bp: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": require_str(block.get("text"), f"{bp}.text")}
    if kind == "image":
        return _image(block, bp)
    if kind == "document":
        return _document(block, bp)
    raise fail(
        f"user content blocks must be 'text', 'image', 'document' or 'tool_result', got {kind!r}",
        f"{bp}.type",
    )


def _image(block: dict[str, Any], bp: str) -> dict[str, Any]:
    source = require_dict(block.get("source"), f"{bp}.source")
    kind = source.get("type")
    if kind == "base64":
        media_type = require_str(source.get("media_type"), f"{bp}.source.media_type")
        data = require_str(source.get("data"), f"{bp}.source.data")
        return {"type": "image_url", "image_url": {"url": f"data:{media_type};base64,{data}"}}
    if kind == "url":
        return {"type": "image_url", "image_url": {"url": require_str(source.get("url"), f"{bp}.source.url")}}
    raise fail(f"image sources must be 'base64' or 'url' for this model, got {kind!r}", f"{bp}.source.type")


def _document(block: dict[str, Any], bp: str) -> dict[str, Any]:
    source = require_dict(block.get("source"), f"{bp}.source")
    kind = source.get("type")
    title = block.get("title")
    header = f"[document: {title}]\n" if isinstance(title, str) and title else ""
    if kind == "text":
        return {"type": "text", "text": header + require_str(source.get("data"), f"{bp}.source.data")}
    if kind == "content":
        content = source.get("content")
        if isinstance(content, str):
            return {"type": "text", "text": header + content}
        texts = []
        for j, inner in enumerate(require_list(content, f"{bp}.source.content")):
            inner = require_dict(inner, f"{bp}.source.content[{j}]")
            if inner.get("type") != "text":
                raise UnsupportedParameter(
                    "only text blocks can be sent in a content document to this model",
                    param=f"{bp}.source.content[{j}].type",
                )
            texts.append(require_str(inner.get("text"), f"{bp}.source.content[{j}].text"))
        return {"type": "text", "text": header + "\n".join(texts)}
    if kind == "base64" and source.get("media_type") == "application/pdf":
        data = require_str(source.get("data"), f"{bp}.source.data")
        file: dict[str, Any] = {"file_data": f"data:application/pdf;base64,{data}"}
        file["filename"] = title if isinstance(title, str) and title else "document.pdf"
        return {"type": "file", "file": file}
    raise UnsupportedParameter(
        f"document source {kind!r} cannot be sent to this model; send the document as text "
        "(source type 'text') or as a base64 PDF",
        param=f"{bp}.source.type",
    )


def _tool_result(block: dict[str, Any], bp: str, moved_images: list[dict[str, Any]]) -> dict[str, Any]:
    tool_use_id = require_str(block.get("tool_use_id"), f"{bp}.tool_use_id")
    content = block.get("content", "")
    if content is None:
        content = ""
    result: str | list[dict[str, Any]]
    if isinstance(content, str):
        result = content
    else:
        texts: list[str] = []
        for j, inner in enumerate(require_list(content, f"{bp}.content")):
            ip = f"{bp}.content[{j}]"
            inner = require_dict(inner, ip)
            if inner.get("type") == "text":
                texts.append(require_str(inner.get("text"), f"{ip}.text"))
            elif inner.get("type") == "image":
                # OpenAI tool messages cannot hold images: they go to the user message that follows.
                moved_images.append({"type": "text", "text": f"[image from tool result {tool_use_id}]"})
                moved_images.append(_image(inner, ip))
            elif inner.get("type") == "document":
                texts.append(_document(inner, ip).get("text") or "")
            else:
                raise fail(
                    f"tool_result content must be 'text' or 'image' blocks, got {inner.get('type')!r}", ip
                )
        result = texts[0] if len(texts) == 1 else [{"type": "text", "text": t} for t in texts]
    is_error = block.get("is_error")
    if is_error is not None and require_bool(is_error, f"{bp}.is_error"):
        if isinstance(result, str):
            result = TOOL_ERROR_PREFIX + result
        elif result:
            result = [{"type": "text", "text": TOOL_ERROR_PREFIX + result[0]["text"]}, *result[1:]]
        else:
            result = TOOL_ERROR_PREFIX
    return {"role": "tool", "tool_call_id": tool_use_id, "content": result}


def _tool(tool: Any, param: str) -> dict[str, Any]:
    tool = require_dict(tool, param)
    kind = tool.get("type")
    if kind not in (None, "custom"):
        raise UnsupportedParameter(
            f"server tool {kind!r} is only available from Anthropic models; define it as a custom tool "
            "with name, description and input_schema",
            param=f"{param}.type",
        )
    function: dict[str, Any] = {"name": require_str(tool.get("name"), f"{param}.name")}
    if tool.get("description") is not None:
        function["description"] = require_str(tool["description"], f"{param}.description")
    function["parameters"] = require_dict(tool.get("input_schema"), f"{param}.input_schema")
    if tool.get("strict") is not None:
        function["strict"] = require_bool(tool["strict"], f"{param}.strict")
    return {"type": "function", "function": function}


def _tool_choice(choice: Any) -> tuple[Any, bool | None]:
    choice = require_dict(choice, "tool_choice")
    kind = choice.get("type")
    parallel: bool | None = None
    if choice.get("disable_parallel_tool_use") is not None:
        disable = require_bool(choice["disable_parallel_tool_use"], "tool_choice.disable_parallel_tool_use")
        parallel = not disable
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        name = require_str(choice.get("name"), "tool_choice.name")
        return {"type": "function", "function": {"name": name}}, parallel
    raise fail(f"must be one of 'auto', 'any', 'tool', 'none', got {kind!r}", "tool_choice.type")
