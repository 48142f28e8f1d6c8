"""Fuzz of the three model endpoints (hardening issue): thousands of almost-valid, random and non-JSON bodies
to POST /v1/chat/completions, /v1/messages and /v1/embeddings of a real gateway in front of a healthy
simulator. For every body: no 5xx, no stack trace in the gateway's output, a well-formed answer (a JSON
error body in the client's dialect, or a whole SSE stream), nesting past server.max_json_depth is a 400
request_too_complex; at the end the request log holds exactly one row per request and the writer is alive.

``BASTION_FUZZ_EXAMPLES`` sets the bodies per endpoint (default 5,000, the CI size; ``make fuzz`` runs more).
The runs are derandomized, the same bodies every time, unless ``BASTION_FUZZ_SEED=N`` picks other ones.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from tests.procs import Proc, create_key, start_gateway, start_sim
from tests.security.fuzz_bodies import (
    CHAT_FIELDS,
    CHAT_SEED,
    EMBED_FIELDS,
    EMBEDDINGS_SEED,
    MESSAGES_FIELDS,
    MESSAGES_SEED,
    PROMPT_YAML,
    Sent,
    bodies,
)

EXAMPLES = int(os.environ.get("BASTION_FUZZ_EXAMPLES", "5000"))
SEED = os.environ.get("BASTION_FUZZ_SEED")  # other bodies than CI's: any integer (CI's run is derandomized)
MAX_BODY = 200_000
MAX_DEPTH = 64
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=SEED is None, database=None,
                print_blob=False, phases=[Phase.explicit, Phase.generate, Phase.shrink],
                suppress_health_check=list(HealthCheck))

GUARDS_STRICT = """
      input: {action: block, scan: all}
      untrusted: {marking: datamark, tool_results: true}
      leak: {action: block, fuzzy: block}
      output: {secrets: block, pii: redact, images: redact, links: redact, html: redact}
      json: {action: block, repair: true}
      refusal: {action: fallback, fallback: [sim-small]}
      tools: {action: block, irreversible: [lookup], hold_when: always}"""
GUARDS_FLAG = """
      input: {action: flag, scan: all}
      output: {secrets: flag, pii: flag, images: flag, links: flag, html: flag}
      json: {action: flag}
      refusal: {action: flag}
      tools: {action: flag, irreversible: [lookup]}"""


def _gateway_yaml(sim_url: str, store: Path, prompts: Path) -> str:
    # guards at their defaults on sim-small and sim-claude; every guard on (blocking, or flagging) on the
    # guarded aliases; the exact response cache on sim-small, sim-claude and sim-embed (seeded and
    # temperature-0 seeds repeat: hits are replayed, streamed too). The simulator is healthy and there is one
    # attempt: any 5xx is the gateway's bug, but for the 504 cache_miss asked for with only-if-cached.
    return f"""
server: {{port: 0, max_body_bytes: {MAX_BODY}, max_json_depth: {MAX_DEPTH}}}
prompts: {{dir: "{prompts}"}}
store: {{url: "sqlite:///{store}", flush_interval_ms: 50}}
providers:
  sim: {{type: sim, base_url: "{sim_url}/v1"}}
  sim-anthropic: {{type: anthropic, base_url: "{sim_url}", api_key_env: SIM_ANTHROPIC_KEY}}
models:
  sim-small:
    deployments: [{{provider: sim, model: sim-small}}]
    cache: {{enabled: true}}
  sim-claude:
    deployments: [{{provider: sim-anthropic, model: sim-claude}}]
    cache: {{enabled: true}}
  guarded:
    deployments: [{{provider: sim, model: sim-small}}]
    guards:{GUARDS_STRICT}
  guarded-claude:
    deployments: [{{provider: sim-anthropic, model: sim-claude}}]
    guards:{GUARDS_FLAG}
  sim-embed:
    kind: embedding
    deployments: [{{provider: sim, model: sim-embed}}]
    cache: {{enabled: true}}
tenants:
  default: {{}}
routing:
  retry: {{max_attempts: 1}}
  breaker: {{enabled: false}}
