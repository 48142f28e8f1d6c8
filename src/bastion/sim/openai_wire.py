"""The OpenAI dialect: /v1/chat/completions, /v1/embeddings, /v1/models (and the Azure paths)."""

from __future__ import annotations

import base64
import itertools
import os
import time
from typing import Any

import orjson
from aiohttp import web

from bastion.metering.tokens import count_chat
from bastion.sim import generate as gen
from bastion.sim.config import DEFAULT_PROFILE, Deployment
from bastion.sim.delivery import deliver_json, deliver_stream, preflight
from bastion.sim.faults import CONTEXT_LENGTH, context_length_response, exceeds_context, openai_error_body
from bastion.sim.state import STATE

_ids = itertools.count(1)
_ID_PREFIX = os.urandom(4).hex()
_ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_FINISH = {"stop": "stop", "length": "length", "stop_sequence": "stop", "tool": "tool_calls"}
MALFORMED_CHUNK = b'data: {"id":"chatcmpl-malformed","object":"chat.completion.chunk","choices":[{"delta":\n\n'
DONE = b"data: [DONE]\n\n"


class BadRequest(Exception):
    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


def error(status: int, message: str, type_: str = "invalid_request_error", param: str | None = None,
          code: str | None = None) -> web.Response:
    return web.Response(status=status, body=openai_error_body(message, type_, param, code),
                        content_type="application/json")


def _bad(e: BadRequest) -> web.Response:
    return error(400, e.message, "invalid_request_error", e.param, e.code)


async def read_json(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError:
        raise BadRequest("We could not parse the JSON body of your request. (HINT: This likely means you "
                         "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload.)"
                         ) from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object.")
    return body


def _type_error(param: str, expected: str, value: Any) -> BadRequest:
    got = {str: "a string", int: "an integer", float: "a decimal", bool: "a boolean", list: "an array",
           dict: "an object", type(None): "null"}.get(type(value), "another type")
    return BadRequest(f"Invalid type for '{param}': expected {expected}, but got {got} instead.", param,
                      "invalid_type")


def _opt(body: dict[str, Any], key: str, types: type | tuple[type, ...], expected: str) -> Any:
    value = body.get(key)
    if value is None:
        return None
    allowed = types if isinstance(types, tuple) else (types,)
    if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
        raise _type_error(key, expected, value)
    return value


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def _chat_model(model: Any) -> str:
    if not model:
        raise BadRequest("you must provide a model parameter", None, None)
    if not isinstance(model, str):
        raise _type_error("model", "a string", model)
    return model


def _validate_chat(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if messages is None:
        raise BadRequest("Missing required parameter: 'messages'.", "messages", "missing_required_parameter")
    if not isinstance(messages, list):
        raise _type_error("messages", "an array of objects", messages)
    if not messages:
        raise BadRequest("Invalid 'messages': empty array. Expected an array with minimum length 1, but got an "
                         "empty array instead.", "messages", "empty_array")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _type_error(f"messages[{i}]", "an object", m)
        if m.get("role") not in _ROLES:
            raise BadRequest(f"Invalid value: '{m.get('role')}'. Supported values are: 'system', 'assistant', "
                             f"'user', 'function', 'tool', and 'developer'.", f"messages[{i}].role", "invalid_value")
    _opt(body, "stream", bool, "a boolean")
    n = _opt(body, "n", int, "an integer")
    if n is not None and not 1 <= n <= 128:
        raise BadRequest(f"Invalid 'n': integer above maximum value. Expected a value <= 128, got {n} instead."
                         if n > 128 else f"Invalid 'n': integer below minimum value. Expected a value >= 1, got "
                         f"{n} instead.", "n", "integer_above_max_value" if n > 128 else "integer_below_min_value")
    for key in ("max_tokens", "max_completion_tokens"):
        v = _opt(body, key, int, "an integer")
        if v is not None and v < 1:
            raise BadRequest(f"Invalid '{key}': integer below minimum value. Expected a value >= 1, got {v} "
                             "instead.", key, "integer_below_min_value")
    t = _opt(body, "temperature", (int, float), "a decimal")
    if t is not None and not 0 <= t <= 2:
        raise BadRequest(f"Invalid 'temperature': decimal out of range. Expected a value between 0 and 2, got {t} "
                         "instead.", "temperature", "decimal_out_of_range")
    _opt(body, "tools", list, "an array of objects")
    _opt(body, "logprobs", bool, "a boolean")
    top = _opt(body, "top_logprobs", int, "an integer")
    if top is not None and not 0 <= top <= 20:
        raise BadRequest("Invalid 'top_logprobs': expected a value between 0 and 20.", "top_logprobs",
                         "integer_out_of_range")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str) and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise _type_error("stop", "a string or an array of strings", stop)
    return messages


def prompt_tokens(messages: list[dict[str, Any]], tools: Any) -> int:
    """usage.prompt_tokens: OpenAI's chat counting with o200k, like gpt-4o (see ``count_chat``)."""
    return count_chat(messages, gen.SIM_TOKENIZER_MODEL, tools=tools if isinstance(tools, list) else None)


def _pick_tool(body: dict[str, Any], messages: list[dict[str, Any]]) -> tuple[tuple[str, dict] | None, bool]:
    """The tool to call (name, parameters schema) and whether tool_choice named it."""
    tools = [t for t in body.get("tools") or () if isinstance(t, dict) and isinstance(t.get("function"), dict)]
    choice = body.get("tool_choice")
    if not tools or choice == "none" or messages[-1].get("role") in ("tool", "function"):
        return None, False
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        for t in tools:
            if t["function"].get("name") == name:
                return (name, t["function"].get("parameters") or {}), True
    fn = tools[0]["function"]
    return (fn.get("name", "tool"), fn.get("parameters") or {}), False


def _request_seed(body: dict[str, Any], directives: gen.Directives) -> Any:
    return directives.seed if directives.seed is not None else body.get("seed")


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0},
    }


