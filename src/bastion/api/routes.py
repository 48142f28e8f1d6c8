"""The model API: OpenAI-compatible chat/embeddings/models and the Anthropic-compatible messages route."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from bastion.errors import BastionError, PermissionDenied
from bastion.pipeline import Gateway, RequestContext, Result
from bastion.pipeline.context import new_request_id

from . import validate
from .http import SSEResponse, error_response, json_response, parse_json, presented_key, read_body

log = logging.getLogger("bastion.api")

Runner = Callable[[RequestContext, dict[str, Any]], Awaitable[Result]]


_OPTION_HEADERS = frozenset(
    (b"timeout-connect", b"timeout-first-token", b"timeout-chunk-gap", b"timeout-total", b"hedge", b"cache",
     b"cache-ttl")
)


def _end_user(request: Request, body: dict[str, Any], dialect: str, bound: str | None) -> str | None:
    """The user the request is charged to. A key bound to a user always charges that user: naming another
    one (``x-bastion-user``, the body's ``user``, Anthropic's ``metadata.user_id``) is a 403, never a way
    to spend someone else's per-user budget. A key without a user charges the user the request names, or
    none (per-user rules then count it as their tenant's anonymous user, ``metering/subjects.py``)."""
    named: list[tuple[str, str]] = []
    header = request.headers.get("x-bastion-user")
    if header:
        named.append(("x-bastion-user", header))
    if dialect == "openai" and isinstance(body.get("user"), str) and body["user"]:
        named.append(("user", body["user"]))
    meta = body.get("metadata")
    if dialect == "anthropic" and isinstance(meta, dict) and isinstance(meta.get("user_id"), str) and meta["user_id"]:
        named.append(("metadata.user_id", meta["user_id"]))
    if bound is None:
        return named[0][1] if named else None
    for field, user in named:
        if user != bound:
            raise PermissionDenied(
                f"this API key is bound to user {bound!r}, so it cannot send requests as {user!r} ({field}): "
                f"leave {field} out or set it to {bound!r}, or use a key of that user", param=field)
    return bound


async def handle(
    gw: Gateway,
    request: Request,
    *,
    endpoint: str,
    dialect: str,
    check: Callable[[dict[str, Any]], None],
    run: Runner,
) -> Response:
    ctx = RequestContext(endpoint=endpoint, dialect=dialect)
    gw.metrics.inflight.inc()
    streaming = False
    try:
        ctx.session = request.headers.get("x-bastion-session")
        ctx.key = await gw.keys.authenticate(presented_key(request))
        gw.check_log_writable()
        sc = gw.config.server
        raw = await read_body(request, sc.max_body_bytes, sc.body_timeout_s)
        body = validate.require_object(parse_json(raw, max_depth=sc.max_json_depth, max_elements=sc.max_json_elements))
        if endpoint != "embeddings":
            body, ctx.prompt_version = await gw.prompting.apply(body, request.headers, dialect)
        ctx.body = body
        if isinstance(body.get("model"), str):
            ctx.alias = body["model"]
        check(body)
        ctx.user = _end_user(request, body, dialect, ctx.key.user)
        for name, value in request.headers.raw:
            if name.startswith(b"x-bastion-") and name[10:] in _OPTION_HEADERS:
                ctx.options[name[10:].decode()] = value.decode("latin-1")
            elif name == b"cache-control":
                ctx.options["cache-control"] = value.decode("latin-1")
        result = await run(ctx, body)
        if result.stream is not None:
            streaming = True
            on_close = result.extra.get("on_close")

            def closed() -> None:
                gw.metrics.inflight.dec()
                if on_close is not None:
                    on_close()

            stream = result.stream if not gw.config.store.commit_before_answer else held_until_stored(
                result.stream, gw, ctx)
            return SSEResponse(stream, headers=result.headers, on_close=closed)
        await gw.stored(ctx)
        return Response(result.body, status_code=result.status, headers=result.headers, media_type=result.media_type)
    except BastionError as e:
        resp = _fail(gw, ctx, e)
    except Exception as e:  # a bug of ours: a clear 500 with the request id, never a stack trace
        log.exception("unexpected error in %s %s", endpoint, ctx.request_id)
        resp = _fail(gw, ctx, BastionError(f"internal error ({type(e).__name__}); quote request id {ctx.request_id}"))
    finally:
        if not streaming:
            gw.metrics.inflight.dec()
    await gw.stored(ctx)
    return resp


# The last event of a stream: held back under store.commit_before_answer until the record is stored.
_TERMINAL = (b"data: [DONE]", b"event: message_stop", b"event: error", b'data: {"error"')


async def held_until_stored(stream: AsyncIterator[bytes], gw: Gateway, ctx: RequestContext) -> AsyncIterator[bytes]:
    """``stream`` with its terminal event (``[DONE]``, ``message_stop``, an error event) sent only once the
    request's log record is committed: a client that saw the end of its answer is in the log, even if the
    gateway is killed the next instant. Everything before the terminal event flows as it comes."""
    held = b""
    async for chunk in stream:
        if held:
            yield held
            held = b""
        cut = chunk.rfind(b"\n\n", 0, len(chunk) - 2)
        last = chunk[cut + 2:] if cut >= 0 else chunk
        if last.startswith(_TERMINAL):
            held = last
            chunk = chunk[: cut + 2] if cut >= 0 else b""
        if chunk:
            yield chunk
    if held:
        await gw.stored(ctx)  # the relay has finished by now: its record is with the writer
        yield held


def _fail(gw: Gateway, ctx: RequestContext, err: BastionError) -> Response:
    ctx.fail(err)
    if ctx.done_at is None:
        gw.finish(ctx)
    return error_response(err, ctx.dialect, ctx.request_id, gw.headers(ctx))


def model_routes(gw: Gateway) -> dict[str, Callable[[Request], Awaitable[Response]]]:
    async def chat_completions(request: Request) -> Response:
        return await handle(gw, request, endpoint="chat", dialect="openai", check=validate.validate_chat, run=gw.chat)

    async def messages(request: Request) -> Response:
        return await handle(
            gw, request, endpoint="messages", dialect="anthropic", check=validate.validate_messages, run=gw.chat
        )

    async def embeddings(request: Request) -> Response:
        return await handle(
            gw, request, endpoint="embeddings", dialect="openai", check=validate.validate_embeddings, run=gw.embeddings
        )

    async def models(request: Request) -> Response:
        try:
            await gw.keys.authenticate(presented_key(request))
        except BastionError as e:
            return error_response(e, "openai", new_request_id())
        created = int(gw.started_at)
        data = [
            {
                "id": alias,
                "object": "model",
                "created": created,
                "owned_by": "bastion",
                "kind": route.kind,
                "deployments": [d.id for d in route.deployments],
            }
            for alias, route in sorted(gw.router.routes.items())
        ]
        return json_response({"object": "list", "data": data})

    return {
        "/v1/chat/completions": chat_completions,
        "/v1/messages": messages,
        "/v1/embeddings": embeddings,
        "/v1/models": models,
    }
