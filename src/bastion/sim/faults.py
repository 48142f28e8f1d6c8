"""Fault injection: which fault a request gets, and the faulty responses themselves.

The decision comes from one seeded RNG per profile, drawn once per request in arrival order, so N
requests against a profile see the same fault pattern for a given seed (forced faults still draw,
so they do not shift the pattern of the requests after them).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
from typing import Literal

import orjson
from aiohttp import web

from bastion.sim.config import Faults

Dialect = Literal["openai", "anthropic"]

ERROR_KINDS = ("429", "500", "503")
CONTEXT_LENGTH = "context_length"
CONTENT_FILTER = "content_filter"
CONTENT_FILTER_OPENAI = (
    "The response was filtered due to the prompt triggering Azure OpenAI's content management policy. "
    "Please modify your prompt and retry. To learn more about our content filtering policies please read our "
    "documentation: https://go.microsoft.com/fwlink/?linkid=2198766"
)
CONTENT_FILTER_ANTHROPIC = "Output blocked by content filtering policy"


class FaultDecider:
    """The per-profile fault RNG."""

    __slots__ = ("_seed", "_rng", "count")

    def __init__(self, seed: int, profile: str) -> None:
        digest = hashlib.blake2b(f"faults:{seed}:{profile}".encode(), digest_size=8).digest()
        self._seed = int.from_bytes(digest, "little")
        self.reset()

    def reset(self) -> None:
        self._rng = random.Random(self._seed)
        self.count = 0

    def decide(self, faults: Faults, forced: str | None = None) -> str | None:
        r = self._rng.random()
        self.count += 1
        if forced:
            return forced
        acc = 0.0
        for kind, rate in faults.rates():
            if rate <= 0:
                continue
            acc += rate
            if r < acc:
                return kind
        return None


_OPENAI_ERRORS = {
    "429": ("Rate limit reached for requests (simulated). Please try again later.", "requests",
            "rate_limit_exceeded"),
    "500": ("The server had an error while processing your request (simulated). Sorry about that!",
            "server_error", None),
    "503": ("The engine is currently overloaded (simulated), please try again later.", "server_error",
            "service_unavailable"),
}
_ANTHROPIC_ERRORS = {
    "429": ("rate_limit_error", "Number of requests has exceeded your rate limit (simulated)."),
    "500": ("api_error", "Internal server error (simulated)."),
    "503": ("overloaded_error", "Overloaded (simulated)."),
}


def openai_error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> bytes:
    return orjson.dumps({"error": {"message": message, "type": type_, "param": param, "code": code}})


def anthropic_error_body(type_: str, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": type_, "message": message}})


def error_response(dialect: Dialect, kind: str, faults: Faults) -> web.Response:
    """The HTTP error response for an injected ``429``/``500``/``503`` in the endpoint's dialect."""
    status = int(kind)
    headers = {}
    if kind == "429":
        headers["Retry-After"] = str(max(0, math.ceil(faults.retry_after_s)))
        headers["retry-after-ms"] = str(int(faults.retry_after_s * 1000))
    if dialect == "anthropic":
        body = anthropic_error_body(*_ANTHROPIC_ERRORS[kind])
    else:
        message, type_, code = _OPENAI_ERRORS[kind]
        body = openai_error_body(message, type_, None, code)
    return web.Response(status=status, body=body, headers=headers, content_type="application/json")


def drop_connection(request: web.Request) -> web.Response:
    """Close the TCP connection without a response; return the (never sent) response to the handler."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=500)


async def hang(request: web.Request, seconds: float) -> web.Response:
    """Send nothing for ``seconds`` or until the client goes away, then drop the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        transport = request.transport
        left = deadline - loop.time()
        if transport is None or transport.is_closing() or left <= 0:
            break
        await asyncio.sleep(min(0.25, left))
    return drop_connection(request)


def truncated_body(body: bytes) -> bytes:
    """The first half of a JSON body: a clean HTTP response whose JSON is cut mid-way."""
    return body[: max(1, len(body) // 2)]


def malformed_body(body: bytes) -> bytes:
    """A body that looks like the JSON answer but is not valid JSON."""
    return body[:-1] + b',"sim_malformed": }'


def _json400(body: bytes) -> web.Response:
    return web.Response(status=400, body=body, content_type="application/json")


def content_filter_response(dialect: Dialect) -> web.Response:
    """The 400 of a provider's content filter refusing the request."""
    if dialect == "anthropic":
        return _json400(anthropic_error_body("invalid_request_error", CONTENT_FILTER_ANTHROPIC))
    return _json400(openai_error_body(CONTENT_FILTER_OPENAI, "invalid_request_error", "prompt", CONTENT_FILTER))


def exceeds_context(window: int | None, prompt: int, completion: int | None) -> bool:
    """Whether ``prompt`` tokens plus the requested ``completion`` (max_tokens) overflow ``window``."""
    return window is not None and prompt + (completion or 0) > window


def context_length_response(dialect: Dialect, window: int | None, prompt: int, completion: int | None,
                            param: str = "messages") -> web.Response:
    """The 400 for a request over the context window.

    When forced (the request fits, or there is no window) the reported limit is one below the prompt.
    """
    total = prompt + (completion or 0)
    limit = window if window is not None and total > window else max(1, prompt - 1)
    total = max(total, limit + 1)
    if dialect == "anthropic":
        return _json400(anthropic_error_body("invalid_request_error",
                                             f"prompt is too long: {total} tokens > {limit} maximum"))
    if completion:
        detail = (f"you requested {total} tokens ({prompt} in the messages, {completion} in the "
                  "completion). Please reduce the length of the messages or completion.")
    else:
        detail = f"your messages resulted in {total} tokens. Please reduce the length of the messages."
    message = f"This model's maximum context length is {limit} tokens. However, {detail}"
    return _json400(openai_error_body(message, "invalid_request_error", param, "context_length_exceeded"))
