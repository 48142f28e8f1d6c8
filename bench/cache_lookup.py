#!/usr/bin/env python3
"""Semantic cache lookup latency: embedding, index search, and both, at 1k / 10k / 100k entries in one partition.

One partition (the worst case: every entry of a tenant's alias with the same non-last context) is filled with
random unit vectors plus the embeddings of a few hundred real questions (so the lexical guard sees real
candidates), then each query is timed one at a time on one thread, as the gateway does it (``to_thread``):

* ``embed``          ``Embedder.shared().embed([question])`` (all-MiniLM-L6-v2 int8 on onnxruntime, 1 thread);
* ``search``         ``SemanticIndex.search(partition, vector, DEFAULT_THRESHOLD, text=question)``;
* ``embed+search``   both, i.e. what a cache miss costs before the request goes upstream.

Queries are paraphrases of stored questions (hits) and unrelated questions (misses), in equal parts.
The JSON goes to stdout and to ``--json`` (default ``bench/results/cache_lookup-<timestamp>.json``);
a markdown table goes to stderr.

    .venv/bin/python bench/cache_lookup.py                 # 1k, 10k, 100k entries, 400 queries each
    .venv/bin/python bench/cache_lookup.py --quick         # 1k and 10k, 100 queries: a few seconds
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from bastion.cache import embedder as emb  # noqa: E402
from bastion.cache.semantic import DEFAULT_THRESHOLD, SemanticIndex  # noqa: E402

PAIRS = ROOT / "tests" / "data" / "paraphrases.jsonl"
UNRELATED = [
    "What is the airspeed velocity of an unladen swallow?",
    "Draft a limerick about a grumpy lighthouse keeper",
    "Which enzymes break down lactose?",
    "How do I repot an orchid without damaging the roots?",
    "List three causes of the French Revolution",
    "What is a monad in functional programming?",
    "How do solar panels convert light into electricity?",
    "Plan a three-day itinerary for Lisbon",
]


def pct(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def stats(xs: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(pct(xs, 50), 3),
        "p99_ms": round(pct(xs, 99), 3),
        "mean_ms": round(float(np.mean(xs)) * 1e3, 3),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="1000,10000,100000", help="entries in the partition (comma-separated)")
    p.add_argument("--queries", type=int, default=400, help="timed lookups per size")
    p.add_argument("--quick", action="store_true", help="sizes 1000,10000 and 100 queries")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/...)")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.queries = "1000,10000", 100
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now(_dt.UTC)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    rows = [json.loads(line) for line in PAIRS.read_text(encoding="utf-8").splitlines() if line.strip()]
    stored = [r["a"] for r in rows if r["label"] == 1]
    paraphrases = [r["b"] for r in rows if r["label"] == 1]
    have_model = emb.available()
    result: dict[str, Any] = {
        "schema": "bastion-bench-cache-lookup/1",
        "started_at": started.isoformat(),
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
        },
        "settings": {"sizes": sizes, "queries": args.queries, "threshold": DEFAULT_THRESHOLD, "dim": emb.DIM},
        "embedder": None,
        "runs": [],
    }
    if have_model:
        t0 = time.perf_counter()
        e = emb.Embedder.shared()
        load_s = time.perf_counter() - t0
        stored_v = e.embed(stored)
        e.embed(["warm-up"])
        result["embedder"] = {"model": emb.MODEL_ID, "load_s": round(load_s, 3)}
    else:
        print(f"semantic extra missing ({emb.INSTALL_HINT}): timing search alone", file=sys.stderr)
        stored_v = None

    rng = np.random.default_rng(0)
    part = ("tenant", "alias", "context")
    for n in sizes:
        idx = SemanticIndex(max_entries_per_partition=max(n, 1))
        n_real = 0 if stored_v is None else min(len(stored), n)
        filler = rng.standard_normal((n - n_real, emb.DIM)).astype(np.float32)
        filler /= np.linalg.norm(filler, axis=1, keepdims=True)
        t0 = time.perf_counter()
        for i in range(n - n_real):
            idx.add(part, f"r{i}", filler[i])
        for i in range(n_real):
            idx.add(part, f"q{i}", stored_v[i], text=stored[i])  # type: ignore[index]
        fill_s = time.perf_counter() - t0
        del filler
        embed_t: list[float] = []
        search_t: list[float] = []
        both_t: list[float] = []
        hits = 0
        for k in range(args.queries):
            if k % 2 == 0 and n_real:
                text = paraphrases[(k // 2) % n_real]
            else:
                text = UNRELATED[k % len(UNRELATED)] + f" #{k}"
            if have_model:
                t0 = time.perf_counter()
                v = e.embed([text])[0]
                t1 = time.perf_counter()
            else:
                v = rng.standard_normal(emb.DIM).astype(np.float32)
                t0 = t1 = time.perf_counter()
            got = idx.search(part, v, DEFAULT_THRESHOLD, text=text)
            t2 = time.perf_counter()
            hits += got is not None
            if have_model:
                embed_t.append(t1 - t0)
                both_t.append(t2 - t0)
            search_t.append(t2 - t1)
        run = {
            "entries": n,
            "fill_s": round(fill_s, 3),
            "matrix_mb": round(n * emb.DIM * 4 / 1e6, 1),
            "hits": hits,
            "search": stats(search_t),
            "embed": stats(embed_t) if embed_t else None,
            "embed+search": stats(both_t) if both_t else None,
        }
        result["runs"].append(run)
        print(
            f"{n:>7} entries: search p50 {run['search']['p50_ms']} ms, hits {hits}/{args.queries}",
            file=sys.stderr,
        )
        del idx

    lines = [
        "| entries | matrix MB | search p50 | search p99 | embed p50 | embed p99 | embed+search p50 | embed+search p99 |"
    ]
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in result["runs"]:
        e_, b_ = r["embed"] or {}, r["embed+search"] or {}
        lines.append(
            f"| {r['entries']:,} | {r['matrix_mb']} | {r['search']['p50_ms']} ms | {r['search']['p99_ms']} ms | "
            f"{e_.get('p50_ms', '-')} ms | {e_.get('p99_ms', '-')} ms | {b_.get('p50_ms', '-')} ms | "
            f"{b_.get('p99_ms', '-')} ms |"
        )
    result["table_md"] = "\n".join(lines)
    print(result["table_md"], file=sys.stderr)
    path = (
        Path(args.json)
        if args.json
        else ROOT / "bench" / "results" / f"cache_lookup-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
