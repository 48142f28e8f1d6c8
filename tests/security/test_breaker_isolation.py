"""One tenant cannot take a model down for every tenant through the shared circuit breakers.

End to end: the real simulator as two upstream deployments per alias, the real gateway as a process, two
tenants with keys of their own, the official ``openai`` SDK as the client.

- An attacker tenant asks for first-token and chunk-gap timeouts at the floor (and below it, refused)
  against slow-ish but healthy deployments, so that every one of its attempts times out; a victim tenant
  sends ordinary requests meanwhile. The attacker's timeouts are its own limit, not the deployments'
  fault: no breaker opens and the victim loses nothing.
- Both deployments of an alias fail 30% of requests under an aggressive breaker: at most one of the two
  is ever ejected (``breaker.max_ejection_percent``), so clients keep being served.

The figures (victim failure rate, client failure rate) are printed; run with ``-s`` to see them.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import openai
import pytest
from pydantic import ValidationError

from bastion.config.model import BastionConfig, ProviderConfig
from bastion.config.reliability import TimeoutsConfig
from bastion.errors import InvalidRequest
from bastion.pipeline.deadlines import AttemptTimeouts, Deadlines, parse_overrides
from bastion.routing import Router
from tests.procs import Proc, create_key, start_gateway, start_sim, wait_log_row

SIM_YAML = """
seed: 7
profiles:
  slow-a: {latency: {distribution: fixed, median_ms: 1300}}
  slow-b: {latency: {distribution: fixed, median_ms: 1300}}
  slow-c: {latency: {distribution: fixed, median_ms: 1300}}
  slow-d: {latency: {distribution: fixed, median_ms: 1300}}
  flaky-a: {faults: {rate_500: 0.3}}
  flaky-b: {faults: {rate_500: 0.3}}
"""

MODELS_YAML = """
models:
  shared:                          # default breaker; the operator allows 5 s to the first token
    deployments: [{provider: slow-a, model: sim-small}, {provider: slow-b, model: sim-small}]
    timeouts: {first_token_s: 5}
  solo:                            # one deployment, which the operator lets fail fast with circuit_open
    deployments: [{provider: slow-c, model: sim-small}]
    timeouts: {first_token_s: 5}
    breaker: {max_ejection_percent: 100}
  gaps:                            # one deployment, a quick breaker that may eject it
    deployments: [{provider: slow-d, model: sim-small}]
    breaker: {consecutive_failures: 3, max_ejection_percent: 100}
  flaky-pair:                      # a quick breaker: 3 failures in a row
    deployments: [{provider: flaky-a, model: sim-small}, {provider: flaky-b, model: sim-small}]
    breaker: {consecutive_failures: 3, open_s: 2}
tenants:
  attacker: {}
  victim: {}
