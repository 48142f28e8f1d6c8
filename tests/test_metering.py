"""Cost end to end: prices and cost per request, budgets that cannot be raced, quotas at their boundaries,
alerts delivered exactly once to a webhook that fails its first delivery, and the reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import openai
import pytest

from tests.procs import Proc, create_key, log_rows, start_gateway, start_sim, wait_log_row

SIM_YAML = """
profiles:
  slow: {latency: {distribution: fixed, median_ms: 300}}
"""


@dataclass
class Hook:
    """A webhook receiver that fails the first delivery of every alert, then accepts."""

    server: ThreadingHTTPServer
    seen: list[tuple[str, int]] = field(default_factory=list)  # (alert id, status answered)
    bodies: dict[str, dict] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def accepted(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for aid, status in self.seen:
            if status == 200:
                out[aid] = out.get(aid, 0) + 1
        return out


def _hook() -> Hook:
    hook: Hook

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers["content-length"])))
            aid = self.headers["x-bastion-alert-id"]
            assert aid == body["id"]
            first = all(a != aid for a, _ in hook.seen)
            status = 500 if first else 200
            hook.seen.append((aid, status))
            hook.bodies[aid] = body
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook = Hook(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return hook


@dataclass
class Stack:
    sim: Proc
    gw: Proc
    cfg: Path
    store: Path
    keys: dict[str, str]
    hook: Hook

    @property
    def base(self) -> str:
        return self.gw.url

    def post(self, key: str, content: str = "hi", *, model: str = "priced", **extra) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
        return httpx.post(self.base + "/v1/chat/completions", json=body, timeout=60,
                          headers={"authorization": f"Bearer {self.keys[key]}"})

    def rows(self, where: str, args: tuple = ()) -> list[dict]:
        return log_rows(self.store, where, args)

    def row(self, rid: str) -> dict:
        return wait_log_row(self.store, rid)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("metering")
    (d / "sim.yaml").write_text(SIM_YAML)
    sim = start_sim(d / "sim.yaml")
    hook = _hook()
    store = d / "bastion.db"
    cfg = d / "bastion.yaml"
    cfg.write_text(f"""
server: {{port: 0, admin_key_env: TEST_ADMIN_TOKEN}}
store: {{url: 'sqlite:///{store}', flush_interval_ms: 20}}
providers:
  sim: {{type: sim, base_url: {sim.url}/v1}}
  slow: {{type: sim, base_url: {sim.url}/p/slow/v1}}
models:
  priced:      # $1,000 / $2,000 per million tokens: $0.001 per input token, $0.002 per output token
    deployments: [{{provider: sim, model: sim-small, price: {{input: "1000", output: "2000"}}}}]
  slowpriced:
    deployments: [{{provider: slow, model: sim-small, price: {{input: "1000", output: "2000"}}}}]
  table:       # priced from the packaged price table
    deployments: [{{provider: sim, model: sim-small}}]
tenants:
  default: {{}}
  racer: {{}}
  limited: {{}}
  watched: {{}}
  tiny: {{}}
  other: {{}}
limits:
  - {{scope: tenant, match: limited, rpm: 5, window_s: 3}}
  - {{scope: user, tenant: watched, concurrent: 2}}
  - {{scope: key, match: tok, tpm: 200, window_s: 3}}
budgets:
  - {{name: race-cap, scope: tenant, match: racer, limit_usd: "3.00", period: day}}
  - {{name: per-user, scope: user, match: sam, limit_usd: "0.06", period: day}}
  - {{name: watched-soft, scope: tenant, match: watched, limit_usd: "0.05", period: month, mode: soft,
      alert_at: [0.5, 1.0]}}
alerts:
  webhooks: [{{url: "{hook.url}", max_attempts: 4}}]
  outliers: {{enabled: false}}