"""


@dataclass
class FuzzStack:
    sim: Proc
    gateway: Proc
    store: Path
    key: str
    client: httpx.Client
    sent: dict[str, Sent] = field(default_factory=dict)  # request id -> what was sent (bytes cut to 3,000)
    scanned: int = 0  # gateway output lines already searched for tracebacks
    statuses: Counter[str] = field(default_factory=Counter)


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    d = tmp_path_factory.mktemp("fuzz")
    sim_cfg = d / "sim.yaml"
    sim_cfg.write_text("seed: 7\noutput_tokens: {min: 1, max: 4}\n")  # deterministic, short answers
    sim = start_sim(sim_cfg)
    store = d / "bastion.db"
    config = d / "bastion.yaml"
    prompts = d / "prompts"
    prompts.mkdir()
    (prompts / "fuzz.yaml").write_text(PROMPT_YAML)
    config.write_text(_gateway_yaml(sim.url, store, prompts))
    key = create_key(config)
    gw = start_gateway(config)
    client = httpx.Client(base_url=gw.url, timeout=60, headers={"authorization": f"Bearer {key}"})
    try:
        yield FuzzStack(sim, gw, store, key, client)
    finally:
        client.close()
        gw.stop()
        sim.stop()


# ---- what every answer must be -----------------------------------------------------------------------


def _kept(sent: Sent) -> Sent:
    """What is kept of a request once sent (``make fuzz`` sends 150,000): enough to show and find it again."""
    raw = sent.raw if len(sent.raw) <= 3100 else sent.raw[:3000] + b"...(%d bytes)" % len(sent.raw)
    return Sent(raw, None, sent.pristine, sent.headers)


def _describe(sent: Sent) -> str:
    return f"request body {_kept(sent).raw!r} headers {list(sent.headers)}"


def _depth(value: Any) -> int:
    """Containers nested in ``value``, the way server.max_json_depth counts (the top-level object is 1)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, dict | list):
            deepest = max(deepest, d)
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest


def _expected(sent: Sent) -> tuple[int | None, str | None]:
    """The status and error code the body must get from its bytes alone (None: anything below 500)."""
    if len(sent.raw) > MAX_BODY:
        return 413, "request_too_large"
    try:
        parsed = orjson.loads(sent.raw)
    except orjson.JSONDecodeError as e:
        return 400, "request_too_complex" if "recursion" in str(e) else "invalid_json"
    if _depth(parsed) > MAX_DEPTH:
        return 400, "request_too_complex"
    if sent.pristine:
        return 200, None
    return None, None


def _error_of(body: Any, dialect: str) -> dict[str, Any]:
    if dialect == "anthropic":
        assert isinstance(body, dict) and body.get("type") == "error", body
    err = body.get("error") if isinstance(body, dict) else None
    assert isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"], body
    return err


def _check_stream(data: bytes, dialect: str) -> None:
    """A whole SSE stream: every event JSON, ending with [DONE] / message_stop or an error event that is not
    an internal error."""
    events = [e for e in data.split(b"\n\n") if e.strip()]
    assert events, "an empty stream"
    last: Any = None
    last_type = None
    for ev in events:
        lines = ev.split(b"\n")
        payload = b"".join(line[6:] for line in lines if line.startswith(b"data: "))
        kind = next((line[7:].decode() for line in lines if line.startswith(b"event: ")), None)
        last = payload if payload == b"[DONE]" else orjson.loads(payload)
        last_type = kind
        if isinstance(last, dict) and "error" in last:
            err = _error_of(last, dialect)
            assert err.get("code") != "internal_error" and err.get("type") != "api_error", last
    if dialect == "openai":
        assert last == b"[DONE]" or (isinstance(last, dict) and "error" in last), f"stream ends with {last!r}"
    else:
        assert last_type in ("message_stop", "error"), f"stream ends with event {last_type}: {last!r}"


_TRACE_MARKS = ("Traceback", "unexpected error", "relay failed", "Exception in ")


def _culprits(fz: FuzzStack, lines: list[str]) -> list[str]:
    """The requests a stretch of gateway output names (a logged error carries its request id)."""
    text = "".join(lines)
    return [_describe(s) for rid, s in fz.sent.items() if rid in text]


def _tracebacks(fz: FuzzStack) -> list[str]:
    lines = fz.gateway.output[fz.scanned:]
    fz.scanned += len(lines)
    return [line for line in lines if any(m in line for m in _TRACE_MARKS)]


