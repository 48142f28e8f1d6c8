"""Property tests: random requests and responses survive a round trip through the other dialect."""

from __future__ import annotations

import anthropic.types
import openai.types.chat
import orjson
from anthropic.types import MessageParam
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionMessageParam
from pydantic import TypeAdapter

from bastion.dialects import (
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANTHROPIC_MESSAGES = TypeAdapter(list[MessageParam])
CHAT_MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])

# --- strategies -------------------------------------------------------------------------------------

text = st.text(min_size=1, max_size=12).filter(lambda s: s.strip() == s and bool(s))
ident = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
json_scalar = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=8)
json_value = st.recursive(
    json_scalar | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=6,
)
json_object = st.dictionaries(st.text(max_size=6), json_value, max_size=4)
b64 = st.from_regex(r"[A-Za-z0-9+/]{4,12}={0,2}", fullmatch=True)
media = st.sampled_from(["image/png", "image/jpeg", "image/gif", "image/webp"])
https_url = st.builds(lambda p: f"https://img.test/{p}.png", ident)


@st.composite
def anthropic_image(draw):
    if draw(st.booleans()):
        return {"type": "image", "source": {"type": "base64", "media_type": draw(media), "data": draw(b64)}}
    return {"type": "image", "source": {"type": "url", "url": draw(https_url)}}


anthropic_text_block = st.builds(lambda t: {"type": "text", "text": t}, text)
user_block = anthropic_text_block | anthropic_image()


@st.composite
def tool_result(draw, tool_use_id):
    block = {"type": "tool_result", "tool_use_id": tool_use_id}
    kind = draw(st.sampled_from(["str", "blocks", "absent"]))
    if kind == "str":
        block["content"] = draw(st.text(max_size=10))
    elif kind == "blocks":
        block["content"] = draw(st.lists(anthropic_text_block, max_size=3))
    if draw(st.booleans()):
        block["is_error"] = draw(st.booleans())
    return block


@st.composite
def anthropic_conversation(draw):
    messages = []
    pending_tools: list[str] = []
    counter = 0
    for turn in range(draw(st.integers(1, 6))):
        if turn % 2 == 0:  # user
            blocks = [draw(tool_result(tid)) for tid in pending_tools]
            extra = draw(st.lists(user_block, min_size=0 if blocks else 1, max_size=3))
            if not blocks and len(extra) == 1 and extra[0]["type"] == "text" and draw(st.booleans()):
                messages.append({"role": "user", "content": extra[0]["text"]})
            else:
                messages.append({"role": "user", "content": blocks + extra})
            pending_tools = []
        else:
            blocks = draw(st.lists(anthropic_text_block, max_size=2))
            for _ in range(draw(st.integers(0 if blocks else 1, 2))):
                counter += 1
                tid = f"toolu_{counter}"
                blocks.append(
                    {"type": "tool_use", "id": tid, "name": draw(ident), "input": draw(json_object)}
                )
                pending_tools.append(tid)
            messages.append({"role": "assistant", "content": blocks})
    return messages