"""

SLOW = ("slow-a/sim-small", "slow-b/sim-small", "slow-c/sim-small")
FLAKY = ("flaky-a/sim-small", "flaky-b/sim-small")


@dataclass
class Stack:
    sim: Proc
    gw: Proc
    store: Path
    attacker: str
    victim: str

    def metric(self, name: str, **labels: str) -> float:
        text = httpx.get(self.gw.url + "/metrics", timeout=10).text
        total = 0.0
        for line in text.splitlines():
            if (line.startswith(name + "{") or line.startswith(name + " ")) and all(
                    f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def client(self, key: str) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.gw.url + "/v1", api_key=key, max_retries=0, timeout=60)

    def attempts(self, rid: str) -> list[dict]:
        return json.loads(wait_log_row(self.store, rid)["attempts"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("breaker-isolation")
    (d / "sim.yaml").write_text(SIM_YAML)
    sim = start_sim(d / "sim.yaml")
    providers = "\n".join(f"  {p}: {{type: sim, base_url: {sim.url}/p/{p}/v1}}"
                          for p in ("slow-a", "slow-b", "slow-c", "slow-d", "flaky-a", "flaky-b"))
    store = d / "bastion.db"
    cfg = d / "bastion.yaml"
    cfg.write_text(f"server: {{port: 0}}\nstore: {{url: 'sqlite:///{store}', flush_interval_ms: 20}}\n"
                   f"providers:\n{providers}\n{MODELS_YAML}")
    attacker, victim = create_key(cfg, tenant="attacker"), create_key(cfg, tenant="victim")
    gw = start_gateway(cfg)
    yield Stack(sim, gw, store, attacker, victim)
    gw.stop()
    sim.stop()


def _msgs(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


# ---- the floor, and whose limit a timeout was (units) ------------------------------------------------


def test_floor_defaults_to_one_second_and_bounds_every_timeout_header() -> None:
    t = TimeoutsConfig()
    assert t.min_override_s == 1.0
    assert parse_overrides({"timeout-first-token": "1", "timeout-total": "30"}, t) == {
        "first_token_s": 1.0, "total_s": 30.0}
    for name in ("connect", "first-token", "chunk-gap", "total"):
        for value in ("0.99", "0.01", "0", "-1"):
            with pytest.raises(InvalidRequest) as ei:
                parse_overrides({f"timeout-{name}": value}, t, "chat")
            msg = ei.value.message
            assert f"x-bastion-timeout-{name}" in msg and "floor of 1 second" in msg and f"got {value}" in msg
            assert "timeouts.min_override_s" in msg and "models.chat.timeouts" in msg
    for value in ("nan", "inf", "-inf", "soon"):
        with pytest.raises(InvalidRequest) as ei:
            parse_overrides({"timeout-total": value}, t)
        assert "number of seconds" in ei.value.message


def test_floor_is_configurable_per_alias_and_checked_against_the_ceiling() -> None:
    cfg = BastionConfig.model_validate({
        "providers": {"p": {"type": "sim", "base_url": "http://127.0.0.1:9/v1"}},
        "routing": {"timeouts": {"min_override_s": 2}},
        "models": {"fast": {"deployments": [{"provider": "p", "model": "x"}], "timeouts": {"min_override_s": 0.2}},
                   "plain": {"deployments": [{"provider": "p", "model": "x"}]}},
    })
    router = Router(cfg)
    assert router.routes["fast"].policy.timeouts.min_override_s == 0.2
    assert router.routes["plain"].policy.timeouts.min_override_s == 2
    assert parse_overrides({"timeout-first-token": "0.2"}, router.routes["fast"].policy.timeouts) == {"first_token_s": 0.2}
    with pytest.raises(InvalidRequest) as ei:
        parse_overrides({"timeout-first-token": "1.5"}, router.routes["plain"].policy.timeouts, "plain")
    assert "floor of 2 seconds" in ei.value.message
    with pytest.raises(ValidationError) as ve:
        TimeoutsConfig(min_override_s=30, max_override_s=10)
    assert "min_override_s" in str(ve.value)
    with pytest.raises(ValidationError):
        TimeoutsConfig(min_override_s=0)


def _limits(headers: dict[str, str], **configured: float | None) -> AttemptTimeouts:
    t = TimeoutsConfig(**configured)

    async def build() -> AttemptTimeouts:
        overrides = parse_overrides(headers, t)
        dl = Deadlines(overrides.get("total_s") or t.total_s, overrides, configured_total_s=t.total_s)
        return dl.for_attempt(t, ProviderConfig(type="sim", base_url="http://127.0.0.1:9/v1"))

    return asyncio.run(build())


def test_a_limit_is_the_callers_only_when_its_header_shortened_the_operators() -> None:
    assert _limits({}, first_token_s=5).caller == frozenset()
    assert _limits({"timeout-first-token": "1"}, first_token_s=5).caller == {"first_token"}
    assert _limits({"timeout-first-token": "1"}).caller == {"first_token"}  # the operator set no limit at all
    assert _limits({"timeout-first-token": "8"}, first_token_s=5).caller == frozenset()  # loosened: not the caller's
    assert _limits({"timeout-first-token": "5"}, first_token_s=5).caller == frozenset()
    assert _limits({"timeout-chunk-gap": "1", "timeout-connect": "1"}).caller == {"chunk_gap", "connect"}
    assert _limits({"timeout-chunk-gap": "30"}, chunk_gap_s=20).caller == frozenset()
    assert _limits({"timeout-total": "10"}).caller == {"total"}
    assert _limits({"timeout-total": "700"}, max_override_s=900).caller == frozenset()


def test_which_limit_ended_an_attempt() -> None:
    t = _limits({"timeout-first-token": "1"}, first_token_s=5)
    assert t.before_first_token(None) == "first_token"
    assert t.before_first_token(aiohttp.ConnectionTimeoutError()) == "connect"
    assert t.before_first_token(aiohttp.SocketTimeoutError()) == "chunk_gap"
    assert t.before_first_token(TimeoutError()) == "total"  # aiohttp's own total: the request's deadline
    short_total = _limits({"timeout-total": "2", "timeout-first-token": "5"}, first_token_s=5)
    assert short_total.before_first_token(None) == "total"  # the total came before the first-token deadline

    async def told(limits: AttemptTimeouts) -> str:
        return limits.expired_message("d")

    assert "x-bastion-timeout-first-token" in asyncio.run(told(t))
    assert "timeouts.first_token_s" in asyncio.run(told(_limits({}, first_token_s=5)))


# ---- the breaker-DoS scenario ----------------------------------------------------------------------


def test_below_the_floor_is_refused_with_the_header_the_floor_and_the_key(stack: Stack) -> None:
    r = httpx.post(stack.gw.url + "/v1/chat/completions", timeout=30,
                   headers={"authorization": f"Bearer {stack.attacker}", "x-bastion-timeout-first-token": "0.01"},
                   json={"model": "shared", "messages": _msgs("hi")})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error"
    msg = err["message"]
    assert "x-bastion-timeout-first-token" in msg and "floor of 1 second" in msg
    assert "timeouts.min_override_s" in msg and "0.01" in msg


ATTACK_S = 12.0
MODELS = ("shared", "solo")  # two deployments at the default 50% cap; one that may be ejected (100%)


def test_an_attacker_with_tiny_timeouts_cannot_open_the_breaker_for_a_victim(stack: Stack) -> None:
    attacker, victim = stack.client(stack.attacker), stack.client(stack.victim)
    victim_results: list[tuple[str | None, str]] = []  # (request id, outcome: ok or the error code)
    attack: dict[str, int] = {"sent": 0, "refused": 0, "timed_out": 0, "stream_cut": 0}
    said: dict[str, str] = {}  # what the attacker was told, per alias

    async def attack_first_token(model: str, i: int, *, below: bool) -> None:
        # at the floor (1 s, the default timeouts.min_override_s) against a 1.3 s first token; or below it
        # (0.01 s), which the gateway refuses before anything reaches a deployment
        header = "0.01" if below else "1"
        attack["sent"] += 1
        try:
            await attacker.chat.completions.create(model=model, messages=_msgs(f"a{i}"),
                                                   extra_headers={"x-bastion-timeout-first-token": header})
        except openai.BadRequestError:
            attack["refused"] += 1
        except openai.APIStatusError as e:
            attack["timed_out"] += e.status_code == 504
            said[model] = f"{e.status_code} {e.message}"

    async def attack_chunk_gap(model: str, i: int) -> None:
        # a stream that starts at once, then pauses 2 s between tokens, with a 1 s chunk-gap limit
        attack["sent"] += 1
        try:
            stream = await attacker.chat.completions.create(
                model=model, stream=True, messages=_msgs(f"[[sim:latency_ms=0]] [[sim:tps=0.5]] [[sim:tokens=4]] s{i}"),
                extra_headers={"x-bastion-timeout-chunk-gap": "1"})
            async for _ in stream:
                pass
        except openai.APIError:
            attack["stream_cut"] += 1

    async def attacker_loop(worker: int, stop: float) -> None:
        i, model = worker, MODELS[worker % 2]
        while time.monotonic() < stop:
            if worker < 2:
                await attack_chunk_gap(model, i)
            elif worker < 4:
                await attack_first_token(model, i, below=True)
                await asyncio.sleep(0.3)
            else:
                await attack_first_token(model, i, below=False)
            i += 12

    async def victim_loop(worker: int, stop: float) -> None:
        i, model = worker, MODELS[worker % 2]
        while time.monotonic() < stop:
            try:
                raw = await victim.chat.completions.with_raw_response.create(model=model, messages=_msgs(f"v{i}"))
                assert raw.parse().choices[0].message.content
                victim_results.append((raw.headers["x-bastion-request-id"], "ok"))
            except openai.APIStatusError as e:
                code = (e.body or {}).get("code") if isinstance(e.body, dict) else None
                victim_results.append((e.response.headers.get("x-bastion-request-id"), str(code or e.status_code)))
            i += 4

    async def scenario() -> None:
        stop = time.monotonic() + ATTACK_S
        try:
            await asyncio.gather(*(attacker_loop(w, stop) for w in range(12)),
                                 *(victim_loop(w, stop + 1.5) for w in range(4)))  # the victim goes on a little
        finally:
            await attacker.close()
            await victim.close()

    asyncio.run(scenario())
    failed = [code for _, code in victim_results if code != "ok"]
    rate = len(failed) / len(victim_results)
    opened = sum(stack.metric("bastion_breaker_transitions_total", deployment=d, state="open") for d in SLOW)
    print(f"\nbreaker DoS: attacker sent {attack['sent']} ({attack['refused']} refused below the floor, "
          f"{attack['timed_out']} first-token timeouts, {attack['stream_cut']} streams cut by their own chunk gap); "
          f"victim failure rate {rate:.1%} ({len(failed)}/{len(victim_results)}: {sorted(set(failed))}); "
          f"breaker openings {opened:g}")
    # the attack really happened: refused below the floor, timed out at it, streams cut by their own limit
    assert attack["refused"] >= 10 and attack["timed_out"] >= 40 and attack["stream_cut"] >= 6, attack
    # ... and it was told that its own limit, not the model, was the problem
    assert said["solo"].startswith("504") and "x-bastion-timeout-first-token" in said["solo"]
    assert said["shared"].startswith("504") and "own x-bastion-timeout-* limits" in said["shared"]
    assert len(victim_results) >= 25
    assert rate == 0, failed
    assert opened == 0
    for d in SLOW:
        assert stack.metric("bastion_breaker_state", deployment=d) == 0
    skipped = [a for rid, _ in victim_results[-10:] for a in stack.attempts(rid or "") if a["outcome"] == "skipped"]
    assert not skipped


def test_streams_cut_by_their_own_chunk_gap_do_not_open_the_breaker(stack: Stack) -> None:
    """A chunk-gap header shorter than the deployment's pauses: before the first token (the read times out
    waiting for it) and in the middle of a stream (after tokens were relayed). Three failures in a row
    would open this breaker; six of the caller's own do not."""
    attacker = stack.client(stack.attacker)
    gap = {"x-bastion-timeout-chunk-gap": "1"}
    outcomes: list[str] = []

    async def before_first_token(i: int) -> None:
        try:
            await attacker.chat.completions.create(model="gaps", messages=_msgs(f"b{i}"), stream=True, extra_headers=gap)
        except openai.APIStatusError as e:
            outcomes.append(f"{e.status_code} {e.message}")

    async def mid_stream(i: int) -> None:
        chunks = 0
        try:
            stream = await attacker.chat.completions.create(
                model="gaps", stream=True, extra_headers=gap,
                messages=_msgs(f"[[sim:latency_ms=0]] [[sim:tps=0.5]] [[sim:tokens=4]] m{i}"))
            async for _ in stream:
                chunks += 1
        except openai.APIError as e:
            outcomes.append(f"cut after {chunks} chunks: {e.message}")

    async def attack() -> None:
        try:
            await asyncio.gather(*(before_first_token(i) for i in range(3)), *(mid_stream(i) for i in range(3)))
            await asyncio.gather(*(before_first_token(i) for i in range(3, 6)), *(mid_stream(i) for i in range(3, 6)))
        finally:
            await attacker.close()

    asyncio.run(attack())
    early = [o for o in outcomes if o.startswith("504")]
    late = [o for o in outcomes if o.startswith("cut after") and "in the middle of the stream" in o
            and not o.startswith("cut after 0 ")]
    assert len(early) == 6 and all("x-bastion-timeout-chunk-gap" in o for o in early), outcomes
    assert len(late) == 6, outcomes
    assert stack.metric("bastion_breaker_transitions_total", deployment="slow-d/sim-small", state="open") == 0
    r = httpx.post(stack.gw.url + "/v1/chat/completions", timeout=30, headers={"authorization": f"Bearer {stack.victim}"},
                   json={"model": "gaps", "messages": _msgs("hi")})
    assert r.status_code == 200 and r.headers["x-bastion-attempts"] == "1"


