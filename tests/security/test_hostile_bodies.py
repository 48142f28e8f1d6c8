"""Hostile request bodies: deep JSON, huge element counts and odd field types are clear 400s, each with its
one log row, and the log writer lives on (finding 1 and 6 of the hardening issue)."""

from __future__ import annotations

import httpx
import orjson
import pytest

from tests.conftest import Stack


def _nested(depth: int) -> dict:
    inner: dict = {"leaf": 1}
    for _ in range(depth - 1):
        inner = {"a": inner}
    return inner


def _post(stack: Stack, path: str, body: bytes) -> httpx.Response:
    return httpx.post(stack.base + path, content=body, timeout=30,
                      headers={"authorization": f"Bearer {stack.key}", "content-type": "application/json"})


def _chat(**extra: object) -> dict:
    return {"model": "sim-small", "messages": [{"role": "user", "content": "hi"}], **extra}


@pytest.mark.parametrize("depth", [70, 300, 1000])
def test_deeply_nested_metadata_is_a_400_and_the_log_lives_on(stack: Stack, wait_row, depth: int) -> None:
    r = _post(stack, "/v1/chat/completions", orjson.dumps(_chat(metadata=_nested(depth))) if depth < 250
              else b'{"model":"sim-small","messages":[{"role":"user","content":"hi"}],"metadata":'
              + b'{"a":' * depth + b"1" + b"}" * depth + b"}")
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "request_too_complex"
    assert "server.max_json_depth" in err["message"]
    row = wait_row(r.headers["x-bastion-request-id"])
    assert row["status"] == 400 and row["error_code"] == "request_too_complex"
    # the writer is alive and the next request is logged as usual
    ok = _post(stack, "/v1/chat/completions", orjson.dumps(_chat()))
    assert ok.status_code == 200
    wait_row(ok.headers["x-bastion-request-id"])
    ready = httpx.get(stack.base + "/readyz").json()
    assert ready["status"] == "ready" and ready["log_writer"] is True


def test_nesting_at_the_limit_is_served_and_logged_whole(stack: Stack, wait_row) -> None:
    # the top-level object is level 1, messages/metadata level 2: 64 levels in all is allowed
    r = _post(stack, "/v1/chat/completions", orjson.dumps(_chat(metadata=_nested(63))))
    assert r.status_code == 200, r.text
    row = wait_row(r.headers["x-bastion-request-id"])
    assert orjson.loads(row["request"])["metadata"]["a"]["a"]["a"]
    assert "log_reduced" not in (row["flags"] or "")


def test_too_many_elements_is_a_400_naming_the_limit(stack: Stack, wait_row) -> None:
    body = _chat(metadata={"xs": [0] * 300_000})
    r = _post(stack, "/v1/chat/completions", orjson.dumps(body))
    assert r.status_code in (400, 413), r.text
    if r.status_code == 400:
        assert "server.max_json_elements" in r.json()["error"]["message"]
    wait_row(r.headers["x-bastion-request-id"])


@pytest.mark.parametrize("role", [["user"], {"r": "user"}, 7, None, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
def test_a_role_of_the_wrong_type_is_a_400(stack: Stack, wait_row, role: object, path: str) -> None:
    body = {"model": "sim-small", "max_tokens": 5, "messages": [{"role": role, "content": "hi"}]}
    r = _post(stack, path, orjson.dumps(body))
    assert r.status_code == 400, r.text
    text = r.text
    assert "messages[0].role" in text
    wait_row(r.headers["x-bastion-request-id"])
