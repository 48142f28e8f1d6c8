"""The Anthropic dialect: POST /v1/messages (streaming and not) and /v1/messages/count_tokens."""

from __future__ import annotations

import itertools
import os
from typing import Any

import orjson
from aiohttp import web

from bastion.metering.tokens import count_messages_request
from bastion.sim import generate as gen
from bastion.sim.config import DEFAULT_PROFILE
from bastion.sim.delivery import deliver_json, deliver_stream, preflight
from bastion.sim.faults import CONTEXT_LENGTH, anthropic_error_body, context_length_response, exceeds_context
from bastion.sim.state import STATE

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()
_STOP = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence", "tool": "tool_use"}
MALFORMED_EVENT = (b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
                   b'"delta":{"type":"text_delta","text":\n\n')
_PING = b'event: ping\ndata: {"type":"ping"}\n\n'


class BadRequest(Exception):
    pass


def error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    return web.Response(status=status, body=anthropic_error_body(type_, message), content_type="application/json")


def block_text(content: Any) -> str:
    """The text of a message content (a string or a list of blocks; tool results included)."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for b in content:
        if not isinstance(b, dict):
            continue
        if isinstance(b.get("text"), str):
            parts.append(b["text"])
        elif b.get("type") == "tool_result":
            parts.append(block_text(b.get("content")))
        elif b.get("type") == "tool_use":
            parts.append(f"{b.get('name', '')} {orjson.dumps(b.get('input', {})).decode()}")
    return " ".join(parts)


def _validate(body: dict[str, Any]) -> list[dict[str, Any]]:
    for key in ("model", "max_tokens", "messages"):
        if key not in body:
            raise BadRequest(f"{key}: Field required")
    if not isinstance(body["model"], str) or not body["model"]:
        raise BadRequest("model: Input should be a valid string")
    mt = body["max_tokens"]
    if not isinstance(mt, int) or isinstance(mt, bool):
        raise BadRequest("max_tokens: Input should be a valid integer")
    if mt < 1:
        raise BadRequest("max_tokens: Input should be greater than or equal to 1")
    messages = body["messages"]
    if not isinstance(messages, list):
        raise BadRequest("messages: Input should be a valid list")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise BadRequest(f"messages.{i}: Input should be a valid dictionary")
        if m.get("role") not in ("user", "assistant"):
            raise BadRequest(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if "content" not in m:
            raise BadRequest(f"messages.{i}.content: Field required")
    if not messages:
        raise BadRequest("messages: at least one message is required")
    for key, typ, name in (("stream", bool, "a valid boolean"), ("stop_sequences", list, "a valid list"),
                           ("tools", list, "a valid list"), ("temperature", (int, float), "a valid number")):
        v = body.get(key)
        if v is not None and not isinstance(v, typ):
            raise BadRequest(f"{key}: Input should be {name}")
    t = body.get("temperature")
    if t is not None and not 0 <= t <= 1:
        raise BadRequest("temperature: Input should be less than or equal to 1")
    choice = body.get("tool_choice")
    if choice is not None and (not isinstance(choice, dict)
                               or choice.get("type") not in ("auto", "any", "tool", "none")):
        raise BadRequest("tool_choice: Input should be a valid dictionary with type 'auto', 'any', 'tool' "
                         "or 'none'")
    return messages


def input_tokens(body: dict[str, Any], messages: list[dict[str, Any]]) -> int:
    """usage.input_tokens: system + messages + tools counted with o200k (see ``count_messages_request``)."""
    return count_messages_request(body, gen.SIM_TOKENIZER_MODEL)  # body["messages"] is ``messages``


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and "input_schema" in t]
    choice = body.get("tool_choice") or {}
    if not tools or choice.get("type") == "none":
        return None
    last = messages[-1].get("content")
    if isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last):
        return None
    if choice.get("type") == "tool":
        for t in tools:
            if t.get("name") == choice.get("name"):
                return t["name"], t.get("input_schema") or {}
    return tools[0].get("name", "tool"), tools[0].get("input_schema") or {}


def _event(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def messages(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        msgs = _validate(body)
    except BadRequest as e:
        return error(400, str(e))

    last_user = next((m for m in reversed(msgs) if m.get("role") == "user"), None)
    clean, directives = gen.parse_directives(block_text(last_user.get("content")) if last_user else "")
    gen.apply_headers(directives, request.headers)
    stream = bool(body.get("stream"))
    profile = request.match_info.get("profile", DEFAULT_PROFILE)
    n_in = input_tokens(body, msgs)
    forced = directives.fault
    if exceeds_context(state.deployment(profile).context_window, n_in, body["max_tokens"]):
        forced = CONTEXT_LENGTH
    dep, fault, stats = state.begin(profile, "messages", forced)
    delay = state.delay_s(dep, directives.latency_ms, stats)
    if fault == CONTEXT_LENGTH:
        return context_length_response("anthropic", dep.context_window, n_in, body["max_tokens"])
    early = await preflight(request, "anthropic", fault, dep.faults, delay, stream)
    if early is not None:
        return early

    model = body["model"]
    tool = _pick_tool(body, msgs)
    spec = gen.GenSpec(
        seed=gen.seed_for(dep.seed, dep.profile, model, dep.model_version,
                          [body.get("system"), msgs, body.get("tools")], directives.seed,
                          body.get("temperature", 1)),
        min_tokens=dep.output_tokens.min,
        max_tokens_range=dep.output_tokens.max,
        forced_tokens=directives.tokens,
        max_tokens=body["max_tokens"],
        echo_text=(block_text(body.get("system")) if directives.echo_system else clean) if directives.echo else None,
        stop=[s for s in body.get("stop_sequences") or () if isinstance(s, str)],
        tool=tool,
    )
    choice = gen.generate(spec)[0]
    stats.prompt_tokens += n_in
    stats.completion_tokens += choice.tokens
    tps = directives.tps if directives.tps is not None else dep.tokens_per_second
    n = next(_ids)
    mid = f"msg_01sim{_ID_PREFIX}{n:012d}"
    reported = dep.reported_model(model)
    headers = {"request-id": f"req_01sim{_ID_PREFIX}{n:012d}"}
    stop_reason = _STOP[choice.finish]
    if choice.tool_name is not None:
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_01{choice.tool_id_suffix[:22]}",
                                 "name": choice.tool_name}
    else:
        block = {"type": "text", "text": choice.text}

    if not stream:
        if tps > 0:
            delay += len(choice.pieces) / tps
        if choice.tool_name is not None:
            block["input"] = orjson.loads(choice.text)
        out = {
            "id": mid, "type": "message", "role": "assistant", "model": reported, "content": [block],
            "stop_reason": stop_reason, "stop_sequence": choice.stop_sequence,
            "usage": {"input_tokens": n_in, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                      "output_tokens": choice.tokens, "service_tier": "standard"},
        }
        return await deliver_json(orjson.dumps(out), fault, delay, headers)

    stats.streams_started += 1
    start_usage = {"input_tokens": n_in, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                   "output_tokens": min(1, choice.tokens), "service_tier": "standard"}
    head = [
        _event("message_start", {"type": "message_start", "message": {
            "id": mid, "type": "message", "role": "assistant", "model": reported, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": start_usage}}),
    ]
    if choice.tool_name is not None:
        head.append(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {**block, "input": {}}}))
        head.append(_PING)
        head.append(_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "input_json_delta", "partial_json": ""}}))
        events = [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "input_json_delta", "partial_json": p}})
                  for p in choice.pieces]
    else:
        head.append(_event("content_block_start", {"type": "content_block_start", "index": 0,
                                                   "content_block": {"type": "text", "text": ""}}))
        head.append(_PING)
        events = [_event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                 "delta": {"type": "text_delta", "text": p}})
                  for p in choice.pieces]
    tail = [
        _event("content_block_stop", {"type": "content_block_stop", "index": 0}),
        _event("message_delta", {"type": "message_delta",
                                 "delta": {"stop_reason": stop_reason, "stop_sequence": choice.stop_sequence},
                                 "usage": {"output_tokens": choice.tokens}}),
        _event("message_stop", {"type": "message_stop"}),
    ]
    resp, completed = await deliver_stream(request, head, events, tail, fault=fault, delay_s=delay, tps=tps,
                                           malformed=MALFORMED_EVENT, headers=headers)
    if completed:
        stats.streams_completed += 1
    return resp


async def count_tokens(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            raise BadRequest("The request body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise BadRequest("The request body must be a JSON object.")
        msgs = _validate({"max_tokens": 1, **body})
    except BadRequest as e:
        return error(400, str(e))
    state.begin(request.match_info.get("profile", DEFAULT_PROFILE), "messages.count_tokens", None, faults=False)
    return web.Response(body=orjson.dumps({"input_tokens": input_tokens(body, msgs)}),
                        content_type="application/json")