""")
    keys = {
        "default": create_key(cfg),
        "racer": create_key(cfg, tenant="racer"),
        "limited": create_key(cfg, tenant="limited"),
        "watched": create_key(cfg, tenant="watched", user="wendy"),
        "tiny-sam": create_key(cfg, tenant="tiny", user="sam"),
        "other-sam": create_key(cfg, tenant="other", user="sam"),
    }
    out = subprocess.run([sys.executable, "-m", "bastion.cli", "keys", "create", "--config", str(cfg),
                          "--tenant", "default", "--name", "tok", "--json"], check=True, capture_output=True, text=True)
    keys["tok"] = json.loads(out.stdout)["key"]
    import os
    os.environ["TEST_ADMIN_TOKEN"] = "admin-secret"
    gw = start_gateway(cfg)
    yield Stack(sim, gw, cfg, store, keys, hook)
    gw.stop()
    sim.stop()
    hook.server.shutdown()


def _usage_cost(usage: dict) -> Decimal:
    return Decimal(usage["prompt_tokens"]) * Decimal("0.001") + Decimal(usage["completion_tokens"]) * Decimal("0.002")


# ---- cost per request ------------------------------------------------------------------------------


def test_cost_header_and_log_match_usage_times_price(stack: Stack) -> None:
    r = stack.post("default", "[[sim:tokens=7]] price me", max_tokens=50)
    assert r.status_code == 200
    usage = r.json()["usage"]
    want = _usage_cost(usage)
    assert Decimal(r.headers["x-bastion-cost"]) == want
    row = stack.row(r.headers["x-bastion-request-id"])
    assert row["cost_nusd"] == int(want * 10**9)
    detail = json.loads(row["cost"])
    assert Decimal(detail["usd"]) == want


def test_streamed_call_is_priced_in_the_log(stack: Stack) -> None:
    client = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.keys["default"], max_retries=0)
    stream = client.chat.completions.create(model="priced", stream=True,
                                            messages=[{"role": "user", "content": "[[sim:tokens=9]] s"}])
    for _ in stream:
        pass
    rid = stream.response.headers["x-bastion-request-id"]
    row = stack.row(rid)
    assert row["completion_tokens"] > 0 and row["prompt_tokens"] > 0
    assert row["cost_nusd"] == int(_usage_cost(row) * 10**9)


def test_price_table_prices_the_simulator_model(stack: Stack) -> None:
    r = stack.post("default", model="table")
    assert r.status_code == 200 and Decimal(r.headers["x-bastion-cost"]) > 0


# ---- budgets cannot be raced -----------------------------------------------------------------------


def test_thousand_concurrent_requests_never_overspend_a_hard_budget(stack: Stack) -> None:
    async def run() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=1000)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:
            body = {"model": "slowpriced", "max_tokens": 10, "messages": [{"role": "user", "content": "race"}]}
            return await asyncio.gather(*(
                client.post(stack.base + "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {stack.keys['racer']}"})
                for _ in range(1000)))

    responses = asyncio.run(run())
    ok = [r for r in responses if r.status_code == 200]
    rejected = [r for r in responses if r.status_code != 200]
    assert len(ok) + len(rejected) == 1000 and ok and rejected
    for r in rejected:
        assert r.status_code == 429
        err = r.json()["error"]
        assert err["code"] == "budget_exceeded" and "race-cap" in err["message"] and "resets at" in err["message"]
        assert r.headers["retry-after"] and r.headers["x-bastion-budget"] == "race-cap"
    time.sleep(0.5)
    rows = stack.rows("tenant = 'racer'")
    assert len(rows) == 1000
    admitted = [row for row in rows if row["status"] == 200]
    assert len(admitted) == len(ok) and all(row["cost_nusd"] and row["cost_nusd"] > 0 for row in admitted)
    spent = sum(Decimal(row["cost_nusd"]) for row in admitted) / 10**9
    assert spent <= Decimal("3.00")
    # the budget admitted at least its worst-case share: a request may cost up to (prompt + 10) tokens
    worst = max(Decimal(r["prompt_tokens"]) * Decimal("0.001") + 10 * Decimal("0.002") for r in admitted)
    assert len(ok) >= int(Decimal("3.00") / worst)
    # and it alerted at 50%, 80% and 100%, once each, however many requests crossed each line
    deadline = time.time() + 15

    def race_alerts() -> list[float]:
        return sorted(b["data"]["threshold"] for b in list(stack.hook.bodies.values())
                      if b["data"].get("budget") == "race-cap")

    while time.time() < deadline and len(race_alerts()) < 3:
        time.sleep(0.1)
    assert race_alerts() == [0.5, 0.8, 1.0]


# ---- quotas at their boundaries --------------------------------------------------------------------


def _wait_window_start(window_s: int) -> None:
    """Sleep to just after the next fixed-window boundary."""
    now = time.time()
    time.sleep((int(now // window_s) + 1) * window_s - now + 0.05)


def test_rpm_exactly_at_the_limit_then_roll_over(stack: Stack) -> None:
    _wait_window_start(3)
    codes, headers = [], []
    for _ in range(5):
        r = stack.post("limited")
        codes.append(r.status_code)
        headers.append(r.headers)
    assert codes == [200] * 5
    assert [h["x-ratelimit-remaining-requests"] for h in headers] == ["4", "3", "2", "1", "0"]
    assert all(h["x-ratelimit-limit-requests"] == "5" for h in headers)
    over = stack.post("limited")
    assert over.status_code == 429
    err = over.json()["error"]
    assert "5 requests per 3 s" in err["message"] and "tenant 'limited'" in err["message"]
    assert 1 <= int(over.headers["retry-after"]) <= 3 and over.headers["x-ratelimit-remaining-requests"] == "0"
    _wait_window_start(3)  # the window rolls over: the full limit is back
    again = stack.post("limited")
    assert again.status_code == 200 and again.headers["x-ratelimit-remaining-requests"] == "4"


def test_tpm_counts_estimate_and_refuses_an_oversized_request(stack: Stack) -> None:
    _wait_window_start(3)
    too_big = stack.post("tok", max_tokens=500)
    assert too_big.status_code == 429 and "more than" in too_big.json()["error"]["message"]
    assert "retry-after" not in too_big.headers  # waiting will not help: the message says what to change
    r = stack.post("tok", max_tokens=50)
    assert r.status_code == 200 and int(r.headers["x-ratelimit-remaining-tokens"]) < 200


def test_concurrency_limit(stack: Stack) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            body = {"model": "slowpriced", "messages": [{"role": "user", "content": "c"}]}
            return await asyncio.gather(*(
                client.post(stack.base + "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {stack.keys['watched']}"}) for _ in range(4)))

    codes = sorted(r.status_code for r in asyncio.run(run()))
    assert codes == [200, 200, 429, 429]
    assert stack.post("watched", model="slowpriced").status_code == 200  # slots were given back


# ---- alerts ----------------------------------------------------------------------------------------


def test_soft_budget_alerts_reach_the_webhook_exactly_once(stack: Stack) -> None:
    flagged = None
    for i in range(40):  # each call costs ~$0.01-0.1 here: the $0.05 soft budget is crossed quickly
        r = stack.post("watched", f"[[sim:tokens=20]] spend {i}")
        assert r.status_code == 200  # soft: never rejected
        row = stack.row(r.headers["x-bastion-request-id"])
        if row["flags"] and "budget_exceeded:watched-soft" in row["flags"]:
            flagged = row
            break
    assert flagged is not None
    def soft_alerts() -> dict[str, dict]:
        return {aid: b for aid, b in list(stack.hook.bodies.items())
                if b["kind"] == "budget" and b["data"]["budget"] == "watched-soft"}

    deadline = time.time() + 15
    while time.time() < deadline and not (
            len(soft_alerts()) == 2 and all(a in stack.hook.accepted() for a in soft_alerts())):
        time.sleep(0.1)
    accepted = stack.hook.accepted()
    budget_alerts = soft_alerts()
    assert len(budget_alerts) == 2  # 50% and 100%, once each
    assert {b["data"]["threshold"] for b in budget_alerts.values()} == {0.5, 1.0}
    for aid in budget_alerts:
        assert accepted[aid] == 1  # accepted once ...
        assert [s for a, s in stack.hook.seen if a == aid] == [500, 200]  # ... after one failed delivery
    time.sleep(1.5)  # nothing more arrives for the same thresholds
    assert sum(1 for b in stack.hook.bodies.values() if b["data"].get("budget") == "watched-soft") == 2

    out = subprocess.run([sys.executable, "-m", "bastion.cli", "alerts", "--config", str(stack.cfg), "--json"],
                         check=True, capture_output=True, text=True).stdout
    listed = [json.loads(line) for line in out.splitlines()]
    mine = [a for a in listed if a["id"] in budget_alerts]
    assert len(mine) == 2 and all(a["delivered_at"] for a in mine)
    assert all(len(a["deliveries"][0]["attempts"]) == 2 for a in mine)


# ---- reports ---------------------------------------------------------------------------------------


def test_costs_cli_and_admin_api_agree(stack: Stack) -> None:
    stack.post("default")
    time.sleep(0.3)
    out = subprocess.run([sys.executable, "-m", "bastion.cli", "costs", "--config", str(stack.cfg), "--by",
                          "tenant,model", "--format", "json"], check=True, capture_output=True, text=True).stdout
    cli = json.loads(out)
    api = httpx.get(stack.base + "/admin/costs", params={"by": "tenant,model"},
                    headers={"authorization": "Bearer admin-secret"}).json()
    assert cli["rows"] and {(r["tenant"], r["model"]) for r in cli["rows"]} >= {("default", "priced")}
    assert Decimal(api["total_usd"]) >= Decimal(cli["total_usd"]) > 0
    csv_out = subprocess.run([sys.executable, "-m", "bastion.cli", "costs", "--config", str(stack.cfg), "--by",
                              "day", "--format", "csv"], check=True, capture_output=True, text=True).stdout
    assert csv_out.splitlines()[0].startswith("day,requests,")
    table = subprocess.run([sys.executable, "-m", "bastion.cli", "costs", "--config", str(stack.cfg)],
                           check=True, capture_output=True, text=True).stdout
    assert "total: $" in table and "racer" in table
    assert httpx.get(stack.base + "/admin/costs", headers={"authorization": "Bearer wrong"}).status_code == 401
    bad = httpx.get(stack.base + "/admin/costs", params={"by": "color"},
                    headers={"authorization": "Bearer admin-secret"})
    assert bad.status_code == 400 and "choose from" in bad.json()["error"]["message"]


def test_user_budget_is_per_tenant_and_speaks_the_clients_dialect(stack: Stack) -> None:
    import anthropic

    # per-user budget $0.06/day; worst case of one call here: ~(12 + 20) tokens ~ $0.05 -> one call fits
    ac = anthropic.Anthropic(base_url=stack.base, api_key=stack.keys["tiny-sam"], max_retries=0)
    msgs = [{"role": "user", "content": "[[sim:tokens=20]] hi"}]
    ac.messages.create(model="priced", max_tokens=20, messages=msgs)
    with pytest.raises(anthropic.RateLimitError) as ei:
        ac.messages.create(model="priced", max_tokens=20, messages=msgs)
    body = ei.value.body
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert "per-user" in body["error"]["message"] and "user 'tiny/sam'" in body["error"]["message"]
    assert ei.value.response.headers["x-bastion-budget"] == "per-user"
    # user "sam" of another tenant has a budget of their own
    oc = openai.OpenAI(base_url=stack.base + "/v1", api_key=stack.keys["other-sam"], max_retries=0)
    out = oc.chat.completions.create(model="priced", max_tokens=20, messages=msgs)
    assert out.choices[0].message.content
