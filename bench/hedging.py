#!/usr/bin/env python3
"""Tail latency with hedged requests off and on, against a simulated upstream with a heavy tail.

Starts a simulator with two identical profiles ``a`` and ``b`` (fixed 40 ms latency; 5 % of requests 10x
slower, drawn per profile from its own seeded RNG) and, for each variant, a fresh gateway whose alias ``m``
has the deployments ``a`` and ``b``:

* ``direct``      the same load straight to the simulator's profile ``a`` (no gateway), for reference;
* ``hedge off``   ``models.m.hedge: {enabled: false}``;
* ``hedge p95``   ``{enabled: true, percentile: 95, min_samples: 20, budget_ratio: 0.1}`` (the delay is the
                  observed 95th percentile of the alias's time to first token);
* ``hedge fixed`` the same with a fixed ``delay_ms`` (default 80, about twice the median).

Each variant: ``/sim/reset`` (every variant sees the same seeded slow pattern), a warm-up (``--warmup``
requests, excluded; it gives the percentile its samples), then ``--requests`` requests from a closed loop of
``--concurrency`` workers (aiohttp, keep-alive). Non-streaming: latency of the whole answer. Streaming: time
to the first byte of the body (the whole stream is read and checked too). Per variant: p50/p90/p99/p99.9/max,
errors, upstream attempts per request (the ``x-bastion-attempts`` header, cross-checked with the simulator's
request counters and the gateway's ``bastion_upstream_attempts_total``), ``bastion_hedges_total`` by outcome,
and the hedge delay actually used (from the request log: hedge attempt start minus first attempt start).

The JSON goes to stdout and to ``--json`` (default ``bench/results/hedging-<timestamp>.json``); progress and
a markdown table go to stderr.

    .venv/bin/python bench/hedging.py                      # 2000 requests x 4 variants x 2 modes, ~1 minute
    .venv/bin/python bench/hedging.py --quick              # a few seconds, smoke test
    .venv/bin/python bench/hedging.py --stream --requests 5000 --concurrency 40
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
import sqlite3
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
    uvloop = None  # type: ignore[assignment]

SCHEMA = "bastion-bench-hedging/1"
HOST = "127.0.0.1"
ALIAS = "m"
_METRIC = re.compile(r"^(bastion_\w+)\{([^}]*)\}\s+([0-9.eE+-]+)\s*$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
perf = time.perf_counter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from overhead import Proc, _start  # noqa: E402  (one process helper for every bench script)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# configuration


def sim_yaml(args: argparse.Namespace) -> str:
    lat = (f"{{distribution: fixed, median_ms: {args.median_ms:g}, slow_rate: {args.slow_rate:g}, "
           f"slow_factor: {args.slow_factor:g}}}")
    return (
        "seed: 7\n"
        "output_tokens: {min: 8, max: 16}\n"
        "latency: {distribution: fixed, median_ms: 0}\n"
        "tokens_per_second: 0\n"
        "profiles:\n"
        f"  a: {{latency: {lat}}}\n"
        f"  b: {{latency: {lat}}}\n"
    )


@dataclass(frozen=True)
class Variant:
    name: str
    hedge: str | None  # YAML flow mapping for models.m.hedge; None = direct to the simulator


def variants(args: argparse.Namespace) -> list[Variant]:
    p95 = (f"{{enabled: true, percentile: {args.percentile:g}, min_samples: {args.min_samples}, "
           f"budget_ratio: {args.budget_ratio:g}}}")
    fixed = (f"{{enabled: true, delay_ms: {args.fixed_delay_ms:g}, min_samples: {args.min_samples}, "
             f"budget_ratio: {args.budget_ratio:g}}}")
    return [
        Variant("direct", None),
        Variant("hedge off", "{enabled: false}"),
        Variant(f"hedge p{args.percentile:g}", p95),
        Variant(f"hedge fixed {args.fixed_delay_ms:g}ms", fixed),
    ]


def gateway_yaml(sim_url: str, store: Path, hedge: str) -> str:
    return (
        f"server: {{host: {HOST}, port: 0, require_key: false}}\n"
        f"store: {{url: 'sqlite:///{store}'}}\n"
        "providers:\n"
        f"  a: {{type: sim, base_url: '{sim_url}/p/a/v1'}}\n"
        f"  b: {{type: sim, base_url: '{sim_url}/p/b/v1'}}\n"
        "models:\n"
        f"  {ALIAS}:\n"
        "    deployments: [{provider: a, model: sim-small}, {provider: b, model: sim-small}]\n"
        f"    hedge: {hedge}\n"
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
        "p95": pct(s, 95),
        "p99": pct(s, 99),
        "p99.9": pct(s, 99.9),
        "max": s[-1] if s else None,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


# --------------------------------------------------------------------------------------------------
# load


@dataclass
class Target:
    url: str
    body: bytes
    stream: bool


@dataclass
class Samples:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    latency_ms: list[float] = field(default_factory=list)  # non-stream: whole answer; stream: first body byte
    total_ms: list[float] = field(default_factory=list)  # stream: to the end of the stream
    attempts: dict[int, int] = field(default_factory=dict)  # x-bastion-attempts value -> requests
    request_ids: list[str] = field(default_factory=list)
    wall_s: float = 0.0

    def error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1


def target(url: str, model: str, stream: bool, max_tokens: int) -> Target:
    req: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": max_tokens}
    if stream:
        req["stream"] = True
    return Target(url, json.dumps(req, separators=(",", ":")).encode(), stream)


HEADERS = {"Content-Type": "application/json", "Authorization": "Bearer sim"}


async def one_request(session: aiohttp.ClientSession, t: Target, out: Samples) -> None:
    out.sent += 1
    start = perf()
    try:
        async with session.post(t.url, data=t.body, headers=HEADERS) as resp:
            if t.stream:
                first = await resp.content.readany()
                ttfb = perf()
                rest = await resp.content.read()
                ok = resp.status == 200 and b"data: [DONE]" in first + rest
            else:
                body = await resp.read()
                ttfb = perf()
                ok = resp.status == 200 and b'"choices"' in body
            end = perf()
            if not ok:
                out.error(f"http_{resp.status}" if resp.status != 200 else "bad_body")
                return
            n = int(resp.headers.get("x-bastion-attempts", "1"))
            rid = resp.headers.get("x-bastion-request-id")
    except asyncio.CancelledError:
        out.error("unfinished")
        raise
    except TimeoutError:
        out.error("timeout")
        return
    except (aiohttp.ClientError, ValueError) as e:
        out.error(type(e).__name__)
        return
    out.ok += 1
    out.latency_ms.append((ttfb - start) * 1000)
    if t.stream:
        out.total_ms.append((end - start) * 1000)
    out.attempts[n] = out.attempts.get(n, 0) + 1
    if rid:
        out.request_ids.append(rid)


async def closed_loop(session: aiohttp.ClientSession, t: Target, requests: int, concurrency: int,
                      limit_s: float) -> Samples:
    """``concurrency`` workers sending back to back until ``requests`` have been sent (or ``limit_s``)."""
    out = Samples()
    left = [requests]
    t0 = perf()

    async def worker() -> None:
        while left[0] > 0:
            left[0] -= 1
            await one_request(session, t, out)

    tasks = [asyncio.create_task(worker()) for _ in range(min(concurrency, requests))]
    if not tasks:
        return out
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=5)
    out.wall_s = perf() - t0
    return out


# --------------------------------------------------------------------------------------------------
# counters


async def get_json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as resp:
        return await resp.json(content_type=None)


async def gateway_counters(session: aiohttp.ClientSession, gw_url: str) -> dict[str, float]:
    """``hedges:<outcome>`` and ``attempts:<outcome>`` from the gateway's /metrics (summed over labels)."""
    async with session.get(gw_url + "/metrics") as resp:
        text = await resp.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _METRIC.match(line)
        if not m:
            continue
        name, labels, value = m.group(1), dict(_LABEL.findall(m.group(2))), float(m.group(3))
        if name == "bastion_hedges_total" and labels.get("model") == ALIAS:
            key = f"hedges:{labels.get('outcome')}"
        elif name == "bastion_upstream_attempts_total":
            key = f"attempts:{labels.get('outcome')}"
        else:
            continue
        out[key] = out.get(key, 0.0) + value
    return out


