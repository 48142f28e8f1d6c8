"""Finding: provider API keys reached tenants and the request log.

Upstreams quote the key they were sent (OpenAI's 401 masks it, some OpenAI-compatible servers echo it whole
or echo the Authorization header), and a password in a provider's ``base_url`` showed in connection errors.
A real fake upstream (aiohttp, in a thread) answers with each of those; a real gateway process, whose
providers read their keys from environment variables, stands in front; the official ``openai`` SDK and raw
httpx call it. No key, masked key or password may reach the client (bodies, headers, streams), the SQLite
request log (any column), the gateway's own output, ``bastion replay``, ``bastion config check`` or
``/metrics``. The scrubber's patterns are unit-tested at the end.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import orjson
import pytest
from aiohttp import web

from bastion.scrub import MARK, Scrubber, config_secrets, safe_url, split_userinfo
from tests.procs import GATEWAY_ENV, Proc, create_key, start_gateway

OPENAI_KEY = "sk-proj-" + secrets.token_urlsafe(36) + "Qz7W"
ANTHROPIC_KEY = "sk-ant-api03-" + secrets.token_urlsafe(40) + "Aa9Z"
COMPAT_KEY = secrets.token_hex(20) + "Hq4R"  # no known shape: only the configured-key scrubbing can find it
HEADER_TOKEN = "hdr" + secrets.token_hex(12) + "Pp3K"
PASSWORD = "s3cretpass"
ENV = {"LEAK_OPENAI_KEY": OPENAI_KEY, "LEAK_ANTHROPIC_KEY": ANTHROPIC_KEY, "LEAK_COMPAT_KEY": COMPAT_KEY}


def _fragments(key: str) -> list[str]:
    """The key and what a masked form would keep of it."""
    return [key, key[:16], key[-12:], key[-4:], "****" + key[-4:]]


FORBIDDEN = [f for k in (OPENAI_KEY, ANTHROPIC_KEY, COMPAT_KEY) for f in _fragments(k)] + [
    HEADER_TOKEN, HEADER_TOKEN[-4:], PASSWORD]


def assert_clean(text: str, where: str) -> None:
    leaked = [f for f in FORBIDDEN if f in text]
    assert not leaked, f"{where} leaked {leaked!r}:\n{text[:2000]}"


# ---- the fake upstream: says what real upstreams say ----------------------------------------------------


def _openai_mask(key: str) -> str:
    return key[:8] + "*" * (len(key) - 12) + key[-4:]  # as api.openai.com shows it


def _sse(*events: bytes) -> web.Response:
    return web.Response(body=b"".join(events), content_type="text/event-stream")


def _chunk(data: dict) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _event(kind: str, data: dict) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def chat(request: web.Request) -> web.Response:
    key = request.headers.get("authorization", "").removeprefix("Bearer ")
    model = (await request.json())["model"]
    if model == "openai-401":
        return web.json_response(status=401, data={"error": {
            "message": f"Incorrect API key provided: {_openai_mask(key)}. You can find your API key at "
                       "https://platform.openai.com/account/api-keys.",
            "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})
    if model == "echo-key":
        return web.json_response(status=401, data={"error": {
            "message": f"Incorrect API key provided: {key}.", "type": "invalid_request_error", "code": "invalid_api_key"}})
    if model == "echo-suffix":
        return web.json_response(status=401, data={"error": {
            "message": f"The key ****{key[-4:]} was revoked (key …{key[-4:]}; also seen as {key[:8]}...{key[-4:]})"}})
    if model == "echo-headers":
        return web.json_response(status=403, data={"error": {
            "message": f"forbidden; request headers were {dict(request.headers)}"}})
    if model == "plain-500":
        return web.Response(status=500, content_type="text/plain",
                            text=f"AuthError: key={key} rejected by backend\nAuthorization: Bearer {key}\n")
    created = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model}
    token = {**created, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hello"}}]}
    error = {"error": {"message": f"stream aborted: invalid api key {key}", "type": "invalid_request_error"}}
    if model == "stream-mid":
        return _sse(_chunk(token), _chunk(error))
    if model == "stream-first":
        return _sse(_chunk(error))
    return web.json_response(status=404, data={"error": {"message": f"no behaviour {model}"}})


async def messages(request: web.Request) -> web.Response:
    key = request.headers.get("x-api-key", "")
    model = (await request.json())["model"]
    if model == "claude-401":
        return web.json_response(status=401, data={
            "type": "error", "error": {"type": "authentication_error", "message": f"invalid x-api-key: {key}"}})
    if model == "claude-stream-mid":
        usage = {"input_tokens": 3, "output_tokens": 0}
        message = {"id": "msg_1", "type": "message", "role": "assistant", "model": model, "content": [],
                   "stop_reason": None, "usage": usage}
        return _sse(
            _event("message_start", {"type": "message_start", "message": message}),
            _event("content_block_start", {"type": "content_block_start", "index": 0,
                                           "content_block": {"type": "text", "text": ""}}),
            _event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                           "delta": {"type": "text_delta", "text": "Hello"}}),
            _event("error", {"type": "error", "error": {"type": "overloaded_error",
                                                        "message": f"overloaded while serving key {key}"}}),
        )
    return web.json_response(status=404, data={"type": "error", "error": {"type": "not_found_error", "message": model}})


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/messages", messages)
    started: list[str] = []
    ready, done = threading.Event(), threading.Event()

    def run() -> None:
        async def main() -> None:
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            started.append(f"http://127.0.0.1:{port}")
            ready.set()
            while not done.is_set():
                await asyncio.sleep(0.05)
            await runner.cleanup()

        asyncio.run(main())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield started[0]
    done.set()
    thread.join(10)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ALIASES = {
    "o-401": ("leaky-openai", "openai-401"),
    "o-echo": ("leaky-openai", "echo-key"),
    "c-echo": ("leaky-compat", "echo-key"),
    "c-suffix": ("leaky-compat", "echo-suffix"),
    "c-headers": ("leaky-compat", "echo-headers"),
    "c-500": ("leaky-compat", "plain-500"),
    "o-stream-mid": ("leaky-openai", "stream-mid"),
    "c-stream-first": ("leaky-compat", "stream-first"),
    "a-401": ("leaky-anthropic", "claude-401"),
    "a-stream-mid": ("leaky-anthropic", "claude-stream-mid"),
    "locked": ("locked", "anything"),
    "locked-keyed": ("locked-keyed", "anything"),
}


@dataclass
class Gateway:
    proc: Proc
    config: Path
    store: Path
    key: str
    ids: list[str]

    @property
    def base(self) -> str:
        return self.proc.url


@pytest.fixture(scope="module")
def gateway(upstream: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    d = tmp_path_factory.mktemp("leaks")
    store = d / "bastion.db"
    locked_url = f"http://bastion:{PASSWORD}@127.0.0.1:{_closed_port()}/v1"
    models = "\n".join(f"  {alias}:\n    deployments: [{{provider: {p}, model: {m}}}]"
                       for alias, (p, m) in ALIASES.items())
    config = d / "bastion.yaml"
    config.write_text(f"""
