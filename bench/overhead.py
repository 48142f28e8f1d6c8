#!/usr/bin/env python3
"""Bastion's own overhead, measured against the direct call to the simulator in the same run.

Starts a simulator and a gateway (temporary directory, SQLite store in it), then drives both with the
same request bodies from this process (aiohttp, keep-alive pool, uvloop when installed):

* open loop at fixed rates (``--rates``), non-streaming and streaming: latency is measured from each
  request's *scheduled* send time, so a generator or server that falls behind cannot hide latency
  (no coordinated omission); the schedule lag is reported separately;
* saturation: closed loop at ``--concurrency`` connections, throughput in req/s (``wrk`` when it is on
  the PATH, else Python workers; ``--saturation-tool`` chooses).

Every scenario runs DIRECT (simulator) and THROUGH the gateway in alternating segments (ABBA order) so
machine noise hits both. Results: added latency (gateway minus direct, per percentile), TTFT overhead,
achieved rates, errors, CPU per request of each process, and the gateway/direct throughput ratio.
Prints a table and writes JSON (``--json``, default ``bench/results/overhead-<timestamp>.json``).

    .venv/bin/python bench/overhead.py                 # full run, about 3 minutes
    .venv/bin/python bench/overhead.py --quick         # a few seconds, smoke test
    .venv/bin/python bench/overhead.py --latencies 0,50 --rates 200
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
    uvloop = None  # type: ignore[assignment]

SCHEMA = "bastion-bench-overhead/1"
HOST = "127.0.0.1"
_LISTEN = re.compile(r"listening on http://([\d.]+):(\d+)")
_CLK_TCK = os.sysconf("SC_CLK_TCK")
perf = time.perf_counter

# --------------------------------------------------------------------------------------------------
# processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    url: str
    output: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_seconds(self) -> float:
        """user+system CPU time of the process (all threads), from /proc; 0 when unavailable."""
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / _CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def stop(self, timeout: float = 30) -> int | None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        return self.popen.returncode


def _start(name: str, args: list[str], cwd: Path, timeout: float = 60) -> Proc:
    popen = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=cwd,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert popen.stdout is not None
    output: list[str] = []
    deadline = time.monotonic() + timeout
    for line in popen.stdout:
        output.append(line)
        m = _LISTEN.search(line)
        if m:
            threading.Thread(target=lambda: output.extend(popen.stdout), daemon=True).start()  # type: ignore[arg-type]
            return Proc(name, popen, f"http://{m.group(1)}:{m.group(2)}", output)
        if time.monotonic() > deadline:
            break
    popen.kill()
    raise RuntimeError(f"{name} did not start (exit {popen.wait()}):\n{''.join(output)}")


def sim_yaml(tokens: int, latencies: list[float]) -> str:
    lines = [
        "seed: 7",
        f"output_tokens: {{min: {tokens}, max: {tokens}}}",
        "latency: {distribution: fixed, median_ms: 0}",
        "tokens_per_second: 0",
        "profiles:",
    ]
    for ms in latencies:
        if ms > 0:
            lines.append(f"  {profile_name(ms)}: {{latency: {{distribution: fixed, median_ms: {ms:g}}}}}")
    if lines[-1] == "profiles:":
        lines[-1] = "profiles: {}"
    return "\n".join(lines) + "\n"


def profile_name(ms: float) -> str:
    return f"lat{ms:g}".replace(".", "_")


def alias_for(ms: float) -> str:
    return "sim-small" if ms <= 0 else f"sim-small-{profile_name(ms)}"


def sim_base(sim_url: str, ms: float) -> str:
    return f"{sim_url}/v1" if ms <= 0 else f"{sim_url}/p/{profile_name(ms)}/v1"


# --features everyday: what most deployments turn on beyond the defaults (key auth, input and output guards,
# request log, metrics): the response cache (memory; the bench's requests are not deterministic, so every
# request is a lookup and a miss), a tenant quota and a soft tenant budget (metering on every request)
EVERYDAY_YAML = (
    "cache: {enabled: true, max_entries: 2000}\n"
    "limits:\n  - {scope: tenant, rpm: 100000000}\n"
    "budgets:\n  - {name: bench, scope: tenant, period: day, limit_usd: 1000000, mode: soft}\n"
)


def gateway_yaml(sim_url: str, store: Path, latencies: list[float], everyday: bool = False) -> str:
    providers, models = [], []
    for ms in latencies:
        pname = "sim" if ms <= 0 else f"sim_{profile_name(ms)}"
        providers.append(f"  {pname}:\n    type: sim\n    base_url: {sim_base(sim_url, ms)}")
        models.append(f"  {alias_for(ms)}:\n    deployments: [{{provider: {pname}, model: sim-small}}]")
    return (
        f"server:\n  host: {HOST}\n  port: 0\nstore:\n  url: sqlite:///{store}\n"
        "providers:\n" + "\n".join(providers) + "\nmodels:\n" + "\n".join(models) + "\n"
        "tenants:\n  default: {}\n" + (EVERYDAY_YAML if everyday else "")
    )


# --------------------------------------------------------------------------------------------------
# statistics


def pct(sorted_ms: list[float], p: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_ms:
        return None
    k = max(0, min(len(sorted_ms) - 1, math.ceil(p / 100 * len(sorted_ms)) - 1))
    return sorted_ms[k]


def summary(values_ms: list[float]) -> dict[str, float | None]:
    s = sorted(values_ms)
    return {
        "n": len(s),
        "mean": (sum(s) / len(s)) if s else None,
        "p50": pct(s, 50),
        "p90": pct(s, 90),
        "p99": pct(s, 99),
        "p99.9": pct(s, 99.9),
        "max": s[-1] if s else None,
    }


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# --------------------------------------------------------------------------------------------------
# load generation


@dataclass
class Target:
    name: str  # "direct" | "gateway"
    url: str
    headers: dict[str, str]
    body: bytes
    stream_body: bytes


@dataclass
class Samples:
    scheduled: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # open loop: from the scheduled send time
    service_ms: list[float] = field(default_factory=list)  # from the actual send time
    ttft_ms: list[float] = field(default_factory=list)  # streaming, from the scheduled send time
    lag_ms: list[float] = field(default_factory=list)  # actual send - scheduled
    wall_s: float = 0.0
    loadgen_cpu_s: float = 0.0
    gateway_cpu_s: float = 0.0
    sim_cpu_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    def merge(self, other: Samples) -> None:
        self.scheduled += other.scheduled
        self.ok += other.ok
        for k, v in other.errors.items():
            self.errors[k] = self.errors.get(k, 0) + v
        for name in ("latency_ms", "service_ms", "ttft_ms", "lag_ms"):
            getattr(self, name).extend(getattr(other, name))
        for name in ("wall_s", "loadgen_cpu_s", "gateway_cpu_s", "sim_cpu_s"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def _has_content(line: bytes) -> bool:
    return line.startswith(b"data: ") and b'"content":"' in line and b'"content":""' not in line


async def one_request(session: aiohttp.ClientSession, t: Target, stream: bool, sched: float, out: Samples) -> None:
    sent = perf()
    out.lag_ms.append((sent - sched) * 1000)
    try:
        async with session.post(t.url, data=t.stream_body if stream else t.body, headers=t.headers) as resp:
            if stream:
                ttft = None
                done = False
                async for line in resp.content:
                    if _has_content(line):
                        ttft = perf()
                        break
                    if line.startswith(b"data: [DONE]"):
                        done = True
                        break
                rest = await resp.content.read()
                done = done or b"data: [DONE]" in rest
                ok = resp.status == 200 and done and ttft is not None
            else:
                body = await resp.read()
                ok = resp.status == 200 and b'"choices"' in body
            end = perf()
            if not ok:
                out.error(f"http_{resp.status}" if resp.status != 200 else "bad_body")
                return
    except asyncio.CancelledError:
        out.error("unfinished")
        raise
    except TimeoutError:
        out.error("timeout")
        return
    except aiohttp.ClientError as e:
        out.error(type(e).__name__)
        return
    out.ok += 1
    out.latency_ms.append((end - sched) * 1000)
    out.service_ms.append((end - sent) * 1000)
    if stream and ttft is not None:
        out.ttft_ms.append((ttft - sched) * 1000)


async def open_loop(session: aiohttp.ClientSession, t: Target, stream: bool, rate: float, duration: float,
                    drain_timeout: float) -> Samples:
    """Send ``rate * duration`` requests on a fixed schedule; never waits for responses to send more."""
    out = Samples()
    n = max(1, int(rate * duration))
    out.scheduled = n
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()
    t0 = perf() + 0.01
    i = 0
    while i < n:
        now = perf()
        sched = t0 + i / rate
        if sched > now:
            await asyncio.sleep(sched - now)
            now = perf()
        while i < n and t0 + i / rate <= now:  # launch every request that is due (catch-up burst)
            task = loop.create_task(one_request(session, t, stream, t0 + i / rate, out))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            i += 1
    if tasks:
        _, pending = await asyncio.wait(set(tasks), timeout=drain_timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)
    out.wall_s = max(perf() - t0, n / rate)  # achieved rate: completions over at least the schedule's span
    return out


async def closed_loop(session: aiohttp.ClientSession, t: Target, stream: bool, concurrency: int,
                      duration: float, max_requests: int) -> Samples:
    """``concurrency`` workers sending back to back for ``duration`` (and at most ``max_requests``)."""
    out = Samples()
    t0 = perf()
    stop_at = t0 + duration
    budget = [max_requests]

    async def worker() -> None:
        while perf() < stop_at and budget[0] > 0:
            budget[0] -= 1
            out.scheduled += 1
            await one_request(session, t, stream, perf(), out)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=duration + 30)
    for task in pending:
        task.cancel()
    out.wall_s = perf() - t0
    return out


def run_wrk(t: Target, stream: bool, concurrency: int, duration: float, workdir: Path) -> Samples:
    """Closed loop with wrk (one thread, ``concurrency`` keep-alive connections)."""
    script = workdir / f"wrk-{t.name}-{'s' if stream else 'n'}.lua"
    body = (t.stream_body if stream else t.body).decode()
    lua = ['wrk.method = "POST"', f"wrk.body = [==[{body}]==]"]
    lua += [f'wrk.headers["{k}"] = [==[{v}]==]' for k, v in t.headers.items()]
    script.write_text("\n".join(lua) + "\n")
    secs = max(1, round(duration))
    before = os.times()
    proc = subprocess.run(
        ["wrk", "-t1", f"-c{concurrency}", f"-d{secs}s", "--timeout", "10s", "--latency", "-s", str(script), t.url],
        capture_output=True, text=True, timeout=secs + 60,
    )
    after = os.times()
    text = proc.stdout + proc.stderr
    out = Samples()
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    if proc.returncode != 0 or not m:
        out.error("wrk_failed")
        out.wall_s = secs
        return out
    total = int(m.group(1))
    out.wall_s = _dur_s(float(m.group(2)), m.group(3))
    bad = 0
    if mm := re.search(r"Non-2xx or 3xx responses: (\d+)", text):
        bad += int(mm.group(1))
        out.errors["non_2xx"] = int(mm.group(1))
    if mm := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text):
        for kind, v in zip(("connect", "read", "write", "timeout"), mm.groups(), strict=True):
            if int(v):
                out.errors[f"socket_{kind}"] = int(v)
    out.scheduled = total
    out.ok = max(0, total - bad)
    out.loadgen_cpu_s = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    dist = {}
    for p, v, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        dist[f"p{p}"] = _dur_s(float(v), unit) * 1000
    out.wrk_latency_ms = dist  # type: ignore[attr-defined]
    return out


def _dur_s(v: float, unit: str) -> float:
    return {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit, 1.0) * v


# --------------------------------------------------------------------------------------------------
# scenarios


class Bench:
    def __init__(self, args: argparse.Namespace, sim: Proc, gateway: Proc, key: str, workdir: Path) -> None:
        self.args = args
        self.sim = sim
        self.gateway = gateway
        self.key = key
        self.workdir = workdir

    def target(self, name: str, latency_ms: float) -> Target:
        prompt = f"Say hello in a few words. [[sim:tokens={self.args.tokens}]]"
        if name == "direct":
            url = sim_base(self.sim.url, latency_ms) + "/chat/completions"
            model, auth = "sim-small", "Bearer sim"
        else:
            url = self.gateway.url + "/v1/chat/completions"
            model, auth = alias_for(latency_ms), f"Bearer {self.key}"
        req = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 64}
        body = json.dumps(req, separators=(",", ":")).encode()
        stream_body = json.dumps({**req, "stream": True}, separators=(",", ":")).encode()
        return Target(name, url, {"Authorization": auth, "Content-Type": "application/json"}, body, stream_body)

    def _order(self) -> list[str]:
        order: list[str] = []
        for r in range(self.args.rounds):
            order += ["direct", "gateway"] if r % 2 == 0 else ["gateway", "direct"]
        return order

    async def _measured(self, coro: Any) -> Samples:
        g0, s0, c0 = self.gateway.cpu_seconds(), self.sim.cpu_seconds(), time.process_time()
        out: Samples = await coro
        if not out.loadgen_cpu_s:
            out.loadgen_cpu_s = time.process_time() - c0
        out.gateway_cpu_s = self.gateway.cpu_seconds() - g0
        out.sim_cpu_s = self.sim.cpu_seconds() - s0
        return out

    async def warmup(self, session: aiohttp.ClientSession) -> None:
        if self.args.warmup <= 0:
            return
        for ms in self.args.latencies:
            for name in ("direct", "gateway"):
                for stream in (False, True):
                    await open_loop(session, self.target(name, ms), stream, min(100.0, max(self.args.rates)),
                                    self.args.warmup, drain_timeout=10)

    async def open_scenario(self, session: aiohttp.ClientSession, rate: float, stream: bool,
                            latency_ms: float) -> dict[str, Any]:
        merged = {"direct": Samples(), "gateway": Samples()}
        seg = self.args.duration / self.args.rounds
        for name in self._order():
            s = await self._measured(open_loop(session, self.target(name, latency_ms), stream, rate, seg,
                                               drain_timeout=self.args.drain_timeout))
            merged[name].merge(s)
            await asyncio.sleep(self.args.pause)
        res: dict[str, Any] = {
            "name": f"{'stream' if stream else 'nonstream'} {rate:g}/s sim+{latency_ms:g}ms",
            "kind": "open_loop", "stream": stream, "rate": rate, "sim_latency_ms": latency_ms,
            "duration_s": self.args.duration, "rounds": self.args.rounds,
        }
        for name, s in merged.items():
            res[name] = open_report(s, rate, stream)
        res["overhead"] = overhead(res["direct"], res["gateway"], stream)
        return res

    async def saturation(self, session: aiohttp.ClientSession, stream: bool, tool: str) -> dict[str, Any]:
        merged = {"direct": Samples(), "gateway": Samples()}
        seg = self.args.sat_duration / self.args.rounds
        extra: dict[str, list[dict[str, float]]] = {"direct": [], "gateway": []}
        for name in self._order():
            t = self.target(name, 0)
            if tool == "wrk":
                s = await self._measured(asyncio.to_thread(run_wrk, t, stream, self.args.concurrency, seg,
                                                           self.workdir))
                extra[name].append(getattr(s, "wrk_latency_ms", {}))
            else:
                s = await self._measured(closed_loop(session, t, stream, self.args.concurrency, seg,
                                                     max_requests=int(seg * 50_000)))
            merged[name].merge(s)
            await asyncio.sleep(self.args.pause)
        res: dict[str, Any] = {
            "name": f"{'stream' if stream else 'nonstream'} saturation c={self.args.concurrency}",
            "kind": "saturation", "stream": stream, "tool": tool, "concurrency": self.args.concurrency,
            "duration_s": self.args.sat_duration, "rounds": self.args.rounds,
        }
        for name, s in merged.items():
            rep = closed_report(s)
            if tool == "wrk":
                rep["latency_ms"] = {p: _mean([d.get(p) for d in extra[name]]) for p in ("p50", "p90", "p99")}
                rep["latency_ms"]["note"] = "wrk percentiles, mean over segments"  # type: ignore[assignment]
            res[name] = rep
        res["throughput_ratio"] = _ratio(res["gateway"]["throughput_rps"], res["direct"]["throughput_rps"])
        return res


def _mean(xs: list[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _cpu(s: Samples) -> dict[str, Any]:
    done = max(1, s.ok + sum(s.errors.values()))
    return {
        "wall_s": s.wall_s,
        "loadgen_cpu_pct": 100 * s.loadgen_cpu_s / s.wall_s if s.wall_s else None,
        "gateway_cpu_pct": 100 * s.gateway_cpu_s / s.wall_s if s.wall_s else None,
        "sim_cpu_pct": 100 * s.sim_cpu_s / s.wall_s if s.wall_s else None,
        "gateway_cpu_us_per_req": 1e6 * s.gateway_cpu_s / done,
        "sim_cpu_us_per_req": 1e6 * s.sim_cpu_s / done,
        "loadgen_cpu_us_per_req": 1e6 * s.loadgen_cpu_s / done,
    }


def open_report(s: Samples, rate: float, stream: bool) -> dict[str, Any]:
    lag = summary(s.lag_ms)
    rep: dict[str, Any] = {
        "scheduled": s.scheduled,
        "ok": s.ok,
        "errors": sum(s.errors.values()),
        "error_kinds": s.errors,
        "target_rps": rate,
        "achieved_rps": s.ok / s.wall_s if s.wall_s else None,
        "latency_ms": summary(s.latency_ms),
        "service_latency_ms": summary(s.service_ms),
        "schedule_lag_ms": {k: lag[k] for k in ("p50", "p99", "max")},
        "behind_schedule": bool(lag["p99"] is not None and lag["p99"] > 5.0),
        **_cpu(s),
    }
    if stream:
        rep["ttft_ms"] = summary(s.ttft_ms)
    return rep


def closed_report(s: Samples) -> dict[str, Any]:
    return {
        "requests": s.scheduled,
        "ok": s.ok,
        "errors": sum(s.errors.values()),
        "error_kinds": s.errors,
        "throughput_rps": s.ok / s.wall_s if s.wall_s else None,
        "latency_ms": summary(s.service_ms) if s.service_ms else {},
        **_cpu(s),
    }


def overhead(d: dict[str, Any], g: dict[str, Any], stream: bool) -> dict[str, Any]:
    o: dict[str, Any] = {}
    for p in ("p50", "p90", "p99", "p99.9", "mean"):
        o[f"added_{p}_ms"] = _sub(g["latency_ms"][p], d["latency_ms"][p])
    for p in ("p50", "p99"):
        o[f"added_service_{p}_ms"] = _sub(g["service_latency_ms"][p], d["service_latency_ms"][p])
    if stream:
        for p in ("p50", "p99", "p99.9"):
            o[f"added_ttft_{p}_ms"] = _sub(g["ttft_ms"][p], d["ttft_ms"][p])
    o["latency_ratio_p50"] = _ratio(g["latency_ms"]["p50"], d["latency_ms"]["p50"])
    o["achieved_rps_ratio"] = _ratio(g["achieved_rps"], d["achieved_rps"])
    o["gateway_cpu_us_per_req"] = g["gateway_cpu_us_per_req"]
    return o


def assess(scenarios: list[dict[str, Any]], saturation: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's targets, as a verdict for the note (not an assertion)."""
    t: dict[str, Any] = {"added_p50_ms_max": 1.0, "added_p99_ms_max": 5.0, "at_rate": 200}
    base = [s for s in scenarios if not s["stream"] and s["rate"] == 200 and s["sim_latency_ms"] == 0]
    if base:
        o = base[0]["overhead"]
        t["added_p50_ms"] = o["added_p50_ms"]
        t["added_p99_ms"] = o["added_p99_ms"]
        t["p50_met"] = o["added_p50_ms"] is not None and o["added_p50_ms"] < 1.0
        t["p99_met"] = o["added_p99_ms"] is not None and o["added_p99_ms"] < 5.0
    keeps = []
    for s in scenarios:
        if s["stream"] or s["rate"] > 1000 or s["sim_latency_ms"] != 0:
            continue
        g = s["gateway"]
        ok = (g["errors"] == 0 and (g["achieved_rps"] or 0) >= 0.97 * s["rate"]
              and (g["latency_ms"]["p99"] or 1e9) < 100.0)
        keeps.append({"rate": s["rate"], "gateway_keeps_up": ok, "achieved_rps": g["achieved_rps"],
                      "gateway_p99_ms": g["latency_ms"]["p99"], "direct_p99_ms": s["direct"]["latency_ms"]["p99"]})
    t["below_1000_rps"] = keeps
    sat = [s for s in saturation if not s["stream"]]
    if sat:
        t["nonstream_saturation_gateway_rps"] = sat[0]["gateway"]["throughput_rps"]
        t["nonstream_saturation_ratio"] = sat[0]["throughput_ratio"]
    return t