# ---- both deployments failing 30% ---------------------------------------------------------------------


class BreakerWatch:
    """Polls the gateway's breaker gauges while a scenario runs: how many deployments were out at once."""

    def __init__(self, stack: Stack, deps: tuple[str, ...]) -> None:
        self.stack, self.deps = stack, deps
        self.max_out = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=10) as c:
            while not self._stop.is_set():
                text = c.get(self.stack.gw.url + "/metrics").text
                out = 0
                for line in text.splitlines():
                    if line.startswith("bastion_breaker_state{") and any(f'"{d}"' in line for d in self.deps):
                        out += float(line.rsplit(" ", 1)[1]) > 0
                self.max_out = max(self.max_out, out)
                self.polls += 1
                time.sleep(0.01)

    def __enter__(self) -> BreakerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _burst(stack: Stack, n: int, per_s: float, tag: str) -> list[tuple[float, str | None, str]]:
    """``n`` victim requests to ``flaky-pair`` at ``per_s`` a second: (seconds in, request id, ok or error code)."""
    client = stack.client(stack.victim)
    results: list[tuple[float, str | None, str]] = []

    async def one(i: int, t0: float) -> None:
        await asyncio.sleep(max(0.0, t0 + i / per_s - time.monotonic()))
        try:
            raw = await client.chat.completions.with_raw_response.create(model="flaky-pair", messages=_msgs(f"{tag}{i}"))
            results.append((time.monotonic() - t0, raw.headers["x-bastion-request-id"], "ok"))
        except openai.APIStatusError as e:
            code = (e.body or {}).get("code") if isinstance(e.body, dict) else None
            results.append((time.monotonic() - t0, e.response.headers.get("x-bastion-request-id"),
                            str(code or e.status_code)))

    async def scenario() -> None:
        t0 = time.monotonic()
        try:
            await asyncio.gather(*(one(i, t0) for i in range(n)))
        finally:
            await client.close()

    asyncio.run(scenario())
    return results


