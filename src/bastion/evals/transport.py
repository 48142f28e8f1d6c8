"""How an eval sample reaches the gateway: request building and the HTTP transport.

A transport is any async function ``(body, headers) -> Answer``; tests pass a fake one, the CLI the HTTP one.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from .model import Answer, Case, Variant

Transport = Callable[[dict[str, Any], dict[str, str]], Awaitable[Answer]]

DEFAULT_GATEWAY = "http://127.0.0.1:8000"
GATEWAY_ENV = "BASTION_URL"
KEY_ENV = "BASTION_KEY"
# never serve an eval from the cache (x-bastion-cache: no-cache) and never store its answers (no-store):
# an eval measures the model, and its answers must not be served to production traffic
CACHE_HEADERS = {"x-bastion-cache": "no-cache", "cache-control": "no-store"}

_env = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


class RequestError(ValueError):
    """The request for a (variant, case) cannot be built, e.g. a template variable is missing."""


def _render(messages: list[dict[str, Any]], variables: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        m = dict(m)
        if isinstance(m.get("content"), str):
            try:
                m["content"] = _env.from_string(m["content"]).render(**variables)
            except TemplateError as e:
                raise RequestError(f"variant message template: {e}") from None
        out.append(m)
    return out


def build_request(variant: Variant, case: Case, session: str) -> tuple[dict[str, Any], dict[str, str]]:
    """The chat-completions body and headers for one sample of ``case`` under ``variant``.

    A prompt variant sends the extension field ``prompt: {name, variables}`` (the gateway renders the
    prompt's messages before the request's own); the variant's ``messages`` are rendered with the case's
    vars (Jinja2, sandboxed) and come before the case's messages. ``params`` are the variant's defaults.
    """
    body: dict[str, Any] = dict(variant.params)
    if variant.model:
        body["model"] = variant.model
    if variant.prompt:
        body["prompt"] = {"name": variant.prompt, "variables": dict(case.vars)}
    body["messages"] = _render(variant.messages, case.vars) + [dict(m) for m in case.messages]
    return body, {"x-bastion-session": session, **CACHE_HEADERS}


def answer_text(body: dict[str, Any]) -> str:
    """The text of choice 0: its content, or the arguments of its first tool call when there is no content."""
    choices = body.get("choices") or []
    if not choices:
        return ""
    msg = choices[0].get("message") or {}
    content = msg.get("content")
    if isinstance(content, str) and content:
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    calls = msg.get("tool_calls") or []
    if calls:
        return str((calls[0].get("function") or {}).get("arguments", ""))
    return ""


def _error_message(status: int, raw: bytes) -> str:
    try:
        err = json.loads(raw).get("error")
        msg = err.get("message") if isinstance(err, dict) else err
        code = err.get("code") if isinstance(err, dict) else None
        return f"HTTP {status}" + (f" {code}" if code else "") + f": {msg}"
    except (ValueError, AttributeError):
        return f"HTTP {status}: {raw[:200].decode(errors='replace')}"


class HttpTransport:
    """Posts to ``{gateway}/v1/chat/completions`` with aiohttp; use as an async context manager."""

    def __init__(self, gateway: str | None = None, key: str | None = None, *, timeout_s: float = 120,
                 concurrency: int = 8) -> None:
        self.url = (gateway or os.environ.get(GATEWAY_ENV) or DEFAULT_GATEWAY).rstrip("/") + "/v1/chat/completions"
        self.key = key if key is not None else os.environ.get(KEY_ENV)
        self.timeout_s = timeout_s
        self.concurrency = concurrency
        self._session: Any = None

    async def __aenter__(self) -> HttpTransport:
        import aiohttp

        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=max(1, self.concurrency) + 2))
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def __call__(self, body: dict[str, Any], headers: dict[str, str]) -> Answer:
        import aiohttp

        assert self._session is not None, "use `async with HttpTransport(...)`"
        h = {"content-type": "application/json", **headers}
        if self.key:
            h["authorization"] = f"Bearer {self.key}"
        start = time.perf_counter()
        try:
            async with self._session.post(self.url, data=json.dumps(body), headers=h) as resp:
                raw = await resp.read()
                ms = (time.perf_counter() - start) * 1000
                rid = resp.headers.get("x-bastion-request-id")
                cost = resp.headers.get("x-bastion-cost")
                ans = Answer(status=resp.status, latency_ms=ms, request_id=rid,
                             cost_usd=float(cost) if cost else None)
                if resp.status >= 300:
                    ans.error = _error_message(resp.status, raw)
                    return ans
                try:
                    ans.body = json.loads(raw)
                except ValueError:
                    ans.error = f"HTTP {resp.status} with a body that is not JSON: {raw[:120]!r}"
                    return ans
                ans.text = answer_text(ans.body or {})
                return ans
        except (TimeoutError, aiohttp.ClientError, OSError) as e:
            return Answer(latency_ms=(time.perf_counter() - start) * 1000,
                          error=f"cannot reach the gateway at {self.url}: {type(e).__name__}: {e}".rstrip(": "))