# --------------------------------------------------------------------------------------------------
# output


def _f(v: Any, nd: int = 2, sign: bool = False) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:+.{nd}f}" if sign else f"{v:.{nd}f}"
    return str(v)


def print_table(result: dict[str, Any]) -> None:
    w = sys.stdout.write
    w("\nOPEN LOOP (latency from the scheduled send time, ms)\n")
    hdr = (f"{'scenario':<28}{'target':<9}{'sched':>7}{'ok':>7}{'err':>5}{'ach/s':>8}{'lag99':>7}"
           f"{'p50':>8}{'p90':>8}{'p99':>8}{'p99.9':>8}{'max':>8}{'ttft50':>8}{'ttft99':>8}{'gwCPU/rq':>10}\n")
    w(hdr)
    w("-" * (len(hdr) - 1) + "\n")
    for s in result["scenarios"]:
        for name in ("direct", "gateway"):
            r = s[name]
            lat, tt = r["latency_ms"], r.get("ttft_ms", {})
            w(f"{s['name'] if name == 'direct' else '':<28}{name:<9}{r['scheduled']:>7}{r['ok']:>7}{r['errors']:>5}"
              f"{_f(r['achieved_rps'], 0):>8}{_f(r['schedule_lag_ms']['p99']):>7}"
              f"{_f(lat['p50']):>8}{_f(lat['p90']):>8}{_f(lat['p99']):>8}{_f(lat['p99.9']):>8}{_f(lat['max']):>8}"
              f"{_f(tt.get('p50')):>8}{_f(tt.get('p99')):>8}"
              f"{(_f(r['gateway_cpu_us_per_req'], 0) + 'us') if name == 'gateway' else '':>10}"
              f"{'  BEHIND' if r['behind_schedule'] else ''}\n")
        o = s["overhead"]
        w(f"{'':<28}{'added':<9}{'':>7}{'':>7}{'':>5}{'':>8}{'':>7}"
          f"{_f(o['added_p50_ms'], sign=True):>8}{_f(o['added_p90_ms'], sign=True):>8}"
          f"{_f(o['added_p99_ms'], sign=True):>8}{_f(o['added_p99.9_ms'], sign=True):>8}{'':>8}"
          f"{_f(o.get('added_ttft_p50_ms'), sign=True):>8}{_f(o.get('added_ttft_p99_ms'), sign=True):>8}\n")
    if result["saturation"]:
        w("\nSATURATION (closed loop)\n")
        hdr = (f"{'scenario':<30}{'tool':<7}{'target':<9}{'ok':>8}{'err':>5}{'req/s':>9}{'p50':>8}{'p99':>8}"
               f"{'gwCPU%':>8}{'simCPU%':>8}{'genCPU%':>8}{'ratio':>8}\n")
        w(hdr)
        w("-" * (len(hdr) - 1) + "\n")
        for s in result["saturation"]:
            for name in ("direct", "gateway"):
                r = s[name]
                lat = r.get("latency_ms") or {}
                w(f"{s['name'] if name == 'direct' else '':<30}{s['tool']:<7}{name:<9}{r['ok']:>8}{r['errors']:>5}"
                  f"{_f(r['throughput_rps'], 0):>9}{_f(lat.get('p50')):>8}{_f(lat.get('p99')):>8}"
                  f"{_f(r['gateway_cpu_pct'], 0):>8}{_f(r['sim_cpu_pct'], 0):>8}{_f(r['loadgen_cpu_pct'], 0):>8}"
                  f"{_f(s['throughput_ratio']) if name == 'gateway' else '':>8}\n")
    t = result["targets"]
    w("\nTARGETS (from the issue; informative, not asserted)\n")
    if "added_p50_ms" in t:
        w(f"  added p50 at 200/s: {_f(t['added_p50_ms'])} ms (target < 1 ms: {'met' if t['p50_met'] else 'MISSED'})\n")
        w(f"  added p99 at 200/s: {_f(t['added_p99_ms'])} ms (target < 5 ms: {'met' if t['p99_met'] else 'MISSED'})\n")
    for k in t.get("below_1000_rps", []):
        w(f"  {k['rate']:g}/s non-streaming: gateway {'keeps up' if k['gateway_keeps_up'] else 'does NOT keep up'}"
          f" (achieved {_f(k['achieved_rps'], 0)}/s, p99 {_f(k['gateway_p99_ms'])} ms vs direct "
          f"{_f(k['direct_p99_ms'])} ms)\n")
    if "nonstream_saturation_ratio" in t:
        w(f"  saturation throughput gateway/direct: {_f(t['nonstream_saturation_ratio'])} "
          f"({_f(t['nonstream_saturation_gateway_rps'], 0)} req/s through the gateway)\n")
    for note in result["notes"]:
        w(f"  note: {note}\n")
    w(f"\nerrors total: {result['errors_total']}\n")


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="200,1000", help="open-loop rates in req/s, comma separated (default 200,1000)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds per open-loop scenario and target (default 10)")
    p.add_argument("--sat-duration", type=float, default=None, help="seconds per saturation scenario (default --duration)")
    p.add_argument("--concurrency", type=int, default=64, help="saturation concurrency (default 64)")
    p.add_argument("--latencies", default="0",
                   help="fixed simulator latencies in ms to run the open-loop scenarios at (default 0; e.g. 0,50)")
    p.add_argument("--tokens", type=int, default=16, help="output tokens per answer (default 16)")
    p.add_argument("--rounds", type=int, default=2, help="alternating direct/gateway segments per scenario (default 2: ABBA)")
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target and mode (default 2)")
    p.add_argument("--saturation-tool", choices=("auto", "wrk", "python", "none"), default="auto",
                   help="closed-loop generator: wrk if on the PATH (auto), python (aiohttp), or none to skip")
    p.add_argument("--no-stream", action="store_true", help="skip the streaming scenarios")
    p.add_argument("--drain-timeout", type=float, default=30.0, help="seconds to wait for in-flight requests")
    p.add_argument("--pause", type=float, default=0.3, help="pause between segments (seconds)")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/overhead-<ts>.json)")
    p.add_argument("--features", choices=("default", "everyday"), default="default",
                   help="gateway features: the defaults (key auth, guards, request log, metrics), or everyday: also "
                        "the response cache (lookups), a tenant quota and a soft budget")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, store, logs)")
    p.add_argument("--quick", action="store_true", help="a few-second smoke run (small rates and durations)")
    a = p.parse_args(argv)
    if a.quick:
        a.rates, a.duration, a.concurrency, a.warmup, a.rounds, a.pause = "50", 1.0, 8, 0.3, 2, 0.1
        a.sat_duration = 1.0 if a.sat_duration is None else a.sat_duration
        if a.saturation_tool == "auto":
            a.saturation_tool = "python"
    a.rates = [float(x) for x in str(a.rates).split(",") if x.strip()]
    a.latencies = sorted({float(x) for x in str(a.latencies).split(",") if x.strip()} | {0.0})
    if a.sat_duration is None:
        a.sat_duration = a.duration
    if a.rounds < 1 or a.duration <= 0 or not a.rates or min(a.rates) <= 0 or a.duration > 600 or a.sat_duration > 600:
        p.error("need rounds >= 1, 0 < duration <= 600 and positive rates")
    return a


