"""Run the gateway under uvicorn (uvloop + httptools), with graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Generator
from typing import Any

import orjson
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bastion.api.app import create_app
from bastion.config.model import BastionConfig


class _Protocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for the request line and headers.

    uvicorn times out idle keep-alive connections but not a client that opens a connection and sends
    nothing, or sends its headers a byte at a time (slowloris): each such client holds a connection and
    its buffers for as long as it likes. Here a request's head must be complete ``header_timeout_s`` after
    the connection opens or the previous response ends; a client that is slower gets a 408 and is closed.
    (The body has its own deadline, ``server.body_timeout_s``, enforced where the body is read.)"""

    header_timeout_s = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    # the loop hands a stream protocol a Transport, but typeshed types the hook on BaseProtocol with
    # BaseTransport; uvicorn's own override (called here) narrows it the same way, with the same ignore
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return
        msg = f"request headers not received within {self.header_timeout_s:g} s (server.header_timeout_s)"
        body = orjson.dumps({"error": {"message": msg, "type": "timeout_error", "code": "request_timeout"}})
        self.transport.write(b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                             b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server, minus re-raising SIGTERM after the graceful shutdown: Bastion exits 0 once every
    in-flight request is answered and every log record committed, and callers' cleanup still runs."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        sigs = (signal.SIGINT, signal.SIGTERM)
        original = {sig: signal.signal(sig, self.handle_exit) for sig in sigs}
        try:
            yield
        finally:
            for sig, handler in original.items():
                signal.signal(sig, handler)


def serve(
    config: BastionConfig,
    *,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[], None] | None = None,
    graceful_timeout_s: float = 30.0,
) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(config)
    protocol = type("BastionProtocol", (_Protocol,), {"header_timeout_s": config.server.header_timeout_s})
    uv_config = uvicorn.Config(
        app,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        loop="uvloop",
        http=protocol,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(graceful_timeout_s),
        backlog=4096,
        timeout_keep_alive=30,
    )
    server = _Server(uv_config)

    async def main() -> None:
        task = asyncio.create_task(server.serve())
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            sockets = [s for srv in getattr(server, "servers", []) for s in srv.sockets]
            bound = sockets[0].getsockname()[1] if sockets else uv_config.port
            print(f"bastion listening on http://{uv_config.host}:{bound}", flush=True)
            if on_ready is not None:
                on_ready()
        await task

    import uvloop

    uvloop.run(main())
    return 0 if server.started else 1
