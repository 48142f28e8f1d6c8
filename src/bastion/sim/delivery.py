"""Sending an answer: latency, stream pacing, and the faults that happen mid-response.

Wire modules build the bytes (a JSON body, or SSE events split into head / token events / tail);
this module decides when and how much of them reaches the client.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from bastion.sim.config import Faults
from bastion.sim.faults import (
    CONTENT_FILTER,
    ERROR_KINDS,
    Dialect,
    content_filter_response,
    drop_connection,
    error_response,
    hang,
    malformed_body,
    truncated_body,
)

SSE_HEADERS = {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"}


async def preflight(
    request: web.Request, dialect: Dialect, fault: str | None, faults: Faults, delay_s: float, stream: bool
) -> web.StreamResponse | None:
    """Handle the faults that replace the whole response; ``None`` means go on and answer.

    429, 503 and content_filter answer at once (a real rate limiter, overloaded front door or prompt
    filter does not think first); 500 comes after the usual latency. ``context_length`` is answered by
    the wire modules, which know the token counts.
    """
    if fault is None:
        return None
    if fault in ERROR_KINDS:
        if fault == "500" and delay_s > 0:
            await asyncio.sleep(delay_s)
        return error_response(dialect, fault, faults)
    if fault == CONTENT_FILTER:
        return content_filter_response(dialect)
    if fault == "timeout":
        return await hang(request, faults.hang_s)
    if fault == "drop" and not stream:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        return drop_connection(request)
    return None


async def deliver_json(
    body: bytes, fault: str | None, delay_s: float, headers: dict[str, str] | None = None
) -> web.Response:
    if delay_s > 0:
        await asyncio.sleep(delay_s)
    if fault == "truncate":
        body = truncated_body(body)
    elif fault == "malformed":
        body = malformed_body(body)
    return web.Response(body=body, content_type="application/json", headers=headers)


async def deliver_stream(
    request: web.Request,
    head: list[bytes],
    events: list[bytes],
    tail: list[bytes],
    *,
    fault: str | None,
    delay_s: float,
    tps: float,
    malformed: bytes,
    headers: dict[str, str] | None = None,
) -> tuple[web.StreamResponse, bool]:
    """Stream ``head``, the token ``events`` (paced at ``tps``) and ``tail``.

    Headers go out at once; the first token event after ``delay_s`` (time to first token).
    Stream faults: ``drop`` sends about half the token events then closes the connection; ``truncate``
    sends as much then ends the HTTP body cleanly without the closing events; ``malformed`` puts one
    invalid event in the middle. Returns the response and whether the closing events were sent.
    """
    resp = web.StreamResponse(headers={**SSE_HEADERS, **(headers or {})})
    cut = len(events) // 2
    if fault == "malformed":
        events = [*events[:cut], malformed, *events[cut:]]
    elif fault in ("drop", "truncate"):
        events, tail = events[:cut], []
    try:
        await resp.prepare(request)
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        if tps <= 0 or len(events) <= 1:
            data = b"".join([*head, *events, *tail])
            if fault != "drop":  # the whole stream, and its end, in one send
                await resp.write_eof(data)
                return resp, fault != "truncate"
            await resp.write(data)
        else:
            gap = 1.0 / tps
            await resp.write(b"".join([*head, events[0]]))
            for ev in events[1:]:
                await asyncio.sleep(gap)
                await resp.write(ev)
            if tail:
                await resp.write(b"".join(tail))
        if fault == "drop":
            drop_connection(request)
            return resp, False
        await resp.write_eof()
    except ConnectionError:
        return resp, False
    return resp, fault != "truncate"