def _profile(request: web.Request) -> str:
    return request.match_info.get("profile", DEFAULT_PROFILE)


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await read_json(request)
        model = _chat_model(request.match_info.get("deployment") or body.get("model"))
        messages = _validate_chat(body)
    except BadRequest as e:
        return _bad(e)

    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), None)
    clean, directives = gen.parse_directives(content_text(last_user.get("content")) if last_user else "")
    gen.apply_headers(directives, request.headers)
    stream = bool(body.get("stream"))
    profile = _profile(request)
    tools = body.get("tools")
    n_prompt = prompt_tokens(messages, tools)
    max_out = body.get("max_completion_tokens") or body.get("max_tokens")
    forced = directives.fault
    if exceeds_context(state.deployment(profile).context_window, n_prompt, max_out):
        forced = CONTEXT_LENGTH
    dep, fault, stats = state.begin(profile, "chat.completions", forced)
    delay = state.delay_s(dep, directives.latency_ms, stats)
    if fault == CONTEXT_LENGTH:
        return context_length_response("openai", dep.context_window, n_prompt, max_out)
    early = await preflight(request, "openai", fault, dep.faults, delay, stream)
    if early is not None:
        return early

    tool, named = _pick_tool(body, messages)
    rf = f if isinstance(f := body.get("response_format"), dict) else {}
    schema = None
    if rf.get("type") == "json_schema":
        schema = (rf.get("json_schema") or {}).get("schema") or {"type": "object"}
    stop = body.get("stop")
    spec = gen.GenSpec(
        seed=gen.seed_for(dep.seed, dep.profile, model, dep.model_version, [messages, tools, rf or None],
                          _request_seed(body, directives), body.get("temperature", 1)),
        n=body.get("n") or 1,
        min_tokens=dep.output_tokens.min,
        max_tokens_range=dep.output_tokens.max,
        forced_tokens=directives.tokens,
        max_tokens=max_out,
        echo_text=(("\n".join(content_text(m.get("content")) for m in messages if m.get("role") in ("system", "developer"))
                    if directives.echo_system else clean) if directives.echo else None),
        stop=[stop] if isinstance(stop, str) else list(stop or ()),
        tool=tool,
        json_schema=schema,
        json_object=rf.get("type") == "json_object",
        logprobs=bool(body.get("logprobs")),
        top_logprobs=body.get("top_logprobs") or 0,
    )
    choices = gen.generate(spec)
    n_completion = sum(c.tokens for c in choices)
    stats.prompt_tokens += n_prompt
    stats.completion_tokens += n_completion
    tps = directives.tps if directives.tps is not None else dep.tokens_per_second
    cid = f"chatcmpl-sim{_ID_PREFIX}{next(_ids):012d}"
    created = int(time.time())
    reported = dep.reported_model(model)
    headers = {"x-request-id": f"req_sim{_ID_PREFIX}{cid[-12:]}", "openai-model": reported}
    if not stream:
        if tps > 0:
            delay += max((len(c.pieces) for c in choices), default=0) / tps
        out = {
            "id": cid, "object": "chat.completion", "created": created, "model": reported,
            "choices": [_choice(i, c, named) for i, c in enumerate(choices)],
            "usage": _usage(n_prompt, n_completion), "service_tier": "default",
            "system_fingerprint": dep.system_fingerprint,
        }
        return await deliver_json(orjson.dumps(out), fault, delay, headers)

    stats.streams_started += 1
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head, events, tail = _chunks(cid, created, reported, dep, choices, named, include_usage)
    if include_usage:
        tail.append(_prefix(cid, created, reported, dep) + b"],"
                    + orjson.dumps({"usage": _usage(n_prompt, n_completion)})[1:] + b"\n\n")
    tail.append(DONE)
    resp, completed = await deliver_stream(request, head, events, tail, fault=fault, delay_s=delay, tps=tps,
                                           malformed=MALFORMED_CHUNK, headers=headers)
    if completed:
        stats.streams_completed += 1
    return resp


