"""End to end: every failure gets its status, in the client's dialect, with a stable code, a message that
says what to fix, and the request id; and every failure is in the request log."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import anthropic
import httpx
import openai
import pytest


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def http(stack):
    with httpx.Client(base_url=stack.base, timeout=30) as client:
        yield client


def _openai_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    err = r.json()["error"]
    assert err["code"] == code
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    assert isinstance(err["type"], str) and err["type"]
    rid = r.headers["x-bastion-request-id"]
    assert err["request_id"] == rid and r.headers["x-request-id"] == rid
    return err


def _anthropic_error(r: httpx.Response, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["type"] == "error"
    err = body["error"]
    assert err["code"] == code and isinstance(err["type"], str) and len(err["message"]) > 10
    rid = r.headers["x-bastion-request-id"]
    assert body["request_id"] == rid and r.headers["request-id"] == rid
    return err


def _logged(wait_row, rid: str, status: int, code: str):
    row = wait_row(rid)
    assert row["status"] == status and row["error_code"] == code
    assert row["error_message"]
    return row


# ---- bad input, raw HTTP ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "ctype", "status", "code", "says"),
    [
        (b"{bad json", "application/json", 400, "invalid_json", "not valid JSON"),
        (b"[1, 2]", "application/json", 400, "invalid_request", "JSON object"),
        (b'"text"', "application/json", 400, "invalid_request", "JSON object"),
        (b"", "application/json", 400, "invalid_json", "empty"),
        (b"   ", "application/json", 400, "invalid_json", "empty"),
        (b"model=sim-small", "application/x-www-form-urlencoded", 415, "unsupported_media_type", "application/json"),
        (b'{"model": "sim-small"}', "text/plain", 415, "unsupported_media_type", "application/json"),
    ],
)
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages", "/v1/embeddings"])
def test_unreadable_bodies(path, content, ctype, status, code, says, http, stack, wait_row):
    r = http.post(path, content=content, headers={"authorization": f"Bearer {stack.key}", "content-type": ctype})
    check = _anthropic_error if path == "/v1/messages" else _openai_error
    err = check(r, status, code)
    assert says in err["message"]
    _logged(wait_row, r.headers["x-bastion-request-id"], status, code)


def test_body_over_limit_is_413(http, stack, wait_row):
    big = json.dumps({"model": "sim-small", "messages": user("x" * 250_000)})
    r = http.post("/v1/chat/completions", content=big, headers={"authorization": f"Bearer {stack.key}",
                                                                "content-type": "application/json"})
    err = _openai_error(r, 413, "request_too_large")
    assert "200000" in err["message"] and "max_body_bytes" in err["message"]
    _logged(wait_row, r.headers["x-bastion-request-id"], 413, "request_too_large")


def test_chunked_body_over_limit_is_413(http, stack):
    def body():
        yield b'{"model": "sim-claude", "max_tokens": 5, "messages": [{"role": "user", "content": "'
        for _ in range(30):
            yield b"y" * 10_000
        yield b'"}]}'

    r = http.post("/v1/messages", content=body(), headers={"x-api-key": stack.key, "content-type": "application/json"})
    assert "content-length" not in r.request.headers
    err = _anthropic_error(r, 413, "request_too_large")
    assert err["type"] == "request_too_large"


BAD_CHAT = [
    ({"model": "sim-small", "messages": "hi"}, "messages"),
    ({"model": "sim-small"}, "messages"),
    ({"model": "sim-small", "messages": []}, "messages"),
    ({"messages": user("hi")}, "model"),
    ({"model": 5, "messages": user("hi")}, "model"),
    ({"model": "sim-small", "messages": user("hi"), "temperature": "hot"}, "temperature"),
    ({"model": "sim-small", "messages": user("hi"), "temperature": 3}, "temperature"),
    ({"model": "sim-small", "messages": user("hi"), "max_tokens": 0}, "max_tokens"),
    ({"model": "sim-small", "messages": user("hi"), "n": 0}, "n"),
    ({"model": "sim-small", "messages": user("hi"), "stream": "yes"}, "stream"),
    ({"model": "sim-small", "messages": user("hi"), "seed": "abc"}, "seed"),
    ({"model": "sim-small", "messages": user("hi"), "tools": "x"}, "tools"),
    ({"model": "sim-small", "messages": user("hi"), "tools": [{"type": "function", "function": {}}]},
     "tools[0].function.name"),
    ({"model": "sim-small", "messages": user("hi"), "stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": "sim-small", "messages": user("hi"), "response_format": {"type": "yaml"}}, "response_format"),
    ({"model": "sim-small", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"model": "sim-small", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "sim-small", "messages": [{"role": "user", "content": [1]}]}, "messages[0].content[0]"),
    ({"model": "sim-small", "messages": [{"role": "tool", "content": "x"}]}, "messages[0].tool_call_id"),
    ({"model": "sim-claude", "messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://host/x.png"}}]}]}, None),
    ({"model": "sim-claude", "messages": [*user("hi"), {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "not json"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "r"}]}, None),
    ({"model": "sim-claude", "messages": user("hi"), "functions": [{"name": "f"}]}, None),
    ({"model": "sim-small", "messages": [{"role": "user", "content": "doc", "untrusted": 1}]},
     "messages[0].untrusted"),
    ({"model": "sim-small", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "doc", "untrusted": {"source": "web"}}]}]}, "messages[0].content[0].untrusted"),
    ({"model": "sim-small", "messages": user("hi"), "tools": [{"type": "function", "function": {
        "name": "f", "parameters": {"type": "object", "properties": {"a": {"type": 5}}}}}]}, "tools"),
    ({"model": "sim-small", "messages": user("hi"), "response_format": {"type": "json_schema", "json_schema": {
        "name": "r", "schema": {"type": "object", "properties": {"a": {"pattern": "(["}}}}}},
     "response_format.json_schema.schema"),
    # found by tests/security/test_fuzz_endpoints.py: passed on and crashed the upstream (500), or our translator
    ({"model": "sim-small", "messages": user("hi"), "tools": [{"type": "function", "function": {"name": "f"}}],
      "tool_choice": {"type": "function", "function": "f"}}, "tool_choice.function.name"),
    ({"model": "sim-small", "messages": user("hi"), "tool_choice": 5}, "tool_choice"),
    ({"model": "sim-claude", "messages": user("hi"), "modalities": True}, "modalities"),
    ({"model": "sim-small", "messages": user("hi"), "tools": [{"type": [["function"]], "function": {
        "name": "f", "parameters": {"type": "object", "properties": ["a"]}}}]}, "tools[0].type"),
]


@pytest.mark.parametrize(("body", "param"), BAD_CHAT, ids=[str(i) for i in range(len(BAD_CHAT))])
def test_bad_chat_fields_are_400_naming_the_field(body, param, http, stack, wait_row):
    r = http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {stack.key}"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] in ("invalid_request", "unsupported_parameter")
    assert err["type"] == "invalid_request_error"
    if param is not None:
        assert err["param"] == param and param in err["message"]
    row = _logged(wait_row, r.headers["x-bastion-request-id"], 400, err["code"])
    assert row["tenant"] == "default"
    assert json.loads(row["attempts"]) == []  # refused before any upstream call


BAD_MESSAGES = [
    ({"model": "sim-claude", "messages": user("hi")}, "max_tokens"),
    ({"model": "sim-claude", "max_tokens": "10", "messages": user("hi")}, "max_tokens"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": "hi"}, "messages"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"), "temperature": 1.5}, "temperature"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"), "system": 5}, "system"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"), "tools": [{"description": "x"}]},
     "tools[0].name"),
    ({"model": "sim-small", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}, None),
    ({"model": "sim-small", "max_tokens": 10, "messages": user("hi"),
      "tools": [{"type": "web_search_20250305", "name": "web_search"}]}, None),
    ({"model": "sim-claude", "max_tokens": 10, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "doc", "untrusted": ["web"]}]}]}, "messages[0].content[0].untrusted"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"),
      "tools": [{"name": "f", "input_schema": {"type": "object", "required": "a"}}]}, "input_schema"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"), "tool_choice": "auto"}, "tool_choice"),
    ({"model": "sim-claude", "max_tokens": 10, "messages": user("hi"), "tool_choice": {"type": "tool"}},
     "tool_choice.name"),
]


@pytest.mark.parametrize(("body", "param"), BAD_MESSAGES, ids=[str(i) for i in range(len(BAD_MESSAGES))])
def test_bad_messages_fields_are_400_in_anthropic_format(body, param, http, stack, wait_row):
    r = http.post("/v1/messages", json=body, headers={"x-api-key": stack.key})
    assert r.status_code == 400, r.text
    data = r.json()
    assert data["type"] == "error" and data["error"]["type"] == "invalid_request_error"
    if param is not None:
        assert param in data["error"]["message"]
    _logged(wait_row, r.headers["x-bastion-request-id"], 400, data["error"]["code"])


@pytest.mark.parametrize(
    "body",
    [{"model": "sim-embed"}, {"model": "sim-embed", "input": 5}, {"model": "sim-embed", "input": []},
     {"model": "sim-embed", "input": "x", "encoding_format": "int8"}, {"model": "sim-embed", "input": "x", "dimensions": 0}],
)
def test_bad_embeddings_are_400(body, http, stack):
    r = http.post("/v1/embeddings", json=body, headers={"authorization": f"Bearer {stack.key}"})
    _openai_error(r, 400, "invalid_request")


# ---- the SDKs see the right exception classes -------------------------------------------------------------


def test_openai_sdk_bad_request(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(model="sim-small", messages=user("hi"), temperature=5)
    e = ei.value
    assert e.code == "invalid_request" and e.param == "temperature" and "between 0 and 2" in e.message
    assert e.body["request_id"] == e.response.headers["x-bastion-request-id"]


def test_unknown_model_is_404_listing_models(oai, anth, wait_row):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.chat.completions.create(model="gpt-nope", messages=user("hi"))
    e = ei.value
    assert e.code == "model_not_found" and e.param == "model"
    for alias in ("sim-small", "sim-claude", "azure-gpt", "compat"):
        assert alias in e.message
    assert "sim-embed" not in e.message  # not a chat model
    _logged(wait_row, e.response.headers["x-bastion-request-id"], 404, "model_not_found")

    with pytest.raises(anthropic.NotFoundError) as ai:
        anth.messages.create(model="claude-nope", max_tokens=5, messages=user("hi"))
    assert "sim-claude" in ai.value.message and ai.value.body["error"]["type"] == "not_found_error"

    with pytest.raises(openai.NotFoundError) as ei:
        oai.embeddings.create(model="sim-small", input="x")
    assert "sim-embed" in ei.value.message


def test_missing_and_bad_key_are_401(stack, http, wait_row):
    with openai.OpenAI(base_url=stack.base + "/v1", api_key="bk-not-a-real-key", max_retries=0) as bad:
        with pytest.raises(openai.AuthenticationError) as ei:
            bad.chat.completions.create(model="sim-small", messages=user("hi"))
    e = ei.value
    assert e.code == "invalid_api_key" and "bastion keys create" in e.message
    assert "bk-not-a-real-key" not in e.message  # the key is never echoed back
    _logged(wait_row, e.response.headers["x-bastion-request-id"], 401, "invalid_api_key")

    with anthropic.Anthropic(base_url=stack.base, api_key="bk-wrong", max_retries=0) as bad_a:
        with pytest.raises(anthropic.AuthenticationError) as ai:
            bad_a.messages.create(model="sim-claude", max_tokens=5, messages=user("hi"))
    assert ai.value.body["error"]["type"] == "authentication_error"

    r = http.post("/v1/chat/completions", json={"model": "sim-small", "messages": user("hi")})
    err = _openai_error(r, 401, "invalid_api_key")
    assert "Authorization: Bearer" in err["message"]
    r = http.post("/v1/messages", json={"model": "sim-claude", "max_tokens": 5, "messages": user("hi")})
    _anthropic_error(r, 401, "invalid_api_key")


def test_models_list_needs_a_key(stack, http):
    r = http.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = http.get("/v1/models", headers={"authorization": f"Bearer {stack.key}"})
    assert r.status_code == 200


def test_models_list_auth_error_has_request_id(http):
    r = http.get("/v1/models")
    assert r.headers.get("x-bastion-request-id")


def test_revoked_key_stops_working(stack, http):
    cmd = [sys.executable, "-m", "bastion.cli", "keys"]
    out = subprocess.run([*cmd, "create", "--config", str(stack.config), "--tenant", "globex", "--name",
                          "e2e-revoke", "--json"], check=True, capture_output=True, text=True).stdout
    created = json.loads(out)
    headers = {"authorization": f"Bearer {created['key']}"}
    body = {"model": "sim-small", "messages": user("hi [[sim:tokens=2]]")}
    assert http.post("/v1/chat/completions", json=body, headers=headers).status_code == 200
    subprocess.run([*cmd, "revoke", "--config", str(stack.config), created["id"]], check=True, capture_output=True)
    deadline = time.monotonic() + 15  # documented: within 5 s
    while True:
        r = http.post("/v1/chat/completions", json=body, headers=headers)
        if r.status_code == 401:
            break
        assert r.status_code == 200
        assert time.monotonic() < deadline, "a revoked key is still accepted"
        time.sleep(0.25)
    assert "revoked" in _openai_error(r, 401, "invalid_api_key")["message"]


# ---- routes ---------------------------------------------------------------------------------------------


def test_unknown_route_and_wrong_method(stack, http):
    h = {"authorization": f"Bearer {stack.key}"}
    r = http.get("/v1/nothing", headers=h)
    assert r.status_code == 404 and r.headers["content-type"].startswith("application/json")
    assert r.json()["error"]["code"] == "not_found" and "/v1/nothing" in r.json()["error"]["message"]
    r = http.post("/v2/chat/completions", json={}, headers=h)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    r = http.get("/v1/chat/completions", headers=h)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert "GET" in r.json()["error"]["message"]
    r = http.get("/v1/messages", headers=h)
    assert r.status_code == 405
    assert r.json()["type"] == "error" and r.json()["error"]["code"] == "method_not_allowed"


def test_route_errors_carry_request_id(stack, http):
    assert http.get("/v1/nothing").headers.get("x-bastion-request-id")
    assert http.get("/v1/chat/completions").headers.get("x-bastion-request-id")


# ---- upstream errors keep status and meaning ----------------------------------------------------------


@pytest.mark.parametrize("alias", ["sim-small", "azure-gpt", "compat", "sim-claude"])
def test_upstream_429_keeps_retry_after(alias, oai, wait_row):
    with pytest.raises(openai.RateLimitError) as ei:
        oai.chat.completions.create(model=alias, messages=user("hi [[sim:fault=429]]"))
    e = ei.value
    assert e.response.headers["retry-after"] == "1"
    assert e.response.headers["retry-after-ms"] == "1000"
    assert "429" in e.message and "rate limit" in e.message.lower()
    assert e.body["type"] == "rate_limit_error"
    row = wait_row(e.response.headers["x-bastion-request-id"])
    assert row["status"] == 429 and row["error_code"]
    attempts = json.loads(row["attempts"])
    assert len(attempts) == 1 and attempts[0]["status"] == 429 and attempts[0]["outcome"] == "error"


def test_upstream_429_in_anthropic_dialect(anth):
    with pytest.raises(anthropic.RateLimitError) as ei:
        anth.messages.create(model="sim-small", max_tokens=5, messages=user("hi [[sim:fault=429]]"))
    assert ei.value.response.headers["retry-after"] == "1"
    assert ei.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize("alias", ["sim-small", "sim-claude"])
@pytest.mark.parametrize(("fault", "exc"), [("500", openai.InternalServerError), ("503", openai.InternalServerError)])
def test_upstream_5xx_keep_status(alias, fault, exc, oai, wait_row):
    with pytest.raises(exc) as ei:
        oai.chat.completions.create(model=alias, messages=user(f"hi [[sim:fault={fault}]]"))
    e = ei.value
    assert e.status_code == int(fault)
    assert e.body["type"] == "server_error" and e.code
    assert f"answered {fault}" in e.message
    _logged(wait_row, e.response.headers["x-bastion-request-id"], int(fault), e.code)


@pytest.mark.parametrize("alias", ["sim-small", "sim-claude"])
def test_upstream_503_in_anthropic_dialect(alias, anth):
    with pytest.raises(anthropic.APIStatusError) as ei:
        anth.messages.create(model=alias, max_tokens=5, messages=user("hi [[sim:fault=503]]"))
    assert ei.value.status_code == 503
    assert ei.value.body["error"]["type"] == "overloaded_error"


def test_unreachable_upstream_is_502(oai, anth, wait_row):
    with pytest.raises(openai.APIStatusError) as ei:
        oai.chat.completions.create(model="dead-model", messages=user("hi"))
    e = ei.value
    assert e.status_code == 502 and e.code == "upstream_unavailable"
    assert "could not connect" in e.message and "dead/nothing" in e.message
    row = _logged(wait_row, e.response.headers["x-bastion-request-id"], 502, "upstream_unavailable")
    assert row["deployment"] == "dead/nothing" and len(json.loads(row["attempts"])) == 1

    with pytest.raises(openai.APIStatusError) as ei:  # streamed: the failure happens before any byte
        oai.chat.completions.create(model="dead-model", messages=user("hi"), stream=True)
    assert ei.value.status_code == 502

    with pytest.raises(anthropic.APIStatusError) as ai:
        anth.messages.create(model="dead-model", max_tokens=5, messages=user("hi"))
    assert ai.value.status_code == 502 and ai.value.body["error"]["type"] == "api_error"


@pytest.mark.parametrize(("fault", "code"), [("drop", "upstream_unavailable"), ("truncate", "upstream_malformed"),
                                             ("malformed", "upstream_malformed")])
@pytest.mark.parametrize("alias", ["sim-small", "sim-claude"])
def test_broken_unstreamed_answer_is_502(alias, fault, code, oai, wait_row):
    with pytest.raises(openai.APIStatusError) as ei:
        oai.chat.completions.create(model=alias, messages=user(f"hi [[sim:fault={fault}]]"))
    assert ei.value.status_code == 502 and ei.value.code == code
    _logged(wait_row, ei.value.response.headers["x-bastion-request-id"], 502, code)


STREAM_FAULTS = [("drop", "upstream_stream_broken"), ("truncate", "upstream_stream_truncated"),
                 ("malformed", "upstream_malformed")]


@pytest.mark.parametrize(("fault", "code"), STREAM_FAULTS)
@pytest.mark.parametrize("alias", ["sim-small", "sim-claude"])
def test_openai_stream_that_breaks(alias, fault, code, oai, wait_row):
    raw = oai.chat.completions.with_raw_response.create(
        model=alias, messages=user(f"story [[sim:tokens=30]] [[sim:fault={fault}]]"), stream=True
    )
    rid = raw.headers["x-bastion-request-id"]
    got = []
    with pytest.raises(openai.APIError) as ei:
        for chunk in raw.parse():
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert ei.value.code == code
    assert ei.value.body["request_id"] == rid
    text = "".join(got)
    assert text, "no tokens before the break"
    row = _logged(wait_row, rid, 502, code)
    assert row["status"] >= 500 and row["stream"] == 1
    # What the client saw is exactly what the gateway accounted for: nothing sent twice, nothing invented.
    assert json.loads(row["response"])["choices"][0]["message"]["content"] == text
    assert json.loads(row["attempts"])[0]["outcome"] == "error"


@pytest.mark.parametrize(("fault", "code"), STREAM_FAULTS)
@pytest.mark.parametrize("alias", ["sim-claude", "sim-small"])
def test_anthropic_stream_that_breaks(alias, fault, code, stack, http, wait_row):
    r = http.post(
        "/v1/messages",
        json={"model": alias, "max_tokens": 200, "stream": True,
              "messages": user(f"story [[sim:tokens=30]] [[sim:fault={fault}]]")},
        headers={"x-api-key": stack.key},
    )
    rid = r.headers["x-bastion-request-id"]
    events = []
    for block in r.text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            events.append((lines.get("event"), json.loads(lines["data"])))
    names = [n for n, _ in events]
    assert names[0] == "message_start" and names[-1] == "error"
    assert "message_stop" not in names and "message_delta" not in names
    err = events[-1][1]
    assert err["type"] == "error" and err["error"]["code"] == code and err["request_id"] == rid
    text = "".join(d["delta"].get("text", "") for n, d in events if n == "content_block_delta")
    assert text
    row = _logged(wait_row, rid, 502, code)
    assert json.loads(row["response"])["content"][0]["text"] == text

    # The SDK raises on the error event, after the text it already yielded.
    with anthropic.Anthropic(base_url=stack.base, api_key=stack.key, max_retries=0) as client:
        seen = []
        with pytest.raises(anthropic.APIStatusError) as ei:
            with client.messages.stream(model=alias, max_tokens=200,
                                        messages=user(f"story [[sim:tokens=30]] [[sim:fault={fault}]]")) as s:
                seen.extend(s.text_stream)
        assert seen and ei.value.body["error"]["code"] == code


NEVER_500 = [
    ("/v1/chat/completions", b"\xff\xfe"),
    ("/v1/chat/completions", b"[" * 5000 + b"]" * 5000),
    ("/v1/chat/completions", b'{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"seed":1e400}'),
    ("/v1/chat/completions", b'{"model":"sim-small","messages":[{"role":"user","content":"hi"}],'
                             b'"max_tokens":1180591620717411303424}'),
    ("/v1/chat/completions", b'{"model":"sim-claude","messages":[{"role":"user","content":[{"type":"image_url"}]}]}'),
    ("/v1/chat/completions", b'{"model":"sim-claude","messages":[{"role":"assistant","content":null,'
                             b'"tool_calls":[{"id":"x"}]}]}'),
    ("/v1/chat/completions", b'{"model":"sim-claude","messages":[{"role":"user","content":"hi"}],'
                             b'"tools":[{"type":"function","function":{"name":"f"}}],"tool_choice":{"type":"function"}}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":[{"type":"tool_result"}]}]}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":[{"type":"image"}]}]}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"assistant","content":'
                     b'[{"type":"tool_use","id":"a","name":"f","input":"str"}]}]}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
                     b'"tool_choice":{"type":"tool"}}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
                     b'"system":[{"type":"text"}]}'),
    ("/v1/messages", b'{"model":"sim-small","max_tokens":5,"messages":[{"role":"user","content":"hi"}],'
                     b'"output_config":{"format":"x"}}'),
]


@pytest.mark.parametrize(("path", "content"), NEVER_500, ids=[str(i) for i in range(len(NEVER_500))])
def test_odd_input_is_a_400_never_a_500(path, content, http, stack, wait_row):
    r = http.post(path, content=content, headers={"authorization": f"Bearer {stack.key}",
                                                  "content-type": "application/json"})
    assert r.status_code == 400, r.text
    code = r.json()["error"]["code"]
    assert code in ("invalid_json", "invalid_request", "unsupported_parameter", "request_too_complex")
    _logged(wait_row, r.headers["x-bastion-request-id"], 400, code)