server: {{port: 0}}
store: {{url: "sqlite:///{store}", flush_interval_ms: 50}}
providers:
  leaky-openai: {{type: openai, base_url: "{upstream}/v1", api_key_env: LEAK_OPENAI_KEY}}
  leaky-compat:
    type: openai
    base_url: "{upstream}/v1"
    api_key_env: LEAK_COMPAT_KEY
    headers: {{x-upstream-token: "{HEADER_TOKEN}"}}
  leaky-anthropic: {{type: anthropic, base_url: "{upstream}", api_key_env: LEAK_ANTHROPIC_KEY}}
  locked: {{type: openai, base_url: "{locked_url}", connect_timeout_s: 2}}
  locked-keyed: {{type: openai, base_url: "{locked_url}", api_key_env: LEAK_OPENAI_KEY, connect_timeout_s: 2}}
models:
{models}
routing:
  retry: {{max_attempts: 2, backoff_base_ms: 1, backoff_max_ms: 5}}
  breaker: {{enabled: false}}
""")
    key = create_key(config)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in ENV.items():
            mp.setenv(name, value)
        proc = start_gateway(config)
    yield Gateway(proc, config, store, key, [])
    proc.stop()


@pytest.fixture(scope="module")
def sdk(gateway: Gateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=gateway.base + "/v1", api_key=gateway.key, max_retries=0, timeout=30) as client:
        yield client


def _messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": "hi"}]


def _response_text(r: httpx.Response) -> str:
    return r.text + "\n" + "\n".join(f"{k}: {v}" for k, v in r.headers.items())


# ---- through the official SDK ------------------------------------------------------------------------------

# alias -> what the client must still be told (the upstream's message survives, minus the key)
SAYS = {
    "o-401": "Incorrect API key provided: [redacted]",
    "o-echo": "Incorrect API key provided: [redacted]",
    "c-echo": "Incorrect API key provided: [redacted]",
    "c-suffix": "was revoked",
    "c-headers": "forbidden; request headers were",
    "c-500": "rejected by backend",
    "a-401": "invalid x-api-key: [redacted]",
    "locked": "could not connect",
    "locked-keyed": "could not connect",
}


@pytest.mark.parametrize("alias", list(SAYS))
def test_sdk_error_carries_no_key(alias: str, sdk: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        sdk.chat.completions.create(model=alias, messages=_messages())  # type: ignore[arg-type]
    r = ei.value.response
    gateway.ids.append(r.headers["x-bastion-request-id"])
    assert r.status_code in (401, 403, 429, 500, 502, 503), r.text
    assert "internal error" not in r.text  # URL credentials with an API key used to be a ValueError → 500
    assert SAYS[alias] in r.text
    assert_clean(_response_text(r) + "\n" + str(ei.value), f"{alias} (SDK)")


def test_url_credentials_are_sent_as_basic_auth_but_never_shown(upstream: str, tmp_path: Path) -> None:
    """The password goes to the upstream (as Basic auth), just not into any message."""
    from bastion.config.model import ProviderConfig
    from bastion.providers import build_provider

    seen: list[str] = []

    async def run() -> None:
        app = web.Application()

        async def record(request: web.Request) -> web.Response:
            seen.append(request.headers.get("authorization", ""))
            return web.json_response(status=401, data={"error": {"message": f"bad password for {request.url}"}})

        app.router.add_post("/v1/chat/completions", record)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        provider = build_provider("p", ProviderConfig(type="openai", base_url=f"http://u:{PASSWORD}@127.0.0.1:{port}/v1"),
                                  Scrubber())
        try:
            assert PASSWORD not in provider.chat_url("m")
            with pytest.raises(Exception) as ei:
                await provider.post(provider.chat_url("m"), b"{}", deployment="d")
            assert PASSWORD not in str(ei.value)
        finally:
            await provider.close()
            await runner.cleanup()

    asyncio.run(run())
    assert seen == ["Basic " + base64.b64encode(f"u:{PASSWORD}".encode()).decode()]


# ---- raw HTTP, both dialects, streams ---------------------------------------------------------------------


@pytest.mark.parametrize("alias", ["a-401", "c-headers", "c-500", "locked"])
def test_raw_anthropic_dialect_error_carries_no_key(alias: str, gateway: Gateway) -> None:
    r = httpx.post(gateway.base + "/v1/messages", timeout=30, headers={"x-api-key": gateway.key},
                   json={"model": alias, "max_tokens": 10, "messages": _messages()})
    gateway.ids.append(r.headers["x-bastion-request-id"])
    assert r.status_code >= 400 and r.json()["type"] == "error"
    assert SAYS[alias] in r.text
    assert_clean(_response_text(r), f"{alias} (anthropic dialect)")


@pytest.mark.parametrize(("path", "alias"), [
    ("/v1/chat/completions", "o-stream-mid"),
    ("/v1/chat/completions", "a-stream-mid"),  # Anthropic upstream, translated for an OpenAI client
    ("/v1/messages", "a-stream-mid"),
    ("/v1/messages", "o-stream-mid"),
])
def test_mid_stream_error_event_carries_no_key(path: str, alias: str, gateway: Gateway) -> None:
    body = {"model": alias, "max_tokens": 10, "messages": _messages(), "stream": True}
    with httpx.stream("POST", gateway.base + path, json=body, timeout=30,
                      headers={"authorization": f"Bearer {gateway.key}"}) as r:
        text = r.read().decode()
    gateway.ids.append(r.headers["x-bastion-request-id"])
    assert r.status_code == 200 and text.index("chunk" if "chat" in path else "message_start") < text.index("error")
    assert "sent an error in the middle of the stream" in text and MARK in text
    assert_clean(_response_text(r) + text, f"{alias} stream via {path}")


def test_sdk_stream_error_carries_no_key(sdk: openai.OpenAI, gateway: Gateway) -> None:
    got = []
    with pytest.raises(openai.APIError) as ei:
        stream = sdk.chat.completions.create(model="o-stream-mid", messages=_messages(), stream=True)  # type: ignore[arg-type]
        for chunk in stream:
            got.append(chunk)
    assert got  # the error came in the middle of the stream, after chunks had reached the client
    assert "middle of the stream" in str(ei.value)
    assert_clean(str(ei.value) + repr(ei.value.body), "SDK stream error")


def test_error_before_first_token_carries_no_key(sdk: openai.OpenAI, gateway: Gateway) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        sdk.chat.completions.create(model="c-stream-first", messages=_messages(), stream=True)  # type: ignore[arg-type]
    r = ei.value.response
    gateway.ids.append(r.headers["x-bastion-request-id"])
    assert "before the first token" in r.text and MARK in r.text
    assert_clean(_response_text(r), "error before the first token")


# ---- what stays behind: the log, the process output, the CLI, metrics -------------------------------------


def test_request_log_holds_no_key(gateway: Gateway) -> None:
    """Runs after the tests above (file order): every column of every row they left."""
    assert len(gateway.ids) >= 15
    from tests.procs import wait_log_row

    for rid in gateway.ids:
        wait_log_row(gateway.store, rid)
    conn = sqlite3.connect(gateway.store)
    try:
        tables = [t for (t,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        dump = "\n".join(repr(row) for t in tables for row in conn.execute(f"SELECT * FROM {t}"))  # noqa: S608
        attempts = [orjson.loads(a) for (a,) in conn.execute("SELECT attempts FROM requests") if a]
    finally:
        conn.close()
    assert "Incorrect API key provided: [redacted]" in dump  # the upstream's message is kept, not dropped
    assert sum(1 for row in attempts for a in row if a.get("error")) >= len(gateway.ids)
    assert_clean(dump, "the request log")


def test_gateway_output_holds_no_key(gateway: Gateway) -> None:
    output = "".join(gateway.proc.output)
    assert "'locked-keyed': base_url carries credentials" in output  # the startup warning names the provider...
    assert_clean(output, "the gateway's stdout/stderr")  # ...not the password


def test_metrics_hold_no_key(gateway: Gateway) -> None:
    r = httpx.get(gateway.base + "/metrics", timeout=10)
    assert r.status_code == 200
    assert_clean(r.text, "/metrics")


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bastion.cli", *args], capture_output=True, text=True, timeout=60,
                          env={**__import__("os").environ, **GATEWAY_ENV, **ENV})


def test_replay_output_holds_no_key(gateway: Gateway, sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.APIStatusError) as ei:
        sdk.chat.completions.create(model="c-echo", messages=_messages())  # type: ignore[arg-type]
    rid = ei.value.response.headers["x-bastion-request-id"]
    from tests.procs import wait_log_row

    wait_log_row(gateway.store, rid)
    out = _cli("replay", rid, "--config", str(gateway.config))
    assert out.returncode != 0 and "Incorrect API key provided: [redacted]" in out.stderr, out.stderr
    assert_clean(out.stdout + out.stderr, "bastion replay")


def test_config_check_output_holds_no_password(gateway: Gateway) -> None:
    out = _cli("config", "check", str(gateway.config))
    assert out.returncode == 0, out.stderr
    assert_clean(out.stdout + out.stderr, "bastion config check")


# ---- the scrubber itself ----------------------------------------------------------------------------------


def test_configured_keys_and_their_masked_forms_are_removed() -> None:
    key = "Zt8qWm3kP0xLr7Vb2NcY"
    s = Scrubber([key])
    for text in (f"bad key {key}!", f"key ****{key[-4:]} revoked", f"key …{key[-4:]}", f"key {key[:8]}...{key[-4:]}",
                 f"key {key[:8]}****", f"url ?x={key}&y=1", f"{{'k': '{key}'}}"):
        out = s(text)
        assert key not in out and key[-4:] not in out and MARK in out, (text, out)
    # the text around stays readable
    assert s(f"Incorrect API key provided: {key}. See the docs.") == f"Incorrect API key provided: {MARK}. See the docs."


@pytest.mark.parametrize(("text", "gone"), [
    ("Incorrect API key provided: sk-proj-abc123def456ghi789jkl012.", "abc123def456"),
    ("Incorrect API key provided: sk-proj-********************************************wxyz.", "wxyz"),
    ("key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWxYz0123 rejected", "AbCdEfGh"),
    ("sk-...wxyz is not valid", "wxyz"),
    ("Authorization: Bearer abc.def-123_ghijk", "abc.def-123"),
    ("{'Authorization': 'Bearer tok123456789'}", "tok123456789"),
    ('{"x-api-key": "k-999-secret-value"}', "k-999"),
    ("api-key: 0123456789abcdef0123456789abcdef", "0123456789abcdef"),
    ("GET https://example.com/v1/models?key=AIzaSyA-1234567890abcdefghijklmnopqrstu&alt=json", "AIzaSy"),
    ("https://api.example.com/v1?api_key=shhh-1234&x=1", "shhh-1234"),
    ("api_key=shhh-1234 was refused", "shhh-1234"),
    ("aws AKIAIOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE"),
    ("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U expired",
     "dozjgNryP4J3"),
    ("could not connect to http://admin:hunter2@10.0.0.5:8000/v1/chat", "hunter2"),
    ("groq says gsk_ABCDEFGHIJKLMNOPQRSTUVWXyz0123 is invalid", "gsk_ABCDEF"),
])
def test_generic_credential_shapes_are_removed(text: str, gone: str) -> None:
    out = Scrubber()(text)
    assert gone not in out and MARK in out, out


def test_url_userinfo_is_replaced_and_the_host_kept() -> None:
    out = Scrubber()("could not connect to http://admin:hunter2@10.0.0.5:8000/v1/chat: refused")
    assert out == f"could not connect to http://{MARK}@10.0.0.5:8000/v1/chat: refused"
    assert safe_url("https://u:p@host:1/v1") == f"https://{MARK}@host:1/v1"
    assert split_userinfo("https://u:p%40ss@host/v1") == ("https://host/v1", "u", "p@ss")


@pytest.mark.parametrize("text", [
    "skip-level meetings are task-oriented; the risk-free sk-learn demo ran",
    "deployment 'openai/gpt-4o' answered 429: Rate limit reached for requests. Please try again in 20ms.",
    "The bearer of this message is authorized to ask; authorization failed for tenant acme.",
    "max_tokens must be at most 4096 (the model's limit), got 8192; see https://platform.openai.com/docs",
    "the password field is required; api keys are listed at /admin/keys",
    "**bold** and 2*3*4 stay; a file at C:\\tmp\\x.txt; e-mail me at ops@example.com",
    "This model's maximum context length is 128000 tokens. However, your messages resulted in 130512 tokens.",
])
def test_ordinary_prose_is_left_alone(text: str) -> None:
    assert Scrubber(["Zt8qWm3kP0xLr7Vb2NcY"])(text) == text


def test_config_secrets_come_from_env_headers_and_urls() -> None:
    from bastion.config.loader import parse_config

    config = parse_config(f"""