def _choice(i: int, c: gen.Choice, named: bool) -> dict[str, Any]:
    if c.tool_name is not None:
        message: dict[str, Any] = {
            "role": "assistant", "content": None,
            "tool_calls": [{"id": f"call_{c.tool_id_suffix}", "type": "function",
                            "function": {"name": c.tool_name, "arguments": c.text}}],
            "refusal": None, "annotations": [],
        }
    else:
        message = {"role": "assistant", "content": c.text, "refusal": None, "annotations": []}
    lp = {"content": c.logprobs, "refusal": None} if c.logprobs is not None else None
    return {"index": i, "message": message, "logprobs": lp, "finish_reason": _finish(c, named)}


def _finish(c: gen.Choice, named: bool) -> str:
    # like OpenAI: a call forced by a named tool_choice finishes with "stop", not "tool_calls"
    return "stop" if c.finish == "tool" and named else _FINISH[c.finish]


def _prefix(cid: str, created: int, model: str, dep: Deployment) -> bytes:
    """``data: {"id":...,"choices":[`` — the shared start of every chunk."""
    hdr = orjson.dumps({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "service_tier": "default", "system_fingerprint": dep.system_fingerprint})
    return b"data: " + hdr[:-1] + b',"choices":['


def _chunks(cid: str, created: int, model: str, dep: Deployment, choices: list[gen.Choice], named: bool,
            include_usage: bool) -> tuple[list[bytes], list[bytes], list[bytes]]:
    pre = _prefix(cid, created, model, dep)
    post = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
    dumps = orjson.dumps
    head: list[bytes] = []
    per_choice: list[list[bytes]] = []
    tail: list[bytes] = []
    for i, c in enumerate(choices):
        evs: list[bytes] = []
        if c.tool_name is not None:
            call = {"index": 0, "id": f"call_{c.tool_id_suffix}", "type": "function",
                    "function": {"name": c.tool_name, "arguments": ""}}
            head.append(pre + dumps({"index": i, "delta": {"role": "assistant", "content": None,
                                                            "tool_calls": [call], "refusal": None},
                                     "logprobs": None, "finish_reason": None}) + post)
            for p in c.pieces:
                evs.append(pre + dumps({"index": i, "delta": {"tool_calls": [{"index": 0, "function":
                                                                             {"arguments": p}}]},
                                        "logprobs": None, "finish_reason": None}) + post)
        else:
            head.append(pre + dumps({"index": i, "delta": {"role": "assistant", "content": "", "refusal": None},
                                     "logprobs": None, "finish_reason": None}) + post)
            lps = c.logprobs
            for k, p in enumerate(c.pieces):
                lp = {"content": [lps[k]], "refusal": None} if lps is not None else None
                evs.append(pre + dumps({"index": i, "delta": {"content": p}, "logprobs": lp,
                                        "finish_reason": None}) + post)
        per_choice.append(evs)
        tail.append(pre + dumps({"index": i, "delta": {}, "logprobs": None, "finish_reason": _finish(c, named)})
                    + post)
    if len(per_choice) == 1:
        return head, per_choice[0], tail
    events = [e for group in itertools.zip_longest(*per_choice) for e in group if e is not None]
    return head, events, tail


