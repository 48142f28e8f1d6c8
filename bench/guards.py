#!/usr/bin/env python3
"""The latency Bastion's guards add to a 1,000-token request with a ~1,000-token answer.

Product requirement checked: all default input and output guards together add **under 5 ms p50** to a
1,000-token request. Two parts:

1. **In-process** (the precise figure): each guard on its own, timed with ``time.perf_counter_ns`` over
   ``--iterations`` calls after ``--warmup`` calls (garbage collector off while timing), in two passes
   (forward, then reverse order) merged, with the policy ``GuardsConfig()`` (the defaults):

   * the input guard via ``GuardStage.check_input``: rules only, and rules + classifier (the default);
   * ``GuardStage.protect`` (canary in the system prompt, delimiting of the one untrusted document part);
   * the parts of the whole-answer check on their own (leak check, output scanners, refusal detector),
     then ``GuardStage.check_answer`` on the whole answer (OpenAI dialect);
   * ``StreamGuard`` over the same answer as OpenAI ``chat.completion.chunk`` dicts, one per o200k token
     (~4 characters): the total per stream and the cost per chunk;
   * all defaults together: check_input + protect + check_answer (non-stream) and check_input + protect +
     stream guard (stream).

2. **End to end**: a simulator (200-token answers, ``tokens_per_second: 0``, no latency) and two gateways,
   one with every guard off and one with the defaults, plus the simulator called directly; the same
   1,000-token request, non-stream and stream, closed loop at concurrency 1 (latency, not throughput), in
   alternating segments (direct, off, default, default, off, direct, ...). Reports p50/p90/p99, the
   difference default minus off, ratios to direct, and each gateway's CPU per request.

Prints a table and writes JSON (``--json``, default ``bench/results/guards-<UTC timestamp>.json``).

    .venv/bin/python bench/guards.py                  # full run, about a minute
    .venv/bin/python bench/guards.py --quick          # a few seconds, smoke test
    .venv/bin/python bench/guards.py --no-e2e --iterations 1000
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import datetime as _dt
import gc
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead as ov  # noqa: E402  (one process helper for every bench script)

from bastion.config.guards import GuardsConfig  # noqa: E402
from bastion.config.model import BastionConfig  # noqa: E402
from bastion.guards.answer import leak_verdict  # noqa: E402
from bastion.guards.output import scan_output  # noqa: E402
from bastion.guards.refusal import detect_refusal  # noqa: E402
from bastion.guards.verdicts import enabled_kinds  # noqa: E402
from bastion.metering import tokens as _tokens  # noqa: E402
from bastion.pipeline.context import RequestContext  # noqa: E402
from bastion.pipeline.guarding import GuardStage  # noqa: E402
from bastion.telemetry import Metrics  # noqa: E402

SCHEMA = "bastion-bench-guards/1"
HOST = "127.0.0.1"
MODEL = "sim-small"
LIMIT_MS = 5.0
REQUEST_TOKENS = 1000  # the user turn
ANSWER_TOKENS = 1000
ns = time.perf_counter_ns

GUARDS_OFF = ("guards:\n"  # 'off' quoted: YAML reads a bare off as false
              "  input: {action: 'off'}\n"
              "  untrusted: {marking: 'off'}\n"
              "  leak: {action: 'off'}\n"
              "  output: {secrets: 'off', pii: 'off', images: 'off', links: 'off'}\n"
              "  refusal: {action: 'off'}\n"
              "  json: {action: 'off'}\n"
              "  tools: {action: 'off'}\n")

# --------------------------------------------------------------------------------------------------
# the workload: a support assistant's system prompt, a customer's question with one retrieved knowledge
# base article marked untrusted, and a long answer (ASCII prose with numbers, commands, one link, one
# e-mail address)

SYSTEM_PROMPT = """\
You are the support assistant for Northwind Cloud, a managed hosting provider for small engineering teams. \
Answer questions about accounts, billing, deployments, managed databases and networking, using the \
documentation provided in the conversation and the customer's own messages. Be concise and precise: use \
numbered steps for procedures, quote exact commands and setting names, and say clearly when something is \
not possible on the customer's plan. Never invent prices, limits or dates that are not in the \
documentation; if you are unsure, say so and offer to open a ticket with the on-call engineer. Do not \
discuss internal tooling or other customers. Reply in the language the customer writes in, keep a \
friendly and professional tone, and end with one short line that says what the customer should do next."""

QUESTION = """\
Hi, we run a Django app on Northwind Cloud (team plan, project "ledger-prod", region eu-west-2) with a \
managed Postgres 15 database on the Standard-4 size. Since Tuesday's release we see intermittent errors \
under load: about 2% of requests between 09:00 and 11:00 fail with "FATAL: remaining connection slots are \
reserved for non-replication superuser connections", and the p95 latency of our checkout endpoint went \
from 180 ms to roughly 1.4 s. We scaled the web service from 4 to 10 instances last week because of a \
marketing campaign, and each instance runs gunicorn with 8 workers. We do not use a pooler today. I read \
the article below but I am not sure which pool mode is safe for Django, whether we have to change our \
connection settings, and if this needs downtime. We also have a nightly migration job and a Celery \
worker that talk to the same database. What exactly should we change, in which order, and how do we \
check that it worked? Thanks, Priya"""