providers:
  a: {{type: openai, api_key_env: K_A}}
  b: {{type: openai, base_url: "https://u:{PASSWORD}@h/v1", headers: {{x-trace: "not-a-secret-at-all", authorization: "Bearer tok-abcdefgh1"}}}}
  c: {{type: anthropic, api_key_env: K_MISSING}}
models: {{m: {{deployments: [{{provider: a, model: x}}]}}}}
""")
    found = config_secrets(config, {"K_A": "value-of-key-a-123"})
    basic = base64.b64encode(f"u:{PASSWORD}".encode()).decode()
    assert found == {"value-of-key-a-123", PASSWORD, basic, "Bearer tok-abcdefgh1", "tok-abcdefgh1"}


def test_a_long_message_is_cut_where_no_part_of_a_secret_is_left() -> None:
    """Scrubbing shortens a text: a key cut in half at the scan limit must not slide into the excerpt."""
    key = secrets.token_hex(60)  # no known shape: only its whole form is known
    text = " ".join([key] * 80)  # 9,700 characters: the scan limit falls inside a copy
    out = Scrubber([key]).excerpt(text, 1000)
    assert key[:8] not in out and key[-8:] not in out and out.startswith(MARK)
    assert Scrubber([key]).excerpt("short " + key, 1000) == "short " + MARK
