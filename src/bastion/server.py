"""Run the gateway under uvicorn (uvloop + httptools), with graceful shutdown on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import uvicorn

from bastion.api.app import create_app
from bastion.config.model import BastionConfig


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
    server = uvicorn.Server(uv_config)

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
