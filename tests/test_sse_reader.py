"""The SSE reader gives the same events however the network splits the bytes."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.providers.sse import iter_sse_batches

STREAM = (
    b"event: message_start\ndata: {\"type\":\"message_start\"}\n\n"
    b": a comment\n\n"
    b"data: {\"a\":1}\r\n\r\n"
    b"event: ping\ndata: {}\n\n"
    b"data: line one\ndata: line two\n\n"
    b"data: [DONE]\n\n"
    b"data: {\"partial\""  # cut: never a complete event
)


class _Content:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def iter_any(self) -> Any:
        for c in self.chunks:
            yield c


class _Resp:
    def __init__(self, chunks: list[bytes]) -> None:
        self.content = _Content(chunks)


def _events(chunks: list[bytes]) -> list[tuple[str | None, bytes]]:
    async def run() -> list[tuple[str | None, bytes]]:
        out = []
        async for batch in iter_sse_batches(_Resp(chunks)):  # type: ignore[arg-type]
            assert batch
            out.extend((e.event, e.data) for e in batch)
        return out

    return asyncio.run(run())


EXPECTED = [
    ("message_start", b'{"type":"message_start"}'),
    (None, b'{"a":1}'),
    ("ping", b"{}"),
    (None, b"line one\nline two"),
    (None, b"[DONE]"),
]


def test_whole_stream() -> None:
    assert _events([STREAM]) == EXPECTED


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=20))
def test_any_split(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    chunks = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert _events([c for c in chunks if c]) == EXPECTED