@st.composite
def anthropic_request(draw):
    body = {
        "model": draw(ident),
        "max_tokens": draw(st.integers(1, 10_000)),
        "messages": draw(anthropic_conversation()),
    }
    system = draw(st.none() | text | st.lists(anthropic_text_block, min_size=1, max_size=3))
    if system is not None:
        body["system"] = system
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["top_p"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["top_k"] = draw(st.integers(0, 100))
    if draw(st.booleans()):
        body["stop_sequences"] = draw(st.lists(text, max_size=3))
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    if draw(st.booleans()):
        body["metadata"] = {"user_id": draw(ident)}
    if draw(st.booleans()):
        body["tools"] = draw(
            st.lists(
                st.builds(
                    lambda n, d, s: {"name": n, "input_schema": s} | ({"description": d} if d else {}),
                    ident,
                    st.none() | text,
                    st.just({"type": "object", "properties": {"a": {"type": "string"}}}),
                ),
                min_size=1,
                max_size=3,
            )
        )
    if draw(st.booleans()):
        choice = draw(
            st.sampled_from([{"type": "auto"}, {"type": "any"}, {"type": "none"}])
            | st.builds(lambda n: {"type": "tool", "name": n}, ident)
        )
        if draw(st.booleans()):
            choice["disable_parallel_tool_use"] = draw(st.booleans())
        body["tool_choice"] = choice
    return body


@st.composite
def chat_request(draw):
    messages = []
    for _ in range(draw(st.integers(0, 2))):
        content = draw(
            text | st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), min_size=1, max_size=2)
        )
        messages.append({"role": draw(st.sampled_from(["system", "developer"])), "content": content})
    counter = 0
    for turn in range(draw(st.integers(1, 6))):
        if turn % 2 == 0:
            parts = draw(
                st.lists(
                    st.builds(lambda t: {"type": "text", "text": t}, text)
                    | st.builds(
                        lambda m, d: {"type": "image_url", "image_url": {"url": f"data:{m};base64,{d}"}},
                        media,
                        b64,
                    )
                    | st.builds(lambda u: {"type": "image_url", "image_url": {"url": u}}, https_url),
                    min_size=1,
                    max_size=3,
                )
            )
            if len(parts) == 1 and parts[0]["type"] == "text" and draw(st.booleans()):
                messages.append({"role": "user", "content": parts[0]["text"]})
            else:
                messages.append({"role": "user", "content": parts})
        else:
            msg: dict = {"role": "assistant", "content": draw(st.none() | text)}
            calls = []
            for _ in range(draw(st.integers(0 if msg["content"] else 1, 2))):
                counter += 1
                calls.append(
                    {
                        "id": f"call_{counter}",
                        "type": "function",
                        "function": {
                            "name": draw(ident),
                            "arguments": orjson.dumps(draw(json_object)).decode(),
                        },
                    }
                )
            if calls:
                msg["tool_calls"] = calls
            messages.append(msg)
            for call in calls:
                content = draw(
                    st.text(max_size=10)
                    | st.lists(st.builds(lambda t: {"type": "text", "text": t}, text), max_size=2)
                )
                messages.append({"role": "tool", "tool_call_id": call["id"], "content": content})
    body = {"model": draw(ident), "messages": messages}
    body[draw(st.sampled_from(["max_tokens", "max_completion_tokens"]))] = draw(st.integers(1, 9999))
    if draw(st.booleans()):
        body["temperature"] = draw(st.floats(0, 1))
    if draw(st.booleans()):
        body["stop"] = draw(text | st.lists(text, max_size=3))
    if draw(st.booleans()):
        body["user"] = draw(ident)
    if draw(st.booleans()):
        body["stream"] = draw(st.booleans())
    for dropped in ("seed", "frequency_penalty", "presence_penalty"):
        if draw(st.booleans()):
            body[dropped] = 1
    if draw(st.booleans()):
        body["tools"] = [
            {
                "type": "function",
                "function": {"name": draw(ident), "parameters": {"type": "object", "properties": {}}},
            }
        ]
    if draw(st.booleans()):
        body["tool_choice"] = draw(
            st.sampled_from(["auto", "required", "none"])
            | st.builds(lambda n: {"type": "function", "function": {"name": n}}, ident)
        )
    if draw(st.booleans()):
        body["parallel_tool_calls"] = draw(st.booleans())
    return body


# --- normalisation ----------------------------------------------------------------------------------


