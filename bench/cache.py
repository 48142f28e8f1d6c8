#!/usr/bin/env python3
"""Cache hit latency through the gateway (exact and semantic) against the direct call, and index lookup
latency at 1k/10k/100k entries.

Starts a simulator (``--upstream-ms`` of latency, default 200, so that a miss looks like a real call) and a
gateway with the cache on (semantic on when the ``semantic`` extra is installed). Sequential requests, one
at a time (latency, not throughput):

* ``direct``        the simulator itself;
* ``miss``          through the gateway, each prompt new;
* ``exact hit``     the same prompts again;
* ``semantic hit``  paraphrases of the stored prompts (a different last turn, same context);

then, in-process, the semantic index's search at 1k/10k/100k entries of one partition (and embed+search).
Prints a table and JSON (``--json``, default ``bench/results/cache-<timestamp>.json``).

    .venv/bin/python bench/cache.py [--requests 200] [--upstream-ms 200] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as _dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402

PARAPHRASE = [
    ("How do I reset my password?", "What's the way to reset my password?"),
    ("What is the capital of France?", "Which city is the capital of France?"),
    ("How can I cancel my subscription?", "How do I cancel my subscription?"),
    ("What time does the store open?", "When does the store open?"),
    ("How do I change my shipping address?", "How can I update my shipping address?"),
]


def _semantic_available() -> bool:
    try:
        from bastion.cache.embedder import available
    except ImportError:
        return False
    return available()


async def _timed(session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str]
                 ) -> tuple[float, str | None]:
    t0 = time.perf_counter()
    async with session.post(url, json=body, headers=headers) as r:
        await r.read()
        if r.status != 200:
            raise RuntimeError(f"{url} answered {r.status}")
        return (time.perf_counter() - t0) * 1000, r.headers.get("x-bastion-cache")


async def measure(sim: str, gw: str, n: int, semantic: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    async with aiohttp.ClientSession() as s:
        def body(text: str) -> dict[str, Any]:
            return {"model": "cached", "temperature": 0, "max_tokens": 16,
                    "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": text}]}

        prompts = [f"{PARAPHRASE[i % len(PARAPHRASE)][0]} (case {i})" for i in range(n)]
        direct = [(await _timed(s, sim + "/v1/chat/completions", body(p) | {"model": "sim-small"}, {}))[0]
                  for p in prompts]
        miss, hit = [], []
        for p in prompts:
            ms, status = await _timed(s, gw + "/v1/chat/completions", body(p), {})
            assert status == "miss", status
            miss.append(ms)
        for p in prompts:
            ms, status = await _timed(s, gw + "/v1/chat/completions", body(p), {})
            assert status == "hit", status
            hit.append(ms)
        out = {"direct": ov.summary(direct), "miss": ov.summary(miss), "exact_hit": ov.summary(hit)}
        if semantic:
            sem, statuses = [], []
            for i in range(n):
                a, b = PARAPHRASE[i % len(PARAPHRASE)]
                ms, status = await _timed(s, gw + "/v1/chat/completions", body(f"{b} (case {i})"), {})
                statuses.append((status or "").split(";")[0])
                sem.append(ms)
            out["semantic_lookup"] = ov.summary(sem)
            hits = [ms for ms, st in zip(sem, statuses, strict=True) if st == "semantic-hit"]
            out["semantic_hit"] = ov.summary(hits) if hits else None
            out["semantic_hit_rate"] = statuses.count("semantic-hit") / len(statuses)
    return out


def index_latency(sizes: list[int]) -> dict[str, Any]:
    if not _semantic_available():
        return {"skipped": "the semantic extra is not installed"}
    import numpy as np

    from bastion.cache.embedder import Embedder
    from bastion.cache.semantic import SemanticIndex

    rng = np.random.default_rng(7)
    emb = Embedder.shared()
    out: dict[str, Any] = {}
    for size in sizes:
        index = SemanticIndex()
        vecs = rng.standard_normal((size, 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        for i in range(size):
            index.add(("t", "a", "c"), f"e{i}", vecs[i])
        q = emb.embed(["How do I reset my password?"])[0]
        search, both = [], []
        for _ in range(200):
            t0 = time.perf_counter()
            index.search(("t", "a", "c"), q, 0.99)
            search.append((time.perf_counter() - t0) * 1000)
        for _ in range(50):
            t0 = time.perf_counter()
            index.search(("t", "a", "c"), emb.embed(["How do I reset my password?"])[0], 0.99)
            both.append((time.perf_counter() - t0) * 1000)
        out[str(size)] = {"search": ov.summary(search), "embed_and_search": ov.summary(both)}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--upstream-ms", type=float, default=200.0)
    p.add_argument("--sizes", default="1000,10000,100000")
    p.add_argument("--quick", action="store_true", help="20 requests, index sizes 1000 only")
    p.add_argument("--json", metavar="PATH")
    args = p.parse_args(argv)
    n = 20 if args.quick else args.requests
    sizes = [1000] if args.quick else [int(x) for x in args.sizes.split(",")]
    semantic = _semantic_available()
    work = Path(tempfile.mkdtemp(prefix="bastion-bench-cache-"))
    (work / "sim.yaml").write_text(f"latency: {{distribution: fixed, median_ms: {args.upstream_ms}}}\n")
    sim = ov._start("sim", ["-m", "bastion.sim.server", "--port", "0", "--config", str(work / "sim.yaml")], work)
    try:
        sem = "{enabled: true}" if semantic else "{enabled: false}"
        (work / "bastion.yaml").write_text(f"""
server: {{port: 0, require_key: false}}
store: {{url: 'sqlite:///{work / "b.db"}'}}
cache: {{enabled: true}}
providers: {{sim: {{type: sim, base_url: {sim.url}/v1}}}}
models:
  cached: {{deployments: [{{provider: sim, model: sim-small}}], cache: {{semantic: {sem}}}}}
""")
        gw = ov._start("gateway", ["-m", "bastion.cli", "serve", "--config", str(work / "bastion.yaml")], work)
        try:
            result = asyncio.run(measure(sim.url, gw.url, n, semantic))
        finally:
            gw.stop()
    finally:
        sim.stop()
    result = {"requests": n, "upstream_ms": args.upstream_ms, "semantic": semantic, "gateway": result,
              "index": index_latency(sizes)}
    g = result["gateway"]
    rows = [("direct (sim)", g["direct"]), ("gateway miss", g["miss"]), ("gateway exact hit", g["exact_hit"])]
    if "semantic_lookup" in g:
        rows.append((f"gateway paraphrase ({g['semantic_hit_rate']:.0%} hit)", g["semantic_lookup"]))
        if g.get("semantic_hit"):
            rows.append(("gateway semantic hit", g["semantic_hit"]))
    print(f"{'path':<34} {'p50 ms':>8} {'p99 ms':>8} {'vs direct p50':>14}", file=sys.stderr)
    for name, s in rows:
        ratio = s["p50"] / g["direct"]["p50"] if g["direct"]["p50"] else float("nan")
        print(f"{name:<34} {s['p50']:>8.2f} {s['p99']:>8.2f} {ratio:>14.3f}", file=sys.stderr)
    for size, v in (result["index"].items() if isinstance(result["index"], dict) else []):
        if isinstance(v, dict):
            print(f"index {size:>7} entries: search p50 {v['search']['p50']:.3f} ms p99 {v['search']['p99']:.3f} ms;"
                  f" embed+search p50 {v['embed_and_search']['p50']:.2f} ms", file=sys.stderr)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = Path(args.json) if args.json else Path(__file__).parent / "results" / f"cache-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
