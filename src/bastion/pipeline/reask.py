"""The output guards on a whole answer, and the extra upstream calls they may make: one JSON repair retry,
and a refusal fallback to other aliases. Their attempts belong to the request; their usage is priced with
it (``ctx.prior_usage``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from bastion.config.guards import GuardsConfig
from bastion.guards.protect import Protection
from bastion.guards.refusal import detect_refusal
from bastion.guards.structured import expected_json, repair_messages
from bastion.guards.verdicts import OutputBlocked
from bastion.metering.budgets import BudgetExceeded
from bastion.providers import SSEEvent
from bastion.routing import Route

from .context import RequestContext
from .executor import Exhausted, Ready

if TYPE_CHECKING:
    from bastion.metering.meter import Meter
    from bastion.routing import Router

    from .executor import Executor, MakeRequest
    from .guarding import GuardStage


def _single_choice(body: dict[str, Any]) -> bool:
    return int(body.get("n") or 1) == 1


def _repair_body(up_body: dict[str, Any], out: dict[str, Any], check: Any) -> dict[str, Any]:
    """The OpenAI request for the one JSON repair retry: the conversation, the bad answer, what was wrong."""
    want = expected_json(up_body)
    bad = ((out.get("choices") or [{}])[0].get("message") or {}).get("content") or ""
    extra = repair_messages(bad, check.json_error, want[1] if want else None)
    return {**up_body, "messages": [*(up_body.get("messages") or []), *extra]}


def _sum_usage(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    return {k: int(a.get(k) or 0) + int(b.get(k) or 0) for k in set(a) | set(b)
            if isinstance(a.get(k, 0), int) and isinstance(b.get(k, 0), int)}


def _guard_of(code: str) -> str:
    return {"system_prompt_leak": "leak", "tool_call_blocked": "tools", "output_invalid_json": "json"}.get(code, "output")



class ReaskMixin:
    """Part of :class:`Gateway` (kept apart: one concept per module)."""

    # what these methods use of the Gateway they are part of (set and defined there; declared here so
    # that the type checker holds Gateway to these types)
    router: Router
    executor: Executor
    meter: Meter
    guarding: GuardStage

    if TYPE_CHECKING:
        def _serve(self, ctx: RequestContext, ready: Ready) -> None: ...
        def _maker(self, ctx: RequestContext, up_body: dict[str, Any], stream: bool) -> MakeRequest: ...
        def _answer(self, ctx: RequestContext, up: str, ready: Ready) -> tuple[dict[str, Any], bytes]: ...
        def _settle_tokens(self, ready: Ready, ctx: RequestContext) -> None: ...

    async def _guard_answer(self, ctx: RequestContext, route: Route, policy: GuardsConfig, prot: Protection,
                            body: dict[str, Any], up_body: dict[str, Any], out: dict[str, Any],
                            ) -> tuple[dict[str, Any], bool]:
        """The output guards on a whole answer, with the one JSON repair retry and the refusal fallback."""
        first = out
        try:
            check = self.guarding.check_answer(ctx, policy, prot, body, out)
            if check.json_error is not None and policy.json_output.repair and _single_choice(body) \
                    and not check.json_error.schema_invalid and ctx.finish_reason != "length":
                ctx.guards.append({"guard": "json", "action": "repair", "error": check.json_error.error})
                repaired = await self._again(ctx, route, _repair_body(up_body, out, check), "repair")
                if repaired is not None:
                    out = repaired
                    check = self.guarding.check_answer(ctx, policy, prot, body, out)
            elif check.refusal and policy.refusal.action == "fallback" and policy.refusal.fallback:
                for alias in policy.refusal.fallback:
                    ctx.guards.extend(check.verdicts)
                    other = await self._again(ctx, self.router.route(alias, "chat"), up_body, "refusal_fallback")
                    if other is None:
                        continue
                    out = other
                    check = self.guarding.check_answer(ctx, policy, prot, body, out)
                    if not check.refusal:
                        ctx.guards.append({"guard": "refusal", "action": "fallback", "served_by": alias})
                        break
        except OutputBlocked as e:
            ctx.response = {"withheld": e.code}
            ctx.guards.append({"guard": _guard_of(e.code), "action": "block", "message": e.message})
            raise
        self.guarding.record(ctx, check)
        if check.json_error is not None and policy.json_output.action == "block":
            ctx.response = {"withheld": "output_invalid_json"}
            raise OutputBlocked(
                f"the answer is not valid JSON for the requested format{' after one repair retry' if policy.json_output.repair else ''}: "
                f"{check.json_error.error}. Change guards.json for this model (flag or log) to receive it anyway",
                code="output_invalid_json")
        if check.holds:
            await self.guarding.save_holds(ctx, check.holds)
            ctx.cache_key = None  # an answer with an approval id is this request's alone
        if check.json_error is not None or check.refusal:
            ctx.cache_key = None
        return check.response, check.changed or out is not first

    async def _again(self, ctx: RequestContext, route: Route, up_body: dict[str, Any], kind: str,
                     ) -> dict[str, Any] | None:
        """One more non-streamed call for the guards (a repair, a refusal fallback): its attempts and its
        usage count for the request. None when it failed (the first answer stands)."""
        prior = (ctx.deployment, ctx.served_model, dict(ctx.usage))
        body = {k: v for k, v in up_body.items() if k != "stream_options"} | {"stream": False}
        ready = await self._run_extra(ctx, route, body, False, kind)
        if ready is None:
            return None
        self._serve(ctx, ready)
        out, _ = self._answer(ctx, ready.cand.deployment.provider.dialect, ready)
        self._settle_tokens(ready, ctx)
        ctx.prior_usage.append(prior)
        ctx.usage = _sum_usage(ctx.usage, prior[2])
        return out

    async def _run_extra(self, ctx: RequestContext, route: Route, body: dict[str, Any], stream: bool,
                         kind: str) -> Ready | None:
        """Run one more call for the guards on its own attempt budget; its attempts join the request's log
        as ``kind``. Its worst case is reserved first in the request's budgets: when they cannot take it, the
        call is not made. None (and a logged verdict) when nothing answered."""
        guard = "json" if kind == "repair" else "refusal"
        try:
            await self.meter.extend(ctx.admission, route, body, ctx.dialect)
        except BudgetExceeded as e:
            ctx.guards.append({"guard": guard, "action": "log", "message": f"the {kind.replace('_', ' ')} call to "
                               f"{route.alias} was not made: {e.message}"})
            return None
        sub = RequestContext(endpoint=ctx.endpoint, dialect=ctx.dialect, request_id=ctx.request_id, key=ctx.key,
                             user=ctx.user, alias=route.alias, body=ctx.body, options=ctx.options)
        try:
            return await self.executor.run(sub, route, self._maker(sub, body, stream), stream=stream, body=body)
        except Exhausted as ex:
            ctx.guards.append({"guard": guard, "action": "log",
                               "message": f"the {kind.replace('_', ' ')} call to {route.alias} failed: "
                                          f"{ex.error.message}"})
            return None
        finally:
            for a in sub.attempts:
                a.kind = kind
            ctx.attempts.extend(sub.attempts)

    async def _stream_refusal_fallback(self, ctx: RequestContext, policy: GuardsConfig, ready: Ready,
                                       body: dict[str, Any], up_body: dict[str, Any]) -> Ready:
        """A streamed answer on a route with a refusal fallback: read its opening (up to PEEK_CHARS, before
        anything reaches the client) and, when it is a refusal, stream the first fallback alias whose
        opening is not. The refused stream keeps its place until a fallback is ready (if none answers,
        the client gets the refusal), then is closed; its tokens, counted offline, are priced with the
        request."""
        current = ready
        for alias in policy.refusal.fallback:
            text = await peek_text(current)
            verdict = detect_refusal(text)
            if verdict.score < policy.refusal.threshold:
                return current
            ctx.guards.append({"guard": "refusal", "action": "fallback", "from": current.cand.route.alias,
                               "to": alias, "score": round(verdict.score, 3)})
            other = await self._run_extra(ctx, self.router.route(alias, "chat"), up_body, True, "refusal_fallback")
            if other is None:
                continue
            self._abandon(ctx, current, body, text)
            current = other
            self._serve(ctx, current)
        return current

    def _abandon(self, ctx: RequestContext, ready: Ready, body: dict[str, Any], text: str) -> None:
        """Close a stream the client will never see, and price what it produced so far."""
        assert ready.resp is not None
        ready.resp.close()
        ready.attempt.outcome, ready.attempt.error_code = "ok", "refusal"
        ready.attempt.error = "the answer opened with a refusal: abandoned for the fallback"
        ready.attempt.ended_at = ctx.now()
        dep = ready.cand.deployment
        shaped = {"choices": [{"message": {"content": text}}]} if ctx.dialect == "openai" else \
            {"content": [{"type": "text", "text": text}]}
        usage = self.meter.estimate_usage(ctx.dialect, body, shaped, dep.model) or {}
        self.executor.stream_finished(ready, usage_tokens=int(usage.get("total_tokens") or 0))
        ctx.prior_usage.append((dep.id, None, usage))
        ctx.flags.append("usage_estimated")


PEEK_CHARS = 300


def _event_text(ev: SSEEvent) -> tuple[str, bool]:
    """(answer text in the event, whether the answer ended), for either upstream dialect; ("", False) for
    anything unreadable (the relay reports it)."""
    if ev.data == b"[DONE]":
        return "", True
    try:
        data = orjson.loads(ev.data)
    except orjson.JSONDecodeError:
        return "", False
    if not isinstance(data, dict):
        return "", False
    if isinstance(data.get("choices"), list):
        out, done = [], False
        for ch in data["choices"]:
            if isinstance(ch, dict):
                delta = d if isinstance(d := ch.get("delta"), dict) else {}
                if isinstance(delta.get("content"), str):
                    out.append(delta["content"])
                done = done or ch.get("finish_reason") is not None
        return "".join(out), done
    kind = ev.event or str(data.get("type") or "")
    delta = d if isinstance(d := data.get("delta"), dict) else {}
    if kind == "content_block_delta" and isinstance(delta.get("text"), str):
        return delta["text"], False
    return "", kind in ("message_stop", "content_block_stop")


async def peek_text(ready: Ready, limit: int = PEEK_CHARS) -> str:
    """Read the stream's opening into ``ready.first`` (the relay sends it later) until ``limit`` characters
    of text, the end of the answer, or a read error (left for the relay to report)."""
    parts: list[str] = []
    size, done = 0, False
    for ev in ready.first:
        t, d = _event_text(ev)
        parts.append(t)
        size += len(t)
        done = done or d
    while size < limit and not done and ready.events is not None:
        try:
            batch = await anext(ready.events, None)
        except Exception:  # noqa: BLE001 - a broken stream: the relay turns it into an error event
            break
        if batch is None:
            break
        ready.first.extend(batch)
        for ev in batch:
            t, d = _event_text(ev)
            parts.append(t)
            size += len(t)
            done = done or d
    return "".join(parts)