def _exchange(fz: FuzzStack, path: str, dialect: str, sent: Sent) -> None:
    headers = {"content-type": "application/json", **dict(sent.headers)}
    try:
        r = fz.client.post(path, content=sent.raw, headers=headers)
    except httpx.HTTPError as e:
        raise AssertionError(f"{type(e).__name__}: {e} for {_describe(sent)}") from None
    fz.statuses[f"{path} {r.status_code}"] += 1
    rid = r.headers.get("x-bastion-request-id")
    assert rid, f"{r.status_code} without x-bastion-request-id for {_describe(sent)}"
    assert rid not in fz.sent, f"request id {rid} answered twice"
    fz.sent[rid] = _kept(sent)
    if r.status_code == 504 and any("only-if-cached" in v for _, v in sent.headers):
        assert orjson.loads(r.content)["error"]["code"] == "cache_miss", r.text
        return
    assert r.status_code < 500, f"{r.status_code} {r.text[:2000]} for {_describe(sent)}"
    status, code = _expected(sent)
    if status is not None:
        assert r.status_code == status, \
            f"want {status}, got {r.status_code} {r.text[:2000]} for {_describe(sent)}"
    try:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            assert r.status_code == 200
            _check_stream(r.content, dialect)
        else:
            body = orjson.loads(r.content)
            if r.status_code >= 400:
                err = _error_of(body, dialect)
                if code is not None:
                    assert err.get("code") == code or code in r.text, err
                if status is None:
                    assert "request_too_complex" not in r.text, f"within {MAX_DEPTH} levels: {err}"
    except (AssertionError, orjson.JSONDecodeError) as e:
        answer = f"{r.status_code} {r.content[:2000]!r}"
        raise AssertionError(f"{e} in the answer {answer} to {_describe(sent)}") from None
    traces = _tracebacks(fz)
    assert not traces, f"the gateway printed {traces} for {_culprits(fz, traces) or [_describe(sent)]}"


# ---- the end of a run: every request logged once, the writer alive, no trace -------------------------


def _logged_ids(store: Path) -> set[str]:
    conn = sqlite3.connect(store)
    try:
        return {row[0] for row in conn.execute("SELECT id FROM requests")}
    finally:
        conn.close()


def _settle(fz: FuzzStack, path: str) -> None:
    sent = set(fz.sent)
    deadline = time.monotonic() + 60
    logged = _logged_ids(fz.store)
    while not sent <= logged and time.monotonic() < deadline:
        time.sleep(0.1)
        logged = _logged_ids(fz.store)
    time.sleep(0.3)  # a writer that would add rows twice has had its chance
    logged = _logged_ids(fz.store)
    missing, extra = sent - logged, logged - sent
    examples = [_describe(fz.sent[i]) for i in sorted(missing)[:3]]
    assert not missing, f"{len(missing)} requests never logged, e.g. {examples}"
    assert not extra, f"{len(extra)} log rows for requests never answered: {sorted(extra)[:5]}"
    ready = fz.client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["log_writer"] is True, ready.text
    time.sleep(0.2)
    out = "".join(fz.gateway.output)
    if "Traceback" in out:
        culprits = _culprits(fz, [out])[:3]
        raise AssertionError(f"the gateway printed a traceback:\n{out[-6000:]}\nfor {culprits}")
    print(f"\n{path}: {sum(v for k, v in fz.statuses.items() if k.startswith(path + ' '))} bodies:",
          {k: v for k, v in sorted(fz.statuses.items()) if k.startswith(path + " ")})


def _run(fz: FuzzStack, path: str, dialect: str, strategy: st.SearchStrategy[Sent]) -> None:
    before = len(fz.sent)

    @FUZZ
    @given(strategy)
    def one(sent: Sent) -> None:
        _exchange(fz, path, dialect, sent)

    (one if SEED is None else seed(int(SEED))(one))()
    assert len(fz.sent) - before >= EXAMPLES
    _settle(fz, path)


ENDPOINTS: dict[str, tuple[str, Callable[[], st.SearchStrategy[Sent]]]] = {
    "/v1/chat/completions": ("openai", lambda: bodies(CHAT_SEED, CHAT_FIELDS, MESSAGES_SEED)),
    "/v1/messages": ("anthropic", lambda: bodies(MESSAGES_SEED, MESSAGES_FIELDS, CHAT_SEED)),
    "/v1/embeddings": ("openai", lambda: bodies(EMBEDDINGS_SEED, EMBED_FIELDS, CHAT_SEED)),
}


@pytest.mark.parametrize("path", list(ENDPOINTS))
def test_fuzzed_bodies_get_a_clear_answer_and_one_log_row(fuzz: FuzzStack, path: str) -> None:
    dialect, strategy = ENDPOINTS[path]
    _run(fuzz, path, dialect, strategy())
