"""Run the gateway under uvicorn (uvloop + httptools), with graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Generator

import uvicorn

from bastion.api.app import create_app
from bastion.config.model import BastionConfig


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
    uv_config = uvicorn.Config(
        app,
        host=host or config.server.host,
        port=config.server.port if port is None else port,
        loop="uvloop",
        http="httptools",
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