DOCUMENT = """\
Connection pooling for managed Postgres

Every managed Postgres database on Northwind Cloud accepts a fixed number of direct connections, which \
depends on its size: 25 on Starter-1, 50 on Standard-2, 100 on Standard-4 and 200 on Performance-8. \
Three of these are reserved for the platform (backups, monitoring and failover), so the usable number is \
slightly lower. When every slot is taken, new connections are refused with the error "remaining \
connection slots are reserved", and applications usually report it as an intermittent failure that \
appears only at peak traffic.

Each process of your application that talks to the database holds at least one connection, and many \
frameworks keep it open between requests. A web service with 10 instances and 8 worker processes per \
instance can therefore hold 80 connections before any background job, migration or console session is \
counted. Scaling the web tier out is the most common reason a database that worked for months suddenly \
runs out of connections.

The built-in pooler

Team and Enterprise plans include a managed PgBouncer for each database. It listens on port 6432 of the \
same private host name as the database and multiplexes many client connections over a small number of \
server connections. You enable it in the dashboard under Database, Settings, Connection pooling, or with \
the CLI: nwc db pooler enable --database <name> --mode transaction --pool-size 40. Enabling or disabling \
the pooler does not restart the database and does not drop existing direct connections; applications \
move to the pooler when they reconnect to port 6432.

Pool modes

In session mode a client keeps the same server connection until it disconnects. It is compatible with \
every Postgres feature, but it only helps when clients connect and disconnect often. In transaction mode \
a server connection is assigned for the duration of one transaction and then returned to the pool. This \
gives the largest reduction in server connections, but features that keep state on the connection \
between transactions do not work: session-level advisory locks, SET commands without LOCAL, LISTEN and \
NOTIFY, and prepared statements created with PREPARE, unless the driver uses protocol-level prepared \
statements and the pooler runs version 1.21 or later. Statement mode is rarely useful and is not \
recommended.

Framework settings

Django: use transaction mode, set DISABLE_SERVER_SIDE_CURSORS to True for the database, and keep \
CONN_MAX_AGE at 0 or a small value such as 60 seconds; persistent connections are fine because the \
pooler, not the database, holds the expensive server connections. Rails: set prepared_statements to \
false in database.yml when the pooler is older than version 1.21. Celery and other job runners can share \
the pool, but long transactions in jobs hold a server connection for their whole duration, so keep them \
short or give jobs a separate pool with its own size.

Migrations and administrative work

Schema migrations often use session features (advisory locks in Django and Rails, for example), so run \
them against the direct port 5432 rather than the pooler. The same applies to pg_dump, to psql sessions \
that use SET, and to anything that relies on LISTEN. Keep a few direct connections free for this: a pool \
size of 40 on a database with 100 slots leaves ample room.

Sizing the pool

A good starting point for the pool size is two to four times the number of CPU cores of the database: \
16 to 32 on Standard-4, which has 8 cores. Larger pools rarely improve throughput, because the database \
spends more time switching between connections than doing work. Watch the metrics cl_waiting (clients \
waiting for a server connection) and maxwait in the dashboard: a client wait that stays above zero for \
minutes at a time means the pool is too small or transactions are too long.

Checking that it works

After the change, the dashboard graph Connections by source should show most connections coming from \
the pooler and the total staying well below the limit. The error rate for "remaining connection slots" \
should drop to zero. If latency rises instead, look for long transactions with the query \
SELECT pid, now() - xact_start AS age, query FROM pg_stat_activity WHERE state <> 'idle' ORDER BY age \
DESC LIMIT 20; and for clients waiting in the pooler statistics. Open a ticket if the pooler reports \
errors you cannot explain; include the database name, the time range and the request IDs of a few failed \
requests. Connection limits per size are reviewed every quarter and published on the pricing page; the \
figures in this article were last checked on 2026-09-30."""

