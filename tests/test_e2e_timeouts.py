"""An upstream that goes silent, and a client that goes away: both end cleanly and are logged."""

from __future__ import annotations

import time

import httpx

from tests.conftest import Stack


def _row(stack: Stack, rid: str) -> dict:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        rows = stack.rows("id = ?", (rid,))
        if rows:
            return dict(rows[0])
        time.sleep(0.05)
    raise AssertionError(f"{rid} never logged")


def _post(stack: Stack, body: dict) -> httpx.Response:
    return httpx.post(stack.base + "/v1/chat/completions", json=body,
                      headers={"authorization": f"Bearer {stack.key}"}, timeout=30)


def test_silent_upstream_gives_504_not_a_hung_client(stack: Stack) -> None:
    for stream in (False, True):
        r = _post(stack, {"model": "slow-model", "stream": stream,
                          "messages": [{"role": "user", "content": "[[sim:fault=timeout]]"}]})
        assert r.status_code == 504
        err = r.json()["error"]
        assert err["code"] == "upstream_timeout" and "sim-slow/sim-small" in err["message"]
        row = _row(stack, r.headers["x-bastion-request-id"])
        assert row["status"] == 504 and row["error_code"] == "upstream_timeout"


def test_upstream_going_silent_mid_stream_gives_error_event(stack: Stack) -> None:
    # 1 token per 2 s: the first token arrives, then the gap exceeds the 1 s read timeout
    with httpx.stream("POST", stack.base + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}"},
                      json={"model": "slow-model", "stream": True,
                            "messages": [{"role": "user", "content": "[[sim:tps=0.5]] [[sim:tokens=5]]"}]}) as r:
        assert r.status_code == 200
        text = r.read().decode()
        rid = r.headers["x-bastion-request-id"]
    assert '"code":"upstream_timeout"' in text and "[DONE]" not in text
    row = _row(stack, rid)
    assert row["status"] == 504 and row["error_code"] == "upstream_timeout"


def test_client_closing_mid_stream_is_logged_as_499(stack: Stack) -> None:
    with httpx.stream("POST", stack.base + "/v1/chat/completions", timeout=30,
                      headers={"authorization": f"Bearer {stack.key}"},
                      json={"model": "sim-small", "stream": True,
                            "messages": [{"role": "user", "content": "[[sim:tps=5]] [[sim:tokens=50]]"}]}) as r:
        rid = r.headers["x-bastion-request-id"]
        for _ in r.iter_raw():
            break  # the first bytes arrived: hang up
    row = _row(stack, rid)
    assert row["status"] == 499 and row["error_code"] == "client_closed"
    assert row["done_at"] is not None
