"""The `bastion` command as a user runs it: keys, logs, replay, config check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import orjson

from tests.conftest import Stack
from tests.procs import GATEWAY_ENV


def bastion(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **GATEWAY_ENV}  # replay calls upstreams itself, with the provider keys
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True, text=True, check=check,
                          env=env)


def _wait_logged(stack: Stack, rid: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not stack.rows("id = ?", (rid,)):
        time.sleep(0.05)


def test_keys_create_list_revoke(stack: Stack) -> None:
    out = orjson.loads(bastion("keys", "create", "--config", str(stack.config), "--tenant", "globex",
                               "--user", "bob", "--name", "cli-test", "--json").stdout)
    key = out["key"]
    assert key.startswith("bk-") and out["tenant"] == "globex" and out["user"] == "bob"
    # only the hash is stored
    assert key.encode() not in Path(stack.store).read_bytes()
    listed = bastion("keys", "list", "--config", str(stack.config)).stdout
    assert "cli-test" in listed and "globex" in listed and key not in listed

    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=key, max_retries=0)
    r = client.chat.completions.with_raw_response.create(model="sim-small", messages=[{"role": "user", "content": "x"}])
    rid = r.headers["x-bastion-request-id"]
    _wait_logged(stack, rid)
    row = stack.rows("id = ?", (rid,))[0]
    assert (row["tenant"], row["user"]) == ("globex", "bob")

    assert "revoked 1" in bastion("keys", "revoke", "--config", str(stack.config), "cli-test").stdout
    deadline = time.monotonic() + 20
    status = 200
    while time.monotonic() < deadline:
        resp = httpx.post(stack.base + "/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                          json={"model": "sim-small", "messages": [{"role": "user", "content": "x"}]})
        status = resp.status_code
        if status == 401:
            assert "revoked" in resp.json()["error"]["message"]
            break
        time.sleep(0.2)
    assert status == 401
    again = bastion("keys", "revoke", "--config", str(stack.config), "cli-test", check=False)
    assert again.returncode != 0 and "no active key" in again.stderr


def test_logs_filters_and_formats(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.acme_key, max_retries=0)
    session = f"cli-logs-{time.time_ns()}"
    r = client.chat.completions.with_raw_response.create(
        model="sim-small", messages=[{"role": "user", "content": "log me"}], extra_headers={"x-bastion-session": session}
    )
    rid = r.headers["x-bastion-request-id"]
    _wait_logged(stack, rid)
    lines = bastion("logs", "--config", str(stack.config), "--session", session, "--json").stdout.splitlines()
    assert len(lines) == 1
    rec = orjson.loads(lines[0])
    assert rec["id"] == rid and rec["tenant"] == "acme" and rec["user"] == "alice"
    assert "request" not in rec
    with_bodies = orjson.loads(bastion("logs", "--config", str(stack.config), "--session", session, "--json",
                                       "--bodies").stdout)
    assert with_bodies["request"]["messages"][0]["content"] == "log me"
    table = bastion("logs", "--config", str(stack.config), "--tenant", "acme", "--since", "1h").stdout
    assert rid in table and table.splitlines()[0].split()[:3] == ["id", "time", "tenant"]
    one = orjson.loads(bastion("logs", "--config", str(stack.config), "--id", rid).stdout)
    assert one["response"]["choices"][0]["message"]["content"]
    bad = bastion("logs", "--config", str(stack.config), "--since", "yesterday", check=False)
    assert bad.returncode != 0 and "duration like 30m" in bad.stderr


def test_replay_identical_then_diff_after_model_version_change(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.key, max_retries=0)
    r = client.chat.completions.with_raw_response.create(
        model="sim-small", seed=7, temperature=0.7, messages=[{"role": "user", "content": "tell me a story"}], stream=False
    )
    rid = r.headers["x-bastion-request-id"]
    _wait_logged(stack, rid)
    same = orjson.loads(bastion("replay", "--config", str(stack.config), rid, "--json").stdout)
    assert same["identical"] is True and same["diff"] == ""
    assert same["replay"]["model"] == same["original"]["model"]
    # the replay itself is logged, tagged with the original's id
    _wait_logged(stack, same["replay_id"])
    assert stack.rows("id = ?", (same["replay_id"],))[0]["session"] == f"replay:{rid}"

    cfg = httpx.get(stack.sim.url + "/sim/config").json()
    old_version = cfg.get("model_version")
    httpx.post(stack.sim.url + "/sim/config", json={"model_version": "2099-01-01", "system_fingerprint": "fp_new"})
    try:
        changed = orjson.loads(bastion("replay", "--config", str(stack.config), rid, "--json").stdout)
        assert changed["identical"] is False
        assert changed["replay"]["model"].endswith("2099-01-01")
        assert changed["replay"]["system_fingerprint"] == "fp_new"
        assert changed["diff"].startswith("--- original")
        human = bastion("replay", "--config", str(stack.config), rid).stdout
        assert "output       differs" in human and "fp_new" in human
    finally:
        httpx.post(stack.sim.url + "/sim/config", json={"model_version": old_version,
                                                        "system_fingerprint": cfg.get("system_fingerprint")})


def test_replay_of_a_streamed_anthropic_request(stack: Stack) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=stack.base, api_key=stack.key, max_retries=0)
    with client.messages.stream(model="sim-claude", max_tokens=40, extra_body={"temperature": 0},
                                messages=[{"role": "user", "content": "hello"}]) as s:
        final = s.get_final_message()
        rid = s.response.headers["x-bastion-request-id"]
    assert final.content
    _wait_logged(stack, rid)
    res = orjson.loads(bastion("replay", "--config", str(stack.config), rid, "--json").stdout)
    assert res["identical"] is True, res["diff"]


def test_replay_unknown_id(stack: Stack) -> None:
    p = bastion("replay", "--config", str(stack.config), "req_nope", check=False)
    assert p.returncode == 1 and "no logged request" in p.stderr


def test_config_check_good_and_bad(stack: Stack, tmp_path: Path) -> None:
    ok = bastion("config", "check", str(stack.config))
    assert "OK" in ok.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: -1\nmodels:\n  m:\n    deployments: [{provider: ghost, model: x}]\n")
    p = bastion("config", "check", str(bad), check=False)
    assert p.returncode == 2
    assert f"{bad}:2: server.port" in p.stderr