def norm_anthropic(body: dict) -> dict:
    out = {
        k: body[k]
        for k in ("model", "max_tokens", "temperature", "top_p", "top_k", "stream", "tools")
        if k in body
    }
    system = body.get("system")
    if isinstance(system, list):
        system = "\n\n".join(b["text"] for b in system)
    if system:
        out["system"] = system
    if body.get("stop_sequences") is not None:
        out["stop_sequences"] = body["stop_sequences"]
    if body.get("metadata", {}).get("user_id") is not None:
        out["user"] = body["metadata"]["user_id"]
    choice = body.get("tool_choice")
    if choice is not None:
        choice = dict(choice)
        if choice.get("disable_parallel_tool_use") is not True or choice["type"] == "none":
            choice.pop("disable_parallel_tool_use", None)
        out["tool_choice"] = choice
    turns: list[dict] = []
    for msg in body["messages"]:
        content = msg["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if turns and turns[-1]["role"] == msg["role"]:
            turns[-1]["blocks"].extend(blocks)
        else:
            turns.append({"role": msg["role"], "blocks": list(blocks)})
    out["messages"] = [norm_turn(t["role"], t["blocks"]) for t in turns]
    return out


def norm_turn(role: str, blocks: list[dict]) -> dict:
    if role == "assistant":
        joined = "".join(b["text"] for b in blocks if b["type"] == "text")
        tools = [b for b in blocks if b["type"] == "tool_use"]
        return {"role": role, "text": joined, "tools": tools}
    results = []
    for b in blocks:
        if b["type"] != "tool_result":
            continue
        content = b.get("content", "")
        texts = ([content] if content else []) if isinstance(content, str) else [c["text"] for c in content]
        results.append((b["tool_use_id"], texts, bool(b.get("is_error"))))
    return {"role": role, "results": results, "rest": [b for b in blocks if b["type"] != "tool_result"]}


def norm_chat(body: dict) -> dict:
    out = {k: body[k] for k in ("model", "temperature", "user", "stream") if k in body}
    out["max_tokens"] = body.get("max_completion_tokens", body.get("max_tokens"))
    if "stop" in body:
        out["stop"] = [body["stop"]] if isinstance(body["stop"], str) else body["stop"]
    if body.get("tools"):
        out["tools"] = body["tools"]
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    if parallel is False and choice is None and body.get("tools"):
        choice = "auto"
    if choice is not None:
        out["tool_choice"] = choice
    if parallel is False and choice not in (None, "none"):
        out["parallel_tool_calls"] = False
    system = []
    messages: list[dict] = []
    for msg in body["messages"]:
        role, content = msg["role"], msg.get("content")
        if role in ("system", "developer"):
            system.append(content if isinstance(content, str) else "\n".join(p["text"] for p in content))
        elif role == "user":
            parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
            if messages and messages[-1]["role"] == "user":
                messages[-1]["content"].extend(parts)
            else:
                messages.append({"role": "user", "content": list(parts)})
        elif role == "assistant":
            calls = [
                (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"] or "{}"))
                for c in msg.get("tool_calls") or []
            ]
            messages.append({"role": "assistant", "content": content or None, "calls": calls})
        elif role == "tool":
            texts = (
                ([content] if content else []) if isinstance(content, str) else [p["text"] for p in content]
            )
            messages.append({"role": "tool", "id": msg["tool_call_id"], "texts": [t for t in texts if t]})
    if system:
        out["system"] = "\n\n".join(system)
        messages.insert(0, {"role": "system", "content": out.pop("system")})
    out["messages"] = messages
    return out


# --- properties -------------------------------------------------------------------------------------


@SETTINGS
@given(anthropic_request())
def test_anthropic_request_round_trip(body):
    as_chat = messages_request_to_chat(body)
    CHAT_MESSAGES.validate_python(as_chat["messages"])
    back = chat_request_to_messages(as_chat)
    ANTHROPIC_MESSAGES.validate_python(back["messages"])
    assert norm_anthropic(back) == norm_anthropic(body)


@SETTINGS
@given(chat_request())
def test_chat_request_round_trip(body):
    as_anthropic = chat_request_to_messages(body)
    ANTHROPIC_MESSAGES.validate_python(as_anthropic["messages"])
    roles = [m["role"] for m in as_anthropic["messages"]]
    assert all(a != b for a, b in zip(roles, roles[1:], strict=False)), "roles must alternate"
    back = messages_request_to_chat(as_anthropic)
    CHAT_MESSAGES.validate_python(back["messages"])
    assert norm_chat(back) == norm_chat(body)


@st.composite
def anthropic_response(draw):
    content = draw(st.lists(anthropic_text_block, max_size=2))
    for i in range(draw(st.integers(0, 2))):
        content.append(
            {"type": "tool_use", "id": f"toolu_{i}", "name": draw(ident), "input": draw(json_object)}
        )
    usage = {"input_tokens": draw(st.integers(0, 10**6)), "output_tokens": draw(st.integers(0, 10**6))}
    for key in ("cache_read_input_tokens", "cache_creation_input_tokens"):
        if draw(st.booleans()):
            usage[key] = draw(st.integers(0, 10**6))
    return {
        "id": draw(st.builds(lambda s: f"msg_{s}", ident)),
        "type": "message",
        "role": "assistant",
        "model": draw(ident),
        "content": content,
        "stop_reason": draw(st.sampled_from(["end_turn", "max_tokens", "tool_use", "refusal"])),
        "stop_sequence": None,
        "usage": usage,
    }


@SETTINGS
@given(anthropic_response())
def test_anthropic_response_round_trip(resp):
    anthropic.types.Message.model_validate(resp)
    as_chat = messages_response_to_chat(resp)
    openai.types.chat.ChatCompletion.model_validate(as_chat)
    back = chat_response_to_messages(as_chat)
    anthropic.types.Message.model_validate(back)
    joined = "".join(b["text"] for b in resp["content"] if b["type"] == "text")
    expected = ([{"type": "text", "text": joined}] if joined else []) + [
        b for b in resp["content"] if b["type"] == "tool_use"
    ]
    assert back["content"] == expected
    assert (back["id"], back["model"], back["stop_reason"]) == (
        resp["id"],
        resp["model"],
        resp["stop_reason"],
    )
    usage = {"cache_read_input_tokens": 0, "cache_creation_input_tokens": 0} | resp["usage"]
    assert back["usage"] == usage


@st.composite
def chat_response(draw):
    message: dict = {"role": "assistant", "content": draw(st.none() | text)}
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": draw(ident), "arguments": orjson.dumps(draw(json_object)).decode()},
        }
        for i in range(draw(st.integers(0, 2)))
    ]
    if calls:
        message["tool_calls"] = calls
    prompt = draw(st.integers(0, 10**6))
    usage = {"prompt_tokens": prompt, "completion_tokens": draw(st.integers(0, 10**6))}
    usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    usage["prompt_tokens_details"] = {"cached_tokens": draw(st.integers(0, prompt))}
    return {
        "id": f"chatcmpl-{draw(ident)}",
        "object": "chat.completion",
        "created": 1,
        "model": draw(ident),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": draw(st.sampled_from(["stop", "length", "tool_calls", "content_filter"])),
            }
        ],
        "usage": usage,
    }


@SETTINGS
@given(chat_response())
def test_chat_response_round_trip(resp):
    openai.types.chat.ChatCompletion.model_validate(resp)
    as_anthropic = chat_response_to_messages(resp)
    anthropic.types.Message.model_validate(as_anthropic)
    back = messages_response_to_chat(as_anthropic)
    openai.types.chat.ChatCompletion.model_validate(back)
    original, result = resp["choices"][0], back["choices"][0]
    assert result["finish_reason"] == original["finish_reason"]
    assert (result["message"]["content"] or None) == original["message"]["content"]
    assert [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in result["message"].get("tool_calls", [])
    ] == [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in original["message"].get("tool_calls", [])
    ]
    assert back["usage"] == resp["usage"]
    assert back["model"] == resp["model"]
