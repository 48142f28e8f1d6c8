"""Replay a logged request to its pinned deployment with its exact parameters and seed, and diff outputs."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import orjson

from bastion.config.model import BastionConfig
from bastion.errors import BastionError, NotFound
from bastion.keys import KeyInfo
from bastion.pipeline import Gateway, RequestContext


def output_text(response: Any) -> str:
    """A comparable text rendering of an answer in either dialect: text, then tool calls."""
    if not isinstance(response, dict):
        return ""
    parts: list[str] = []
    if response.get("object") == "chat.completion" or "choices" in response:
        for c in response.get("choices") or []:
            msg = c.get("message") or {}
            if len(response.get("choices") or []) > 1:
                parts.append(f"--- choice {c.get('index')}")
            if msg.get("content"):
                parts.append(str(msg["content"]))
            for tc in msg.get("tool_calls") or []:
                fn = tc.get("function") or {}
                parts.append(f"[tool call] {fn.get('name')}({fn.get('arguments')})")
    elif response.get("type") == "message" or "content" in response:
        for block in response.get("content") or []:
            if block.get("type") == "text":
                parts.append(block.get("text", ""))
            elif block.get("type") == "tool_use":
                parts.append(f"[tool call] {block.get('name')}({orjson.dumps(block.get('input')).decode()})")
    return "\n".join(parts)


@dataclass
class ReplayResult:
    original: dict[str, Any]
    replay_id: str
    replay_response: Any
    replay_model: str | None
    replay_fingerprint: str | None
    original_text: str
    replay_text: str

    @property
    def identical(self) -> bool:
        return self.original_text == self.replay_text

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                self.original_text.splitlines(keepends=True),
                self.replay_text.splitlines(keepends=True),
                fromfile=f"original {self.original['id']}",
                tofile=f"replay {self.replay_id}",
            )
        )

    def as_dict(self) -> dict[str, Any]:
        o = self.original
        return {
            "original_id": o["id"],
            "replay_id": self.replay_id,
            "deployment": o.get("deployment"),
            "identical": self.identical,
            "original": {"model": o.get("served_model"), "system_fingerprint": o.get("system_fingerprint"),
                         "text": self.original_text},
            "replay": {"model": self.replay_model, "system_fingerprint": self.replay_fingerprint,
                       "text": self.replay_text},
            "diff": self.diff(),
        }


async def replay(config: BastionConfig, request_id: str) -> ReplayResult:
    gw = Gateway(config)
    await gw.start()
    try:
        original = gw.store.get_request(request_id)
        if original is None:
            raise NotFound(f"no logged request with id {request_id!r} (see `bastion logs`)")
        body = original.get("request")
        if not isinstance(body, dict):
            raise BastionError(
                f"request {request_id} was logged without its body (store.log_bodies is off), so it cannot be replayed",
                status=409, code="not_replayable",
            )
        if original["endpoint"] not in ("chat", "messages"):
            raise BastionError(f"only chat and messages requests can be replayed, not {original['endpoint']!r}",
                               status=400, code="not_replayable")
        if original.get("deployment") is None:
            raise BastionError(f"request {request_id} never reached a deployment; nothing to replay",
                               status=409, code="not_replayable")
        body = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
        ctx = RequestContext(endpoint=original["endpoint"], dialect=original["dialect"])
        ctx.key = KeyInfo(original.get("key_id") or "replay", "replay", original.get("tenant") or "default",
                          original.get("user"))
        ctx.user, ctx.session, ctx.body, ctx.alias = original.get("user"), f"replay:{request_id}", body, original.get("alias")
        try:
            result = await gw.chat(ctx, body, pin=original["deployment"])
        except BastionError as e:
            ctx.fail(e)
            if ctx.done_at is None:
                gw.finish(ctx)
            raise
        data = orjson.loads(result.body or b"{}")
        return ReplayResult(
            original=original,
            replay_id=ctx.request_id,
            replay_response=data,
            replay_model=ctx.served_model,
            replay_fingerprint=ctx.system_fingerprint,
            original_text=output_text(original.get("response")),
            replay_text=output_text(data),
        )
    finally:
        await gw.stop()