def test_two_deployments_failing_30_percent_never_both_ejected(stack: Stack) -> None:
    per_s = 32
    with BreakerWatch(stack, FLAKY) as watch:
        both = _burst(stack, 8 * per_s, per_s, "f")  # 8 s: each deployment fails 30% of its requests
        opened_both = {d: stack.metric("bastion_breaker_transitions_total", deployment=d, state="open") for d in FLAKY}
        httpx.post(stack.sim.url + "/sim/config", json={"profile": "flaky-a", "faults": {"rate_500": 1.0}}).raise_for_status()
        try:
            dead = _burst(stack, 6 * per_s, per_s, "g")  # 6 s: flaky-a fails everything, flaky-b still 30%
        finally:
            httpx.post(stack.sim.url + "/sim/config", json={"profile": "flaky-a", "faults": {"rate_500": 0.3}})
    opened = {d: stack.metric("bastion_breaker_transitions_total", deployment=d, state="open") for d in FLAKY}

    def summary(results: list[tuple[float, str | None, str]]) -> tuple[float, list[str], list[list[dict]]]:
        failed = [code for _, _, code in results if code != "ok"]
        return len(failed) / len(results), failed, [stack.attempts(rid) for _, rid, _ in results if rid]

    rate_both, failed_both, rows_both = summary(both)
    rate_dead, failed_dead, rows_dead = summary(dead)
    sent = [x for a in rows_both for x in a if x["outcome"] != "skipped"]
    fault_rate = sum(x["outcome"] != "ok" for x in sent) / len(sent)
    served = [x["deployment"] for a in rows_both[len(rows_both) // 2:] for x in a if x["outcome"] == "ok"]
    served_dead = [x["deployment"] for a in rows_dead[len(rows_dead) // 2:] for x in a if x["outcome"] == "ok"]
    both_skipped = [a for a in rows_both + rows_dead
                    if {x["deployment"] for x in a if x["error_code"] == "breaker_open"} == set(FLAKY)]
    print(f"\n30% faults on both deployments ({len(both)} requests, {fault_rate:.0%} of attempts failed): client "
          f"failure rate {rate_both:.1%} ({len(failed_both)}: {sorted(set(failed_both))}); openings {opened_both}; "
          f"second half served by {{{', '.join(f'{d}: {served.count(d)}' for d in FLAKY)}}}")
    print(f"then flaky-a failing 100%, flaky-b 30% ({len(dead)} requests): client failure rate {rate_dead:.1%} "
          f"({len(failed_dead)}: {sorted(set(failed_dead))}); openings {opened}; second half served by "
          f"{{{', '.join(f'{d}: {served_dead.count(d)}' for d in FLAKY)}}}; most deployments out at once "
          f"{watch.max_out} over {watch.polls} polls; requests that found both out {len(both_skipped)}")
    assert 0.2 < fault_rate < 0.4  # the faults really struck
    # never both out: seen from the breaker gauges, and by every request
    assert watch.polls >= 100 and watch.max_out <= 1
    assert not both_skipped and "circuit_open" not in failed_both + failed_dead
    # a pool failing uniformly keeps serving on both deployments: retries and fallbacks absorb the faults
    assert rate_both <= 0.08, failed_both
    for d in FLAKY:
        assert served.count(d) >= 20, (d, served.count(d))
    # a deployment that fails everything is ejected; the one left keeps serving whatever happens to it
    assert opened["flaky-a/sim-small"] > opened_both["flaky-a/sim-small"]
    assert opened["flaky-b/sim-small"] == opened_both["flaky-b/sim-small"]
    assert served_dead.count("flaky-b/sim-small") >= 50 and served_dead.count("flaky-a/sim-small") == 0
    assert rate_dead <= 0.2, failed_dead
