"""Server-sent events read from an aiohttp response, in batches of whatever one network read carried.

Reading by chunk rather than by line lets the relay forward every event already received in one write.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes
    raw: bytes


def _parse(block: bytes) -> SSEEvent | None:
    """One event block (lines without the blank separator); None when it carries no data."""
    event: str | None = None
    data: list[bytes] = []
    raw: list[bytes] = []
    for line in block.split(b"\n"):
        line = line.rstrip(b"\r")
        if not line:
            continue
        raw.append(line + b"\n")
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            event = line[6:].strip().decode("utf-8", "replace")
        # "id:", "retry:" and ":" comments carry nothing we use
    if not data:
        return None
    raw.append(b"\n")
    return SSEEvent(event, b"\n".join(data), b"".join(raw))


async def iter_sse_batches(response: aiohttp.ClientResponse) -> AsyncIterator[list[SSEEvent]]:
    """Yield the complete events of each network read (never an empty list).

    Ends when the body ends; a partial event left at the end of the body is dropped (the caller decides
    whether the stream was complete from what it saw).
    """
    buf = b""
    async for chunk in response.content.iter_any():
        buf += chunk
        if b"\r\n" in buf:
            buf = buf.replace(b"\r\n", b"\n")
        if b"\n\n" not in buf:
            continue
        blocks = buf.split(b"\n\n")
        buf = blocks.pop()
        events = [e for e in (_parse(b) for b in blocks) if e is not None]
        if events:
            yield events


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    """Yield events one at a time."""
    async for batch in iter_sse_batches(response):
        for ev in batch:
            yield ev
