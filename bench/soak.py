#!/usr/bin/env python3
"""Soak: a steady open-loop load through the gateway for minutes, with its memory sampled all along.

Starts a simulator and a gateway (temporary directory, SQLite log) with the everyday features on: a virtual
key, input and output guards, a quota and a soft budget (metering on every request), the response cache
(small, so that it fills and evicts during warm-up), the request log with bodies. Sends ``--rate`` requests
per second for ``--duration`` seconds, half streaming, over a rotating set of prompts, and samples the
gateway's RSS every ``--every`` seconds. After the warm-up (``--warmup`` seconds), memory growth is fitted
against requests completed (least squares) and reported as MB per 10,000 requests; the issue's bar is under
1 MB. Errors and latency percentiles are reported too, so a soak that "passes" by failing requests shows.

    .venv/bin/python bench/soak.py                          # 10 minutes at 200 requests/s
    .venv/bin/python bench/soak.py --duration 60 --warmup 20  # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from overhead import HOST, Proc, _start, pct, sim_yaml

GATEWAY_YAML = """
server: {{host: {host}, port: 0}}
store: {{url: "sqlite:///{store}"}}
cache: {{enabled: true, max_entries: 2000}}
providers:
  sim: {{type: sim, base_url: "{sim}/v1"}}
models:
  sim-small:
    deployments: [{{provider: sim, model: sim-small}}]
tenants:
  default: {{}}
limits:
  - {{scope: tenant, rpm: 1000000}}
budgets:
  - {{name: soak, scope: tenant, period: day, limit_usd: 1000000, mode: soft}}
"""


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def slope(xs: list[float], ys: list[float]) -> float:
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def drive(url: str, key: str, rate: float, duration: float, every: float, pid: int,
                prompts: int) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    lat: list[float] = []
    errors: dict[str, int] = {}
    done = 0
    samples: list[tuple[float, int, float]] = []  # (seconds, requests done, RSS MB)

    async def one(session: aiohttp.ClientSession, i: int, sched: float) -> None:
        nonlocal done
        stream = i % 2 == 1
        body = json.dumps({"model": "sim-small", "temperature": 0, "stream": stream, "max_tokens": 16,
                           "messages": [{"role": "user", "content": f"soak prompt {i % prompts}: say something"}]})
        try:
            async with session.post(url + "/v1/chat/completions", data=body, headers=headers) as r:
                data = await r.read()
                ok = r.status == 200 and (b"[DONE]" in data if stream else b'"choices"' in data)
                if not ok:
                    errors[f"http_{r.status}"] = errors.get(f"http_{r.status}", 0) + 1
                    return
        except (aiohttp.ClientError, TimeoutError) as e:
            errors[type(e).__name__] = errors.get(type(e).__name__, 0) + 1
            return
        done += 1
        lat.append((time.perf_counter() - sched) * 1000)

    conn = aiohttp.TCPConnector(limit=500)
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=60)) as session:
        loop = asyncio.get_running_loop()
        tasks: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        n = int(rate * duration)
        next_sample = 0.0
        for i in range(n):
            sched = t0 + i / rate
            now = time.perf_counter()
            if sched > now:
                await asyncio.sleep(sched - now)
            task = loop.create_task(one(session, i, sched))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            if time.perf_counter() - t0 >= next_sample:
                samples.append((time.perf_counter() - t0, done, rss_mb(pid)))
                next_sample += every
        if tasks:
            await asyncio.wait(set(tasks), timeout=60)
        samples.append((time.perf_counter() - t0, done, rss_mb(pid)))
    lat.sort()
    return {"sent": n, "ok": done, "errors": errors, "samples": samples,
            "latency_ms": {"p50": pct(lat, 50), "p99": pct(lat, 99), "max": lat[-1] if lat else None}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=200.0, help="requests per second (open loop)")
    ap.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds excluded from the growth fit")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between RSS samples")
    ap.add_argument("--prompts", type=int, default=5000, help="distinct prompts, rotated (the cache holds 2,000)")
    ap.add_argument("--json", help="write the result here too")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bastion-soak-"))
    sim = gw = None
    try:
        (tmp / "sim.yaml").write_text(sim_yaml(16, [0]))
        sim = _start("sim", ["-m", "bastion.sim.server", "--host", HOST, "--port", "0", "--config",
                             str(tmp / "sim.yaml")], tmp)
        cfg = tmp / "bastion.yaml"
        cfg.write_text(GATEWAY_YAML.format(host=HOST, store=tmp / "bastion.db", sim=sim.url))
        out = subprocess.run([sys.executable, "-m", "bastion.cli", "keys", "create", "--config", str(cfg),
                              "--tenant", "default", "--json"], check=True, capture_output=True, text=True, cwd=tmp)
        key = json.loads(out.stdout)["key"]
        gw = _start("gateway", ["-m", "bastion.cli", "serve", "--config", str(cfg)], tmp)
        res = asyncio.run(drive(gw.url, key, args.rate, args.duration, args.every, gw.pid, args.prompts))
        tracebacks = sum(1 for line in gw.output if "Traceback" in line)
    finally:
        for p in (gw, sim):
            if isinstance(p, Proc):
                p.stop()
    rows = 0
    try:
        import sqlite3
        conn = sqlite3.connect(tmp / "bastion.db")
        rows = conn.execute("SELECT COUNT(*) FROM requests").fetchone()[0]
        conn.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    after = [(n, mb) for t, n, mb in res["samples"] if t >= args.warmup]
    growth = slope([n for n, _ in after], [mb for _, mb in after]) * 10_000
    samples = res.pop("samples")
    result = {**res, "rows_logged": rows, "tracebacks": tracebacks,
              "rss_mb": {"start": samples[0][2], "after_warmup": after[0][1] if after else None,
                         "end": samples[-1][2], "max": max(mb for _, _, mb in samples)},
              "growth_mb_per_10k_after_warmup": round(growth, 3),
              "samples": [{"t_s": round(t, 1), "done": n, "rss_mb": round(mb, 1)} for t, n, mb in samples]}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
