"""Server-sent events read from an aiohttp response, one event at a time, with its raw bytes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp


@dataclass(slots=True)
class SSEEvent:
    event: str | None
    data: bytes
    raw: bytes


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    """Yield events; comment lines (``:``) and events without data are skipped.

    Ends when the body ends; a partial event left at the end of the body is dropped (the caller decides
    whether the stream was complete from what it saw).
    """
    event: str | None = None
    data: list[bytes] = []
    raw: list[bytes] = []
    async for line in response.content:
        stripped = line.rstrip(b"\r\n")
        if not stripped:
            if data:
                raw.append(b"\n")
                yield SSEEvent(event, b"\n".join(data), b"".join(raw))
            event, data, raw = None, [], []
            continue
        raw.append(stripped + b"\n")
        if stripped.startswith(b"data:"):
            value = stripped[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
        elif stripped.startswith(b"event:"):
            event = stripped[6:].strip().decode("utf-8", "replace")
        # "id:", "retry:" and ":" comments carry nothing we use
