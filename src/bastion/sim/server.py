"""The simulator's HTTP app and its entry point (``bastion sim`` / ``python -m bastion.sim.server``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from typing import Any

import orjson
from aiohttp import web

from bastion.sim import anthropic_wire, generate, openai_wire
from bastion.sim.config import SimConfig, load_config
from bastion.sim.state import STATE, SimState

__all__ = ["build_app", "main", "STATE", "SimState"]


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


async def get_config(request: web.Request) -> web.Response:
    return _json(request.app[STATE].config.model_dump())


async def post_config(request: web.Request) -> web.Response:
    state = request.app[STATE]
    try:
        patch = orjson.loads(await request.read() or b"{}")
        if not isinstance(patch, dict):
            raise ValueError("the body must be a JSON object")
        state.set_config(state.config.merged(patch))
    except ValueError as e:  # includes pydantic's ValidationError
        return _json({"error": {"message": str(e), "type": "invalid_config"}}, 400)
    return _json(state.config.model_dump())


async def get_stats(request: web.Request) -> web.Response:
    return _json(request.app[STATE].stats_dict())


async def post_reset(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return _json({"status": "reset"})


def _add_api_routes(router: web.UrlDispatcher, prefix: str) -> None:
    router.add_post(prefix + "/v1/chat/completions", openai_wire.chat_completions)
    router.add_post(prefix + "/v1/embeddings", openai_wire.embeddings)
    router.add_get(prefix + "/v1/models", openai_wire.list_models)
    router.add_get(prefix + "/v1/models/{model}", openai_wire.retrieve_model)
    router.add_post(prefix + "/openai/deployments/{deployment}/chat/completions", openai_wire.chat_completions)
    router.add_post(prefix + "/openai/deployments/{deployment}/embeddings", openai_wire.embeddings)
    router.add_post(prefix + "/v1/messages", anthropic_wire.messages)
    router.add_post(prefix + "/v1/messages/count_tokens", anthropic_wire.count_tokens)


def build_app(config: SimConfig | None = None) -> web.Application:
    """The simulator app; its state is ``app[STATE]`` (a :class:`SimState`)."""
    generate.warm_tokenizer()  # the o200k encoding loads once, here, not during the first request
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[STATE] = SimState(config or SimConfig())
    _add_api_routes(app.router, "")
    _add_api_routes(app.router, "/p/{profile}")
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/sim/config", get_config)
    app.router.add_post("/sim/config", post_config)
    app.router.add_get("/sim/stats", get_stats)
    app.router.add_post("/sim/reset", post_reset)
    return app


async def serve(config: SimConfig, host: str, port: int) -> None:
    runner = web.AppRunner(build_app(config), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    real_host, real_port = runner.addresses[0][:2]
    shown = host if host not in ("0.0.0.0", "::", "") else real_host
    print(f"bastion sim listening on http://{shown}:{real_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bastion sim", description="Run the upstream simulator.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8001, help="0 picks a free port (printed on start)")
    p.add_argument("--config", metavar="PATH", help="YAML simulator config")
    p.add_argument("--seed", type=int)
    p.add_argument("--model-version")
    p.add_argument("--system-fingerprint")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        config = load_config(args.config, seed=args.seed, model_version=args.model_version,
                             system_fingerprint=args.system_fingerprint)
    except (OSError, ValueError) as e:
        print(f"bastion sim: bad config: {e}", file=sys.stderr)
        return 2
    loop_factory = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        pass
    with contextlib.suppress(KeyboardInterrupt), asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(serve(config, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