def _diff(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {k: after.get(k, 0.0) - before.get(k, 0.0) for k in sorted(set(after) | set(before))}


def sim_counts(stats: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {p: {"requests": int(s.get("requests", 0)), "slow_requests": int(s.get("slow_requests", 0))}
            for p, s in stats.items() if p in ("a", "b")}


def _sim_diff(after: dict[str, dict[str, int]], before: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    return {p: {k: v - before.get(p, {}).get(k, 0) for k, v in after[p].items()} for p in after}


def hedge_log(db: Path, ids: list[str]) -> dict[str, Any]:
    """From the request log of the measured requests: hedges, who won, and the delay actually used."""
    if not db.exists() or not ids:
        return {}
    wanted = set(ids)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT id, attempts FROM requests").fetchall()
    finally:
        conn.close()
    logged = hedged = won = 0
    delays: list[float] = []
    lost_life: list[float] = []  # a hedge that lost: how long it ran before it was cancelled
    kinds: dict[str, int] = {}
    for rid, attempts in rows:
        if rid not in wanted or not attempts:
            continue
        logged += 1
        att = json.loads(attempts)
        for a in att:
            k = f"{a.get('kind')}:{a.get('outcome')}"
            kinds[k] = kinds.get(k, 0) + 1
        first = next((a for a in att if a.get("kind") == "first"), None)
        hedge = next((a for a in att if a.get("kind") == "hedge"), None)
        if hedge is None:
            continue
        hedged += 1
        won += hedge.get("outcome") == "ok"
        if first is not None:
            delays.append((hedge["started_at"] - first["started_at"]) * 1000)
        if hedge.get("outcome") == "cancelled" and hedge.get("ended_at"):
            lost_life.append((hedge["ended_at"] - hedge["started_at"]) * 1000)
    return {"logged": logged, "hedged": hedged, "hedge_won": won, "attempt_kinds": kinds,
            "hedge_delay_ms": summary(delays), "lost_hedge_lifetime_ms": summary(lost_life)}


# --------------------------------------------------------------------------------------------------
# a run


async def run_variant(session: aiohttp.ClientSession, args: argparse.Namespace, sim: Proc, v: Variant,
                      stream: bool, workdir: Path) -> dict[str, Any]:
    mode = "stream" if stream else "nonstream"
    gw: Proc | None = None
    db = workdir / f"{mode}-{v.name.replace(' ', '_')}.db"
    try:
        if v.hedge is None:
            t = target(f"{sim.url}/p/a/v1/chat/completions", "sim-small", stream, args.max_tokens)
        else:
            cfg = workdir / f"{mode}-{v.name.replace(' ', '_')}.yaml"
            cfg.write_text(gateway_yaml(sim.url, db, v.hedge))
            gw = await asyncio.to_thread(_start, "gateway", ["-m", "bastion.cli", "serve", "--config", str(cfg)],
                                         workdir)
            t = target(f"{gw.url}/v1/chat/completions", ALIAS, stream, args.max_tokens)
        async with session.post(f"{sim.url}/sim/reset") as resp:
            resp.raise_for_status()
        warm = await closed_loop(session, t, args.warmup, args.concurrency, args.limit_s)
        sim0 = sim_counts(await get_json(session, f"{sim.url}/sim/stats"))
        gw0 = await gateway_counters(session, gw.url) if gw else {}
        s = await closed_loop(session, t, args.requests, args.concurrency, args.limit_s)
        await asyncio.sleep(0.3)  # streamed attempts are counted when the request's finish has run
        sim1 = sim_counts(await get_json(session, f"{sim.url}/sim/stats"))
        gw1 = await gateway_counters(session, gw.url) if gw else {}
    finally:
        rc = gw.stop() if gw is not None else None
    n = max(1, s.ok)
    sim_d = _sim_diff(sim1, sim0)
    upstream = sum(p["requests"] for p in sim_d.values())
    header_attempts = sum(k * c for k, c in s.attempts.items())
    rep: dict[str, Any] = {
        "variant": v.name,
        "mode": mode,
        "hedge_config": v.hedge,
        "requests": s.sent,
        "ok": s.ok,
        "errors": sum(s.errors.values()) + sum(warm.errors.values()),
        "error_kinds": s.errors,
        "warmup": {"requests": warm.sent, "ok": warm.ok, "errors": warm.errors},
        "throughput_rps": s.ok / s.wall_s if s.wall_s else None,
        "latency_ms": summary(s.latency_ms),
        "attempts_per_request": header_attempts / n,
        "attempts_histogram": {str(k): c for k, c in sorted(s.attempts.items())},
        "upstream_requests_per_request_sim": upstream / n,
        "sim": sim_d,
    }
    if stream:
        rep["stream_total_ms"] = summary(s.total_ms)
    if gw is not None:
        d = _diff(gw1, gw0)
        rep["gateway_attempts_by_outcome"] = {k.split(":", 1)[1]: v for k, v in d.items()
                                              if k.startswith("attempts:") and v}
        rep["attempts_per_request_metrics"] = sum(
            v for k, v in d.items() if k.startswith("attempts:") and k != "attempts:skipped") / n
        rep["hedges"] = {o: int(d.get(f"hedges:{o}", 0)) for o in ("started", "won", "lost", "budget_exhausted")}
        rep["hedges_per_request"] = rep["hedges"]["started"] / n
        rep["gateway_exit_code"] = rc
        rep["log"] = hedge_log(db, s.request_ids)
    lat = rep["latency_ms"]
    log(f"    {mode:<9} {v.name:<18} ok {s.ok}/{s.sent} err {rep['errors']}  p50 {_f(lat['p50'])}  "
        f"p99 {_f(lat['p99'])}  p99.9 {_f(lat['p99.9'])}  max {_f(lat['max'])}  "
        f"attempts/req {rep['attempts_per_request']:.3f}"
        + (f"  hedges {rep['hedges']}" if gw is not None else ""))
    return rep


def assess(runs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """Per mode: p99(off)/p99(hedged) and the extra attempts, against the issue's aim (>= 3x, < 10 %)."""
    out = []
    for mode in sorted({r["mode"] for r in runs}):
        by = {r["variant"]: r for r in runs if r["mode"] == mode}
        off = by.get("hedge off")
        if off is None:
            continue
        for name, r in by.items():
            if not name.startswith("hedge ") or name == "hedge off":
                continue
            ratio = _ratio(off["latency_ms"]["p99"], r["latency_ms"]["p99"])
            extra = r["attempts_per_request"] - 1
            out.append({
                "mode": mode, "variant": name,
                "p99_off_over_on": ratio,
                "p99.9_off_over_on": _ratio(off["latency_ms"]["p99.9"], r["latency_ms"]["p99.9"]),
                "p50_on_minus_off_ms": r["latency_ms"]["p50"] - off["latency_ms"]["p50"]
                if r["latency_ms"]["p50"] is not None and off["latency_ms"]["p50"] is not None else None,
                "extra_attempts_pct": 100 * extra,
                "aim_met": bool(ratio is not None and ratio >= 3 and extra < 0.10 and r["errors"] == 0),
            })
    return out


# --------------------------------------------------------------------------------------------------
# output


def _f(v: Any, nd: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| mode | variant | ok | errors | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | attempts/request "
        "| hedges started / won / lost / no budget | hedge delay p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in result["runs"]:
        lat = r["latency_ms"]
        h = r.get("hedges")
        hs = f"{h['started']} / {h['won']} / {h['lost']} / {h['budget_exhausted']}" if h else "-"
        delay = ((r.get("log") or {}).get("hedge_delay_ms") or {}).get("p50")
        lines.append(
            f"| {r['mode']} | {r['variant']} | {r['ok']} | {r['errors']} | {_f(lat['p50'])} | {_f(lat['p90'])} "
            f"| {_f(lat['p99'])} | {_f(lat['p99.9'])} | {_f(lat['max'])} | {r['attempts_per_request']:.3f} "
            f"| {hs} | {_f(delay)} |")
    lines.append("")
    for a in result["assessment"]:
        lines.append(
            f"- {a['mode']}, {a['variant']}: p99(off)/p99(on) = {_f(a['p99_off_over_on'], 2)}, "
            f"extra attempts {_f(a['extra_attempts_pct'], 1)} % -> aim (>= 3x for < 10 %) "
            f"{'met' if a['aim_met'] else 'NOT met'}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000, help="measured requests per variant and mode (default 2000)")
    p.add_argument("--concurrency", type=int, default=20, help="closed-loop workers (default 20)")
    p.add_argument("--warmup", type=int, default=100, help="warm-up requests per variant, excluded (default 100)")
    p.add_argument("--stream", action="store_true", help="streaming only (time to first body byte)")
    p.add_argument("--no-stream", action="store_true", help="non-streaming only")
    p.add_argument("--median-ms", type=float, default=40.0, help="simulated latency (default 40)")
    p.add_argument("--slow-rate", type=float, default=0.05, help="fraction of slow upstream requests (default 0.05)")
    p.add_argument("--slow-factor", type=float, default=10.0, help="slow requests' latency multiplier (default 10)")
    p.add_argument("--percentile", type=float, default=95.0, help="hedge.percentile of the adaptive variant")
    p.add_argument("--min-samples", type=int, default=20, help="hedge.min_samples (default 20)")
    p.add_argument("--budget-ratio", type=float, default=0.1, help="hedge.budget_ratio (default 0.1)")
    p.add_argument("--fixed-delay-ms", type=float, default=80.0, help="hedge.delay_ms of the fixed variant (default 80)")
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--limit-s", type=float, default=300.0, help="time limit per load phase (default 300 s)")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/hedging-<ts>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, request logs)")
    p.add_argument("--quick", action="store_true", help="a smoke run: 200 requests, 50 warm-up, concurrency 10")
    a = p.parse_args(argv)
    if a.quick:
        a.requests, a.warmup, a.concurrency = 200, 50, 10
    if a.stream and a.no_stream:
        p.error("--stream and --no-stream exclude each other")
    if a.requests < 1 or a.concurrency < 1 or a.warmup < 0 or a.limit_s <= 0:
        p.error("need --requests >= 1, --concurrency >= 1, --warmup >= 0")
    a.modes = [False] if a.no_stream else [True] if a.stream else [False, True]
    return a


async def run(args: argparse.Namespace, sim: Proc, workdir: Path) -> list[dict[str, Any]]:
    conn = aiohttp.TCPConnector(limit=max(64, 2 * args.concurrency), keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=60)
    runs = []
    async with aiohttp.ClientSession(connector=conn, timeout=timeout, auto_decompress=False) as session:
        for stream in args.modes:
            for v in variants(args):
                log(f"... {'stream' if stream else 'nonstream'} {v.name}")
                runs.append(await run_variant(session, args, sim, v, stream, workdir))
    return runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now(_dt.UTC)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-hedging-"))
    sim = None
    try:
        sim_cfg = tmp / "sim.yaml"
        sim_cfg.write_text(sim_yaml(args))
        sim = _start("sim", ["-m", "bastion.sim.server", "--host", HOST, "--port", "0", "--config", str(sim_cfg)], tmp)
        log(f"sim {sim.url} (pid {sim.pid}), workdir {tmp}")
        runs = uvloop.run(run(args, sim, tmp)) if uvloop is not None else asyncio.run(run(args, sim, tmp))
    finally:
        sim_rc = sim.stop() if sim is not None else None
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "finished_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine(), "uvloop": uvloop is not None},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "modes")}
        | {"modes": ["stream" if m else "nonstream" for m in args.modes]},
        "upstream": {"profiles": ["a", "b"], "distribution": "fixed", "median_ms": args.median_ms,
                     "slow_rate": args.slow_rate, "slow_factor": args.slow_factor, "tokens_per_second": 0,
                     "output_tokens": [8, 16]},
        "runs": runs,
        "errors_total": sum(r["errors"] for r in runs),
        "sim_exit_code": sim_rc,
    }
    result["assessment"] = assess(runs, args)
    result["table_md"] = markdown(result)
    path = Path(args.json) if args.json else (
        Path(__file__).resolve().parent / "results" / f"hedging-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text)
    log("\n" + result["table_md"])
    log(f"JSON: {path}")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