ANSWER = """\
Thanks for the detailed report, Priya. The error you see is the database running out of connection \
slots, not a bug in your release: the scale-out from 4 to 10 web instances is what tipped it over. Here \
is what is happening, what to change and in which order, and how to confirm the fix.

## Why it started

Your Standard-4 database accepts 100 direct connections, and 3 of them are reserved for the platform, so \
97 are usable. With 10 instances and 8 gunicorn workers each, the web tier alone can hold 80 \
connections. Add the Celery worker (its concurrency setting decides how many connections it opens, often \
4 to 8), a nightly migration job, and any console sessions, and you reach the limit at peak traffic, \
which matches the 09:00 to 11:00 window. The latency jump from 180 ms to about 1.4 s at p95 is the same \
problem seen from the other side: requests wait for a connection, retry, or fail.

## What to change

1. **Enable the built-in pooler in transaction mode.** Your team plan includes it. In the dashboard go \
to Database, Settings, Connection pooling, or run:

   ```
   nwc db pooler enable --database ledger-prod-db --mode transaction --pool-size 32
   ```

   A pool size of 32 is four times the 8 cores of a Standard-4, the upper end of the recommended range. \
Enabling the pooler does not restart the database and does not drop existing connections, so no \
downtime is needed.

2. **Point the web service at port 6432.** Keep the same private host name and change only the port in \
your DATABASE_URL (or in the PORT entry of your Django DATABASES setting). Instances pick up the new \
value on their next deploy or restart; a rolling restart of the 10 instances is enough.

3. **Adjust the Django database settings** for transaction mode:

   ```
   DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = True
   DATABASES["default"]["CONN_MAX_AGE"] = 60
   ```

   Server-side cursors (used by QuerySet.iterator()) keep state between transactions, which transaction \
mode cannot carry. CONN_MAX_AGE of 60 seconds keeps client connections to the pooler warm; the pooler \
holds the expensive server connections, not your workers.

4. **Keep migrations on the direct port 5432.** Django's migration framework and some third-party apps \
take advantage of session features such as advisory locks, which do not work through a transaction-mode \
pool. Give the nightly migration job its own DATABASE_URL with port 5432. The same goes for manual psql \
sessions and pg_dump.

5. **Decide where Celery connects.** It can share the pooler if its tasks keep transactions short. If \
some tasks run long transactions (bulk imports, reports), they hold a server connection for the whole \
time and can starve the web tier; in that case point Celery at the direct port with a low concurrency, \
or ask us to create a second pool for it.

Order matters: enable the pooler first, then move the web service, then change the settings in the same \
deploy as the port change, and only then look at Celery. Each step can be rolled back on its own by \
switching the port back to 5432.

## How to check that it worked

- In the dashboard, the Connections by source graph should show most connections coming from the \
pooler, and the total should stay well below 97 even at peak.
- The count of "remaining connection slots" errors in your logs should drop to zero within the first \
busy morning after the change.
- Watch cl_waiting and maxwait on the pooler page. Short spikes are normal; a value above zero for \
minutes at a time means the pool is too small or a transaction is too long.
- If p95 latency does not return to around 180 ms, look for long transactions with:

   ```
   SELECT pid, now() - xact_start AS age, query FROM pg_stat_activity
   WHERE state <> 'idle' ORDER BY age DESC LIMIT 20;
   ```

The full reference, including the limits per database size, is in the [connection pooling guide](\
https://docs.northwind-cloud.com/databases/connection-pooling). The figures I used (100 connections on \
Standard-4, 3 reserved, 8 cores) come from that article, last checked on 2026-09-30.

If anything in the pooler statistics looks wrong after the change, or if you would like a separate pool \
for Celery, write to support@northwind-cloud.com with the database name, the time range and the request \
IDs of two or three failed requests, and the on-call engineer will take it from there. Typical response \
time on the team plan is under 4 hours on business days.

Next step: enable the pooler with a pool size of 32, then do a rolling restart of the web service with \
port 6432 and the two Django settings above."""


def _enc() -> Any:
    return _tokens.get_encoding("o200k_base")


def count_tokens(text: str) -> int:
    return len(_enc().encode_ordinary(text))


def trim_to_tokens(text: str, budget: int) -> str:
    """The longest prefix of ``text`` ending at a word boundary with at most ``budget`` tokens."""
    if count_tokens(text) <= budget:
        return text
    words = text.split(" ")
    lo, hi = 0, len(words)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip()


def token_pieces(text: str) -> list[str]:
    """``text`` split at o200k token boundaries (bytes of a split character are kept together)."""
    enc = _enc()
    out: list[str] = []
    buf = b""
    for t in enc.encode_ordinary(text):
        buf += enc.decode_single_token_bytes(t)
        try:
            out.append(buf.decode())
            buf = b""
        except UnicodeDecodeError:
            continue
    if buf:
        out.append(buf.decode(errors="replace"))
    assert "".join(out) == text
    return out


def build_request() -> dict[str, Any]:
    question_tokens = count_tokens(QUESTION)
    document = trim_to_tokens(DOCUMENT, REQUEST_TOKENS - question_tokens)
    return {
        "model": MODEL,
        "max_tokens": 1024,
        "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": [
                {"type": "text", "text": QUESTION},
                {"type": "text", "text": document, "untrusted": "kb"},
            ]},
        ],
    }


def build_answer() -> dict[str, Any]:
    text = trim_to_tokens(ANSWER, ANSWER_TOKENS)
    return {
        "id": "chatcmpl-bench", "object": "chat.completion", "created": 1767225600, "model": MODEL,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": {"prompt_tokens": 1180, "completion_tokens": count_tokens(text), "total_tokens": 0},
    }


def stream_chunks(text: str) -> list[dict[str, Any]]:
    """The answer as OpenAI chat.completion.chunk dicts: a role chunk, one chunk per token, a finish chunk."""
    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1767225600, "model": MODEL,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
    return ([chunk({"role": "assistant", "content": ""})] + [chunk({"content": p}) for p in token_pieces(text)]
            + [chunk({}, "stop")])


def describe(text: str) -> dict[str, Any]:
    return {
        "chars": len(text),
        "tokens_o200k": count_tokens(text),
        "words": len(text.split()),
        "lines": text.count("\n") + 1,
        "digits": sum(c.isdigit() for c in text),
        "numbers": len(re.findall(r"\d+(?:[.:,]\d+)*", text)),
        "urls": len(re.findall(r"https?://\S+", text)),
        "emails": len(re.findall(r"[\w.+-]+@[\w-]+\.[\w.-]+", text)),
        "code_blocks": text.count("```") // 2,
        "ascii": text.isascii(),
    }


# --------------------------------------------------------------------------------------------------
# part 1: in-process


def _config() -> BastionConfig:
    return BastionConfig.model_validate({
        "providers": {"sim": {"type": "sim", "base_url": "http://127.0.0.1:9/v1"}},
        "models": {MODEL: {"deployments": [{"provider": "sim", "model": MODEL}]}},
    })


def _ctx() -> RequestContext:
    return RequestContext(endpoint="chat", dialect="openai")


