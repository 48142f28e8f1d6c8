"""Serving prompts from the registry: a request names a prompt (``NAME``, ``NAME@LABEL``, ``NAME@VERSION``)
and its variables; the gateway renders it into the request before anything else looks at the body.

How a request names a prompt (both dialects):

* body field ``"prompt": "support-reply@production"`` with ``"prompt_variables": {...}``, or
  ``"prompt": {"name": "support-reply@production", "variables": {...}}`` (``extra_body`` in the SDKs);
* or headers ``x-bastion-prompt: support-reply@production`` and ``x-bastion-prompt-variables: <JSON>``.

The rendered messages come first, then the request's own messages (a user turn, say). The prompt's model
is used when the request names none; its params (temperature, max_tokens…) and response_format are
defaults under the request's own. The request log keeps the rendered request and, in ``prompt_version``,
``name@N#hash``; the cache key includes it, so a new version never serves an old version's answers.

The registry is re-read when its files change (checked at most every ``prompts.reload_interval_s``, off
the event loop): editing, locking or promoting needs no restart.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson

from bastion.config.model import PromptsConfig
from bastion.errors import InvalidRequest

_DROP = ("prompt", "prompt_variables")
MISS_RELOAD_S = 0.2


def requested_prompt(body: dict[str, Any], headers: Any) -> tuple[str, dict[str, Any]] | None:
    """(reference, variables) when the request names a prompt; raises InvalidRequest on a malformed one."""
    p = body.get("prompt")
    variables: Any = body.get("prompt_variables")
    ref: Any = None
    if isinstance(p, dict):
        ref = p.get("name") or p.get("id")
        variables = p.get("variables", variables)
    elif p is not None:
        ref = p
    elif headers is not None and headers.get("x-bastion-prompt"):
        ref = headers.get("x-bastion-prompt")
        raw = headers.get("x-bastion-prompt-variables")
        if raw:
            try:
                variables = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise InvalidRequest("x-bastion-prompt-variables must be a JSON object", param="prompt") from None
    if ref is None:
        return None
    if not isinstance(ref, str) or not ref.strip():
        raise InvalidRequest('prompt: give the prompt as "NAME", "NAME@LABEL" or "NAME@VERSION", or as '
                             '{"name": ..., "variables": {...}}', param="prompt")
    if variables is None:
        variables = {}
    if not isinstance(variables, dict):
        raise InvalidRequest("prompt variables must be a JSON object of name: value", param="prompt_variables")
    return ref.strip(), variables


class PromptStage:
    def __init__(self, config: PromptsConfig) -> None:
        self.config = config
        self._registry: Any = None
        self._checked = 0.0
        self._miss_checked = 0.0
        self._lock = asyncio.Lock()

    async def registry(self) -> Any:
        """The registry, re-read from disk when its files changed (at most every reload_interval_s)."""
        now = time.monotonic()
        if self._registry is not None and now - self._checked < self.config.reload_interval_s:
            return self._registry
        async with self._lock:
            if self._registry is None:
                from bastion.prompts import PromptRegistry

                self._registry = await asyncio.to_thread(PromptRegistry.from_config, self.config)
            elif time.monotonic() - self._checked >= self.config.reload_interval_s:
                await asyncio.to_thread(self._registry.reload_if_changed)
            self._checked = time.monotonic()
        return self._registry

    async def _reload_on_miss(self) -> None:
        """Re-read the files now (at most every MISS_RELOAD_S): an unknown reference may name a version that
        `bastion prompts lock|promote` wrote since the last periodic check. Concurrent misses wait for a
        re-read in flight rather than fail beside it (an eval run sends its first requests for a new version
        all at once); each then looks the reference up again."""
        async with self._lock:
            now = time.monotonic()
            if now - self._miss_checked < MISS_RELOAD_S:
                return
            self._miss_checked = now
            await asyncio.to_thread(self._registry.reload_if_changed)
            self._checked = time.monotonic()

    async def apply(self, body: dict[str, Any], headers: Any, dialect: str) -> tuple[dict[str, Any], str | None]:
        """The request with its prompt rendered in, and the prompt version (``name@N#hash``), or the body
        unchanged and None when it names no prompt."""
        wanted = requested_prompt(body, headers)
        if wanted is None:
            return body, None
        ref, variables = wanted
        reg = await self.registry()
        try:
            r = reg.render(ref, variables)  # PromptNotFound (404) / PromptRenderError (400) say what to fix
        except Exception as e:
            if type(e).__name__ != "PromptNotFound":
                raise
            await self._reload_on_miss()
            r = reg.render(ref, variables)  # a version locked or promoted a moment ago: seen now
        out = {k: v for k, v in body.items() if k not in _DROP}
        for k, v in (r.params or {}).items():
            out.setdefault(k, v)
        if r.response_format and dialect == "openai":
            out.setdefault("response_format", r.response_format)
        if not out.get("model"):
            if not r.model:
                raise InvalidRequest(f"prompt {r.ref} names no model: give `model` in the request", param="model")
            out["model"] = r.model
        own = given if isinstance(given := body.get("messages"), list) else []
        rendered = [dict(m) for m in r.messages]
        if dialect == "anthropic":
            system = "\n\n".join(m["content"] for m in rendered if m.get("role") in ("system", "developer"))
            rendered = [m for m in rendered if m.get("role") not in ("system", "developer")]
            if system:
                prev = out.get("system")
                out["system"] = system + ("\n\n" + prev if isinstance(prev, str) and prev else "") \
                    if not isinstance(prev, list) else [{"type": "text", "text": system}, *prev]
            out.setdefault("max_tokens", 1024)
        out["messages"] = rendered + list(own)
        version = f"{r.name}@{r.version if r.version is not None else 'current'}#{r.hash}"
        return out, version