async def run(args: argparse.Namespace, bench: Bench) -> dict[str, Any]:
    tool = args.saturation_tool
    if tool == "auto":
        tool = "wrk" if shutil.which("wrk") else "python"
    conn = aiohttp.TCPConnector(limit=max(256, args.concurrency), keepalive_timeout=60, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    notes: list[str] = []
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False) as session:
        await bench.warmup(session)
        scenarios = []
        for ms in args.latencies:
            for stream in ((False,) if args.no_stream else (False, True)):
                for rate in args.rates:
                    print(f"... open loop {'stream' if stream else 'nonstream'} {rate:g}/s sim+{ms:g}ms", flush=True)
                    scenarios.append(await bench.open_scenario(session, rate, stream, ms))
        saturation = []
        if tool != "none":
            for stream in ((False,) if args.no_stream else (False, True)):
                print(f"... saturation {'stream' if stream else 'nonstream'} c={args.concurrency} ({tool})", flush=True)
                saturation.append(await bench.saturation(session, stream, tool))
    for s in scenarios:
        for name in ("direct", "gateway"):
            r = s[name]
            if r["behind_schedule"]:
                notes.append(f"{s['name']} {name}: the load generator fell behind the schedule (lag p99 "
                             f"{r['schedule_lag_ms']['p99']:.1f} ms); latency still counts from the scheduled time")
            if (r["loadgen_cpu_pct"] or 0) > 80:
                notes.append(f"{s['name']} {name}: load generator at {r['loadgen_cpu_pct']:.0f}% CPU "
                             "(it may be a bottleneck itself)")
    if (os.cpu_count() or 1) <= 2:
        notes.append("generator, simulator and gateway share the machine's CPUs; through the gateway the "
                     "simulator still runs, so saturation ratios are pessimistic for a gateway on its own host")
    errors_total = sum(s[n]["errors"] for s in scenarios + saturation for n in ("direct", "gateway"))
    return {"scenarios": scenarios, "saturation": saturation, "notes": notes, "errors_total": errors_total,
            "saturation_tool": tool}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now(_dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-"))
    sim = gateway = None
    try:
        sim_cfg = tmp / "sim.yaml"
        sim_cfg.write_text(sim_yaml(args.tokens, args.latencies))
        sim = _start("sim", ["-m", "bastion.sim.server", "--host", HOST, "--port", "0", "--config", str(sim_cfg)], tmp)
        gw_cfg = tmp / "bastion.yaml"
        gw_cfg.write_text(gateway_yaml(sim.url, tmp / "bastion.db", args.latencies, args.features == "everyday"))
        out = subprocess.run([sys.executable, "-m", "bastion.cli", "keys", "create", "--config", str(gw_cfg),
                              "--tenant", "default", "--json"], check=True, capture_output=True, text=True, cwd=tmp,
                             timeout=60).stdout
        key = json.loads(out)["key"]
        gateway = _start("gateway", ["-m", "bastion.cli", "serve", "--config", str(gw_cfg)], tmp)
        print(f"sim {sim.url} (pid {sim.pid}), gateway {gateway.url} (pid {gateway.pid}), workdir {tmp}", flush=True)
        bench = Bench(args, sim, gateway, key, tmp)
        if uvloop is not None:
            body = uvloop.run(run(args, bench))
        else:
            body = asyncio.run(run(args, bench))
    finally:
        rc = {}
        for proc in (gateway, sim):
            if proc is not None:
                rc[proc.name] = proc.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine(), "uvloop": uvloop is not None},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json",)},
        **body,
        "exit_codes": rc,
    }
    result["targets"] = assess(result["scenarios"], result["saturation"])
    print_table(result)
    path = Path(args.json) if args.json else (
        Path(__file__).resolve().parent / "results" / f"overhead-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, sort_keys=False) + "\n")
    print(f"JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