def _time(fn: Callable[[Any], Any], setup: Callable[[], Any] | None, n: int, warmup: int) -> list[int]:
    for _ in range(warmup):
        fn(setup() if setup else None)
    out: list[int] = []
    gc.collect()
    gc.disable()
    try:
        for _ in range(n):
            arg = setup() if setup else None
            t0 = ns()
            fn(arg)
            out.append(ns() - t0)
    finally:
        gc.enable()
    return out


def micro(args: argparse.Namespace) -> dict[str, Any]:
    cfg = _config()
    stage = GuardStage(cfg, Metrics(), None)
    policy = stage.policy(MODEL, "default")
    assert policy == GuardsConfig(), "the bench config must leave the guards at their defaults"
    rules_only = policy.model_copy(update={"input": policy.input.model_copy(update={"classifier": False})})
    body = build_request()
    answer = build_answer()
    text = answer["choices"][0]["message"]["content"]
    template = stream_chunks(text)
    kinds = enabled_kinds(policy.output)
    _, prot = stage.protect(policy, body, "openai")

    # what the guards make of this workload (once, untimed)
    ctx = _ctx()
    stage.check_input(ctx, policy, body)
    input_verdict = ctx.guards[0] if ctx.guards else None
    up, prot0 = stage.protect(policy, body, "openai")
    check = stage.check_answer(_ctx(), policy, prot0, body, answer)
    g = stage.stream_guard(policy, prot0, body, "openai")
    assert g is not None
    outs = [g.openai_chunk(c)["choices"][0]["delta"].get("content") or "" for c in copy.deepcopy(template)]
    streamed = "".join(outs)
    # hold-back: for each character, how many chunks later it left than it arrived
    arrived = [i for i, c in enumerate(template) for _ in (c["choices"][0]["delta"].get("content") or "")]
    left = [i for i, o in enumerate(outs) for _ in o]
    delay = [b - a for a, b in zip(arrived, left, strict=False)] if streamed == text else []
    first_out = next((i for i, o in enumerate(outs) if o), None)
    findings = scan_output(text, allowed_hosts=policy.output.allowed_hosts, kinds=kinds)
    errors: list[str] = []
    if input_verdict is None or input_verdict.get("action") != "pass":
        errors.append(f"the input guard did not pass the benign request: {input_verdict}")
    if streamed != text:
        errors.append("the stream guard changed the answer (nothing in it should be redacted)")
    if check.changed:
        errors.append("check_answer changed the answer (nothing in it should be redacted)")

    def chunks() -> list[dict[str, Any]]:
        return copy.deepcopy(template)

    def stream(arg: list[dict[str, Any]]) -> None:
        sg = stage.stream_guard(policy, prot, body, "openai")
        for c in arg:
            sg.openai_chunk(c)  # type: ignore[union-attr]

    def all_nonstream(c: RequestContext) -> None:
        stage.check_input(c, policy, body)
        _, p = stage.protect(policy, body, "openai")
        stage.check_answer(c, policy, p, body, answer)

    def all_stream(arg: tuple[RequestContext, list[dict[str, Any]]]) -> None:
        c, cs = arg
        stage.check_input(c, policy, body)
        _, p = stage.protect(policy, body, "openai")
        sg = stage.stream_guard(policy, p, body, "openai")
        for ch in cs:
            sg.openai_chunk(ch)  # type: ignore[union-attr]

    def stream_open(arg: tuple[RequestContext, list[dict[str, Any]]]) -> None:
        c, cs = arg  # the role chunk and the first content chunk: what the relay reads before the first byte
        stage.check_input(c, policy, body)
        _, p = stage.protect(policy, body, "openai")
        sg = stage.stream_guard(policy, p, body, "openai")
        for ch in cs:
            sg.openai_chunk(ch)  # type: ignore[union-attr]

    def opened() -> tuple[RequestContext, list[dict[str, Any]]]:
        return _ctx(), copy.deepcopy(template[:2])

    def stream_close(arg: tuple[Any, dict[str, Any]]) -> None:
        sg, last = arg  # the finish chunk: final flush, leak and refusal checks on the whole answer
        sg.openai_chunk(last)

    def almost_done() -> tuple[Any, dict[str, Any]]:
        cs = chunks()
        sg = stage.stream_guard(policy, prot, body, "openai")
        for ch in cs[:-1]:
            sg.openai_chunk(ch)  # type: ignore[union-attr]
        return sg, cs[-1]

    cases: list[tuple[str, str, Callable[[Any], Any], Callable[[], Any] | None]] = [
        ("input_rules", "input guard, rules only (check_input)",
         lambda c: stage.check_input(c, rules_only, body), _ctx),
        ("input_rules_classifier", "input guard, rules + classifier (default)",
         lambda c: stage.check_input(c, policy, body), _ctx),
        ("protect", "protect: canary + mark 1 untrusted part", lambda _: stage.protect(policy, body, "openai"),
         None),
        ("answer_leak", "  answer part: leak check (canary + word pairs)",
         lambda _: leak_verdict(text, prot, policy, "choices.0"), None),
        ("answer_scan", "  answer part: secrets/PII/images/links scan",
         lambda _: scan_output(text, allowed_hosts=policy.output.allowed_hosts, kinds=kinds), None),
        ("answer_refusal", "  answer part: refusal detector", lambda _: detect_refusal(text), None),
        ("check_answer", "check_answer, whole answer (non-stream)",
         lambda c: stage.check_answer(c, policy, prot, body, answer), _ctx),
        ("stream_guard", f"stream guard, {len(template)} chunks (per stream)", stream, chunks),
        ("all_nonstream", "ALL DEFAULTS, non-stream", all_nonstream, _ctx),
        ("all_stream", "ALL DEFAULTS, stream: CPU over the whole stream", all_stream, lambda: (_ctx(), chunks())),
        ("stream_open", "ALL DEFAULTS, stream: before the first byte", stream_open, opened),
        ("stream_close", "ALL DEFAULTS, stream: after the last chunk", stream_close, almost_done),
    ]
    samples: dict[str, list[int]] = {name: [] for name, *_ in cases}
    half = max(1, args.iterations // 2)
    for order in (cases, cases[::-1]):  # two passes, forward then reverse, merged
        for name, _, fn, setup in order:
            samples[name] += _time(fn, setup, half, args.warmup)

    # the cost of each chunk on its own (timer overhead included, a few tens of ns)
    per_chunk: list[int] = []
    content_chunks = sum(1 for c in template if c["choices"][0]["delta"].get("content"))
    for _ in range(max(1, args.iterations // 10)):
        cs = chunks()
        sg = stage.stream_guard(policy, prot, body, "openai")
        gc.disable()
        try:
            for c in cs:
                t0 = ns()
                sg.openai_chunk(c)  # type: ignore[union-attr]
                per_chunk.append(ns() - t0)
        finally:
            gc.enable()
    timer = _time(lambda _: None, None, 1000, 10)

    rows = {name: {"what": what.strip(), **ov.summary([v / 1e6 for v in samples[name]])}
            for name, what, _, _ in cases}
    stream_ms = rows["stream_guard"]
    return {
        "iterations": 2 * half,
        "warmup": args.warmup,
        "unit": "ms",
        "rows": rows,
        "stream_chunks": len(template),
        "stream_content_chunks": content_chunks,
        "stream_chars_per_chunk": len(text) / max(1, content_chunks),
        "per_chunk_us": {
            "from_total_p50": 1000 * stream_ms["p50"] / len(template) if stream_ms["p50"] is not None else None,
            "measured": ov.summary([v / 1e3 for v in per_chunk]),
        },
        "hold_back": {
            "first_content_chunk": first_out,
            "delay_chunks": ov.summary([float(d) for d in delay]),
            "note": "chunks (tokens) between a character's arrival from upstream and its release to the client; "
                    "at 50 tokens/s each chunk is 20 ms",
        },
        "timer_overhead_us_p50": ov.summary([v / 1e3 for v in timer])["p50"],
        "verdicts": {
            "input": input_verdict,
            "answer": check.verdicts,
            "stream": g.verdicts,  # type: ignore[union-attr]
            "answer_findings": [f.as_dict() | {"kind": f.kind} for f in findings],
            "answer_changed": check.changed,
            "stream_output_matches_answer": streamed == text,
            "upstream_system_prompt_tokens": count_tokens(up["messages"][0]["content"]),
            "untrusted_parts": prot0.untrusted_parts,
            "canary": bool(prot0.canary),
        },
        "errors": errors,
    }


# --------------------------------------------------------------------------------------------------
# part 2: end to end


def gateway_yaml(sim_url: str, store: Path, off: bool) -> str:
    return (f"server: {{host: {HOST}, port: 0, require_key: false}}\n"
            f"store: {{url: 'sqlite:///{store}'}}\n"
            f"providers: {{sim: {{type: sim, base_url: '{sim_url}/v1'}}}}\n"
            f"models:\n  {MODEL}: {{deployments: [{{provider: sim, model: {MODEL}}}]}}\n"
            + (GUARDS_OFF if off else ""))


TARGETS = ("direct", "guards_off", "guards_default")


async def e2e_run(args: argparse.Namespace, procs: dict[str, ov.Proc]) -> dict[str, Any]:
    body = build_request()
    raw = json.dumps(body, separators=(",", ":")).encode()
    raw_stream = json.dumps({**body, "stream": True}, separators=(",", ":")).encode()
    headers = {"Content-Type": "application/json"}
    targets = {
        "direct": ov.Target("direct", procs["sim"].url + "/v1/chat/completions",
                            {**headers, "Authorization": "Bearer sim"}, raw, raw_stream),
        "guards_off": ov.Target("guards_off", procs["guards_off"].url + "/v1/chat/completions", headers, raw,
                                raw_stream),
        "guards_default": ov.Target("guards_default", procs["guards_default"].url + "/v1/chat/completions",
                                    headers, raw, raw_stream),
    }
    gw_of = {"direct": None, "guards_off": procs["guards_off"], "guards_default": procs["guards_default"]}
    seg = max(1, args.requests // args.segments)
    conn = aiohttp.TCPConnector(limit=16, keepalive_timeout=60)
    modes = []
    async with aiohttp.ClientSession(connector=conn, timeout=aiohttp.ClientTimeout(total=30),
                                     auto_decompress=False) as session:
        for stream in (False, True):
            for name in TARGETS:  # warm-up, excluded
                await ov.closed_loop(session, targets[name], stream, 1, 30.0, args.e2e_warmup)
            merged = {name: ov.Samples() for name in TARGETS}
            cpu = {name: 0.0 for name in TARGETS}
            sim_cpu = {name: 0.0 for name in TARGETS}
            print(f"... end to end {'stream' if stream else 'non-stream'}: {len(TARGETS)} x {seg * args.segments} "
                  "requests", flush=True)
            for r in range(args.segments):
                for name in (TARGETS if r % 2 == 0 else TARGETS[::-1]):
                    gw = gw_of[name]
                    g0 = gw.cpu_seconds() if gw else 0.0
                    s0 = procs["sim"].cpu_seconds()
                    s = await ov.closed_loop(session, targets[name], stream, 1, 60.0, seg)
                    cpu[name] += (gw.cpu_seconds() - g0) if gw else 0.0
                    sim_cpu[name] += procs["sim"].cpu_seconds() - s0
                    merged[name].merge(s)
                    await asyncio.sleep(args.pause)
            res: dict[str, Any] = {"stream": stream, "mode": "stream" if stream else "non-stream"}
            for name in TARGETS:
                s = merged[name]
                done = max(1, s.ok + sum(s.errors.values()))
                res[name] = {
                    "requests": s.scheduled, "ok": s.ok, "errors": sum(s.errors.values()), "error_kinds": s.errors,
                    "latency_ms": ov.summary(s.service_ms),
                    "gateway_cpu_us_per_req": 1e6 * cpu[name] / done if gw_of[name] else None,
                    "sim_cpu_us_per_req": 1e6 * sim_cpu[name] / done,
                }
                if stream:
                    res[name]["ttft_ms"] = ov.summary(s.ttft_ms)
            d, off, on = (res[n]["latency_ms"] for n in TARGETS)
            res["default_minus_off"] = {f"{p}_ms": ov._sub(on[p], off[p]) for p in ("p50", "p90", "p99", "mean")}
            res["default_minus_off"]["gateway_cpu_us_per_req"] = ov._sub(
                res["guards_default"]["gateway_cpu_us_per_req"], res["guards_off"]["gateway_cpu_us_per_req"])
            if stream:
                res["default_minus_off"]["ttft_p50_ms"] = ov._sub(res["guards_default"]["ttft_ms"]["p50"],
                                                                  res["guards_off"]["ttft_ms"]["p50"])
            res["ratio_to_direct"] = {n: {p: ov._ratio(res[n]["latency_ms"][p], d[p]) for p in ("p50", "p99")}
                                      for n in ("guards_off", "guards_default")}
            modes.append(res)
    return {"requests_per_target": seg * args.segments, "segments": args.segments, "concurrency": 1,
            "sim_answer_tokens": args.sim_tokens, "modes": modes}


def e2e(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, int | None]]:
    tmp = Path(tempfile.mkdtemp(prefix="bastion-bench-guards-"))
    procs: dict[str, ov.Proc] = {}
    try:
        (tmp / "sim.yaml").write_text(ov.sim_yaml(args.sim_tokens, [0.0]))
        procs["sim"] = ov._start("sim", ["-m", "bastion.sim.server", "--host", HOST, "--port", "0", "--config",
                                         str(tmp / "sim.yaml")], tmp)
        for name, off in (("guards_off", True), ("guards_default", False)):
            cfg = tmp / f"{name}.yaml"
            cfg.write_text(gateway_yaml(procs["sim"].url, tmp / f"{name}.db", off))
            procs[name] = ov._start(name, ["-m", "bastion.cli", "serve", "--config", str(cfg)], tmp)
        print("  ".join(f"{n} {p.url} (pid {p.pid})" for n, p in procs.items()), flush=True)
        runner = ov.uvloop.run if ov.uvloop is not None else asyncio.run
        result = runner(e2e_run(args, procs))
    finally:
        rc = {name: p.stop() for name, p in reversed(list(procs.items()))}
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    return result, rc


# --------------------------------------------------------------------------------------------------
# output


def _f(v: Any, nd: int = 3, sign: bool = False) -> str:
    return ov._f(v, nd, sign)


def print_table(result: dict[str, Any]) -> None:
    w = sys.stdout.write
    wl = result["workload"]
    rq, an = wl["request"], wl["answer"]
    w(f"\nWORKLOAD\n  request: system prompt {rq['system_tokens']} tokens; user turn {rq['user_tokens']} tokens "
      f"(question {rq['question_tokens']} + untrusted KB article {rq['document_tokens']}); "
      f"{rq['chars']} characters\n")
    w(f"  answer:  {an['tokens_o200k']} tokens, {an['chars']} characters, {an['words']} words, {an['lines']} lines; "
      f"{an['digits']} digits in {an['numbers']} numbers, {an['urls']} URL, {an['emails']} e-mail address, "
      f"{an['code_blocks']} code blocks\n")
    m = result.get("micro")
    if m:
        v = m["verdicts"]
        iv = v["input"] or {}
        w(f"  input verdict: score {iv.get('score')} (threshold {iv.get('threshold')}), action {iv.get('action')}; "
          f"answer verdicts: {', '.join(x['guard'] + '=' + x['action'] for x in v['answer']) or 'none'} "
          f"(findings: {', '.join(f['kind'] for f in v['answer_findings']) or 'none'}); "
          f"answer changed: {v['answer_changed']}\n")
        w(f"\nIN-PROCESS, default policy ({m['iterations']} iterations after {m['warmup']} warm-up, ms)\n")
        hdr = f"{'guard':<48}{'p50':>9}{'p90':>9}{'p99':>9}{'mean':>9}{'max':>9}\n"
        w(hdr)
        w("-" * (len(hdr) - 1) + "\n")
        for name, r in m["rows"].items():
            if name.startswith(("all_", "stream_open", "stream_close")):
                continue
            w(f"{r['what']:<48}{_f(r['p50']):>9}{_f(r['p90']):>9}{_f(r['p99']):>9}{_f(r['mean']):>9}"
              f"{_f(r['max']):>9}\n")
        pc = m["per_chunk_us"]["measured"]
        w(f"{'  per chunk, µs (each timed alone)':<48}{_f(pc['p50'], 2):>9}{_f(pc['p90'], 2):>9}"
          f"{_f(pc['p99'], 2):>9}{_f(pc['mean'], 2):>9}{_f(pc['max'], 1):>9}\n")
        w(f"{'  per chunk, µs (stream p50 / chunks)':<48}{_f(m['per_chunk_us']['from_total_p50'], 2):>9}\n")
        hb = m["hold_back"]
        w(f"{'  hold-back, chunks a character waits':<48}{_f(hb['delay_chunks']['p50'], 0):>9}"
          f"{_f(hb['delay_chunks']['p90'], 0):>9}{_f(hb['delay_chunks']['p99'], 0):>9}"
          f"{_f(hb['delay_chunks']['mean'], 1):>9}{_f(hb['delay_chunks']['max'], 0):>9}"
          f"  (first text in chunk {hb['first_content_chunk']})\n")
        w("-" * (len(hdr) - 1) + "\n")
        for name in ("all_nonstream", "all_stream", "stream_open", "stream_close"):
            r = m["rows"][name]
            w(f"{r['what']:<48}{_f(r['p50']):>9}{_f(r['p90']):>9}{_f(r['p99']):>9}{_f(r['mean']):>9}"
              f"{_f(r['max']):>9}\n")
    e = result.get("e2e")
    if e:
        w(f"\nEND TO END (closed loop, concurrency 1, {e['requests_per_target']} requests per target and mode, "
          f"{e['segments']} alternating segments; sim answer {e['sim_answer_tokens']} tokens; ms)\n")
        hdr = (f"{'mode':<12}{'target':<16}{'ok':>6}{'err':>5}{'p50':>9}{'p90':>9}{'p99':>9}{'ttft50':>9}"
               f"{'p50/dir':>9}{'p99/dir':>9}{'gwCPU/rq':>10}\n")
        w(hdr)
        w("-" * (len(hdr) - 1) + "\n")
        for md in e["modes"]:
            for i, name in enumerate(TARGETS):
                r = md[name]
                lat = r["latency_ms"]
                rat = md["ratio_to_direct"].get(name, {})
                cpu = r["gateway_cpu_us_per_req"]
                w(f"{md['mode'] if i == 0 else '':<12}{name:<16}{r['ok']:>6}{r['errors']:>5}{_f(lat['p50'], 2):>9}"
                  f"{_f(lat['p90'], 2):>9}{_f(lat['p99'], 2):>9}{_f((r.get('ttft_ms') or {}).get('p50'), 2):>9}"
                  f"{_f(rat.get('p50'), 2):>9}{_f(rat.get('p99'), 2):>9}"
                  f"{(_f(cpu, 0) + 'us') if cpu is not None else '':>10}\n")
            dd = md["default_minus_off"]
            w(f"{'':<12}{'default - off':<16}{'':>6}{'':>5}{_f(dd['p50_ms'], 2, True):>9}{_f(dd['p90_ms'], 2, True):>9}"
              f"{_f(dd['p99_ms'], 2, True):>9}{_f(dd.get('ttft_p50_ms'), 2, True):>9}{'':>9}{'':>9}"
              f"{_f(dd['gateway_cpu_us_per_req'], 0, True) + 'us':>10}\n")
    req = result["requirement"]
    w(f"\nREQUIREMENT: all default guards add < {req['limit_ms']:g} ms p50 to a 1,000-token request\n")
    if "micro_nonstream_p50_ms" in req:
        w(f"  in-process, non-stream: {_f(req['micro_nonstream_p50_ms'])} ms p50 -> "
          f"{'met' if req['micro_nonstream_met'] else 'NOT MET'}\n")
        w(f"  in-process, stream:     {_f(req['micro_stream_added_p50_ms'])} ms p50 added (before the first byte "
          f"{_f(req['micro_stream_open_p50_ms'])} + after the last chunk {_f(req['micro_stream_close_p50_ms'])}) -> "
          f"{'met' if req['micro_stream_met'] else 'NOT MET'}\n")
        w(f"                          in between, {_f(req['micro_stream_per_chunk_us'], 2)} µs per chunk as it passes "
          f"(CPU over the whole stream {_f(req['micro_stream_p50_ms'])} ms: the added latency only when the "
          "upstream sends the whole answer at once)\n")
    for md in (e or {}).get("modes", []):
        w(f"  end to end, {md['mode']}: default - off = {_f(md['default_minus_off']['p50_ms'], 2, True)} ms p50 "
          f"(200-token answer)\n")
    w(f"  verdict: {req['verdict']}\n")
    for note in result["notes"]:
        w(f"  note: {note}\n")
    w(f"\nerrors total: {result['errors_total']}\n")


# --------------------------------------------------------------------------------------------------
# main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=300, help="timed calls per in-process case (default 300)")
    p.add_argument("--warmup", type=int, default=30, help="untimed calls before each pass (default 30)")
    p.add_argument("--requests", type=int, default=200, help="end-to-end requests per target and mode (default 200)")
    p.add_argument("--segments", type=int, default=4, help="alternating segments per mode (default 4)")
    p.add_argument("--e2e-warmup", type=int, default=20, help="excluded requests per target and mode (default 20)")
    p.add_argument("--sim-tokens", type=int, default=200, help="simulator answer length (default 200)")
    p.add_argument("--pause", type=float, default=0.1, help="pause between segments (seconds)")
    p.add_argument("--no-e2e", action="store_true", help="in-process part only")
    p.add_argument("--no-micro", action="store_true", help="end-to-end part only")
    p.add_argument("--json", metavar="PATH", help="where to write the JSON (default bench/results/guards-<ts>.json)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, stores)")
    p.add_argument("--quick", action="store_true", help="a few-second smoke run")
    a = p.parse_args(argv)
    if a.quick:
        a.iterations, a.warmup, a.requests, a.segments, a.e2e_warmup, a.pause = 20, 3, 10, 2, 2, 0.0
    if a.iterations < 2 or a.requests < 1 or a.segments < 1:
        p.error("need --iterations >= 2, --requests >= 1, --segments >= 1")
    return a


def workload() -> dict[str, Any]:
    body = build_request()
    parts = body["messages"][1]["content"]
    text = build_answer()["choices"][0]["message"]["content"]
    q, d = count_tokens(parts[0]["text"]), count_tokens(parts[1]["text"])
    return {
        "request": {"system_tokens": count_tokens(SYSTEM_PROMPT), "question_tokens": q, "document_tokens": d,
                    "user_tokens": q + d, "chars": len(SYSTEM_PROMPT) + len(parts[0]["text"]) + len(parts[1]["text"]),
                    "untrusted_parts": 1, "document": describe(parts[1]["text"])},
        "answer": describe(text),
    }


def assess(result: dict[str, Any]) -> dict[str, Any]:
    req: dict[str, Any] = {"limit_ms": LIMIT_MS}
    m = result.get("micro")
    if m:
        req["micro_nonstream_p50_ms"] = m["rows"]["all_nonstream"]["p50"]
        req["micro_stream_p50_ms"] = m["rows"]["all_stream"]["p50"]  # CPU over the whole stream
        req["micro_stream_open_p50_ms"] = m["rows"]["stream_open"]["p50"]
        req["micro_stream_close_p50_ms"] = m["rows"]["stream_close"]["p50"]
        req["micro_stream_per_chunk_us"] = m["per_chunk_us"]["measured"]["p50"]
        # A stream's latency: what is added before its first byte and after its last chunk; each chunk in
        # between is delayed by its own few microseconds (and the hold-back, reported in chunks).
        req["micro_stream_added_p50_ms"] = req["micro_stream_open_p50_ms"] + req["micro_stream_close_p50_ms"]
        req["micro_nonstream_met"] = req["micro_nonstream_p50_ms"] < LIMIT_MS
        req["micro_stream_met"] = req["micro_stream_added_p50_ms"] < LIMIT_MS
        req["met"] = req["micro_nonstream_met"] and req["micro_stream_met"]
        parts = [f"non-stream {req['micro_nonstream_p50_ms']:.2f} ms",
                 f"stream {req['micro_stream_added_p50_ms']:.2f} ms before the first byte and after the last chunk"]
        req["verdict"] = (("met" if req["met"] else "NOT MET") + " in-process (" + ", ".join(parts) + " p50 for a "
                          f"{result['workload']['request']['user_tokens']}-token request and a "
                          f"{result['workload']['answer']['tokens_o200k']}-token answer)")
    else:
        req["met"] = None
        req["verdict"] = "not measured in-process (--no-micro)"
    for md in (result.get("e2e") or {}).get("modes", []):
        req[f"e2e_{'stream' if md['stream'] else 'nonstream'}_added_p50_ms"] = md["default_minus_off"]["p50_ms"]
    return req


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = _dt.datetime.now(_dt.UTC)
    result: dict[str, Any] = {
        "schema": SCHEMA,
        "started_at": started.isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.machine(), "uvloop": ov.uvloop is not None},
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "workload": workload(),
        "notes": [],
    }
    if not args.no_micro:
        print("... in-process", flush=True)
        result["micro"] = micro(args)
    if not args.no_e2e:
        result["e2e"], result["exit_codes"] = e2e(args)
        result["notes"].append("the simulator's answers are plain vocabulary prose (no digits, links or addresses): "
                               "end to end, the output scanners find nothing and mostly run their prefilters")
    result["finished_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    errors = len((result.get("micro") or {}).get("errors", []))
    for md in (result.get("e2e") or {}).get("modes", []):
        errors += sum(md[n]["errors"] for n in TARGETS)
    result["errors_total"] = errors
    for msg in (result.get("micro") or {}).get("errors", []):
        result["notes"].append("error: " + msg)
    if (os.cpu_count() or 1) <= 2:
        result["notes"].append("load generator, simulator and gateways share the machine's CPUs")
    result["requirement"] = assess(result)
    print_table(result)
    path = Path(args.json) if args.json else (
        Path(__file__).resolve().parent / "results" / f"guards-{started.strftime('%Y%m%dT%H%M%SZ')}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"JSON: {path}")
    return 0 if errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