# --- embeddings and models -----------------------------------------------------------------------


def _embedding_inputs(value: Any) -> list[tuple[str, int]]:
    """(text to hash, token count) per input item."""
    if isinstance(value, str):
        return [(value, gen.count_tokens(value))]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [(" ".join(map(str, value)), len(value))]
        out = []
        for v in value:
            if isinstance(v, str):
                out.append((v, gen.count_tokens(v)))
            elif isinstance(v, list) and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                out.append((" ".join(map(str, v)), len(v)))
            else:
                raise BadRequest("'input' must be a string, an array of strings, an array of integers or an "
                                 "array of integer arrays.", "input", "invalid_type")
        return out
    raise BadRequest("'input' must be a non-empty string or array.", "input", "invalid_value")


async def embeddings(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        body = await read_json(request)
        model = request.match_info.get("deployment") or body.get("model")
        if not model:
            raise BadRequest("you must provide a model parameter")
        if "input" not in body:
            raise BadRequest("Missing required parameter: 'input'.", "input", "missing_required_parameter")
        items = _embedding_inputs(body["input"])
        dims = _opt(body, "dimensions", int, "an integer") or state.config.embedding_dimensions
        if dims < 1 or dims > 8192:
            raise BadRequest("Invalid 'dimensions': expected a value between 1 and 8192.", "dimensions",
                             "invalid_value")
        fmt = body.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise BadRequest(f"Invalid value: '{fmt}'. Supported values are: 'float' and 'base64'.",
                             "encoding_format", "invalid_value")
    except BadRequest as e:
        return _bad(e)
    directives = gen.apply_headers(gen.Directives(), request.headers)
    dep, fault, stats = state.begin(_profile(request), "embeddings", directives.fault)
    delay = state.delay_s(dep, directives.latency_ms, stats)
    if fault == CONTEXT_LENGTH:  # only when forced: the context window applies to chat, not embeddings
        return context_length_response("openai", None, sum(k for _, k in items), None, "input")
    early = await preflight(request, "openai", fault, dep.faults, delay, False)
    if early is not None:
        return early
    data = []
    for i, (text, _) in enumerate(items):
        vec = gen.embedding(text, dims)
        emb: Any = base64.b64encode(gen.embedding_bytes_le(vec)).decode() if fmt == "base64" else vec.tolist()
        data.append({"object": "embedding", "index": i, "embedding": emb})
    tokens = sum(k for _, k in items)
    stats.prompt_tokens += tokens
    out = {"object": "list", "data": data, "model": dep.reported_model(model),
           "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return await deliver_json(orjson.dumps(out), fault, delay)


def _model_entry(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1_767_225_600, "owned_by": "bastion-sim"}


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.begin(_profile(request), "models", None, faults=False)
    body = {"object": "list", "data": [_model_entry(m) for m in state.config.models]}
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def retrieve_model(request: web.Request) -> web.Response:
    state = request.app[STATE]
    state.begin(_profile(request), "models", None, faults=False)
    name = request.match_info["model"]
    if name not in state.config.models:
        return error(404, f"The model '{name}' does not exist or you do not have access to it.",
                     "invalid_request_error", None, "model_not_found")
    return web.Response(body=orjson.dumps(_model_entry(name)), content_type="application/json")
