"""The guard stages of the pipeline: the policy that applies to a request (global, then alias, then
tenant), the input guard, the protected body sent upstream, the output guards on whole and streamed
answers, tool calls held for approval, and the verdicts' metrics."""

from __future__ import annotations

import asyncio
from typing import Any

from bastion.config.guards import GuardsConfig, overlay
from bastion.config.model import BastionConfig
from bastion.errors import InvalidRequest
from bastion.guards.answer import AnswerCheck, Hold, check_answer
from bastion.guards.protect import Protection, protect
from bastion.guards.stage import InputGuard, PromptInjectionDetected, scanned_texts
from bastion.guards.stream_guard import StreamGuard
from bastion.guards.structured import expected_json, schema_problem
from bastion.guards.tools import conversation_risk, declared_tools, should_hold
from bastion.telemetry import Metrics

from .context import RequestContext

OFFLOAD_CHARS = 16_000  # about 4,000 tokens: the input guard runs in a worker thread beyond this


def guard_summary(verdicts: list[dict[str, Any]]) -> str | None:
    """``guard=action`` of every verdict that did something ("input=flag,output=redact"), or None: the
    ``x-bastion-guard`` header, and the ``bastion.guard`` field at the end of a guarded stream."""
    fired = [f"{g['guard']}={g['action']}" for g in verdicts if g.get("action") not in (None, "pass")]
    return ",".join(fired) if fired else None


def record_verdicts(ctx: RequestContext, verdicts: list[dict[str, Any]]) -> None:
    """Verdicts into the request's log row; a flag or hold also marks the row ``guard:<name>``."""
    ctx.guards.extend(verdicts)
    for v in verdicts:
        if v.get("action") in ("flag", "hold"):
            flag = f"guard:{v['guard']}"
            if flag not in ctx.flags:
                ctx.flags.append(flag)


def input_flagged(ctx: RequestContext) -> bool:
    return any(g.get("guard") == "input" and g.get("action") not in (None, "pass") for g in ctx.guards)


class GuardStage:
    def __init__(self, config: BastionConfig, metrics: Metrics, store: Any) -> None:
        self.default = config.guards
        self.per_alias = {a: m.guards for a, m in config.models.items() if m.guards is not None}
        self.per_tenant = {t: c.guards for t, c in config.tenants.items() if c.guards is not None}
        self._policies: dict[tuple[str, str], GuardsConfig] = {}
        self.metrics = metrics
        self.store = store
        self.input = InputGuard()

    def warm(self) -> None:
        """Load what the guards need now (the classifier: about 0.2 s), not on the first request."""
        policies = [self.default, *self.per_alias.values(), *self.per_tenant.values()]
        if any(p.input.classifier and p.input.action != "off" for p in policies if "input" in p.model_fields_set
               or p is self.default):
            clf = self.input._clf()
            if clf is not None:
                clf.score("warm up " * 100)  # builds the integer weight tables too

    def policy(self, alias: str, tenant: str) -> GuardsConfig:
        key = (alias, tenant)
        p = self._policies.get(key)
        if p is None:
            p = overlay(overlay(self.default, self.per_alias.get(alias)), self.per_tenant.get(tenant))
            self._policies[key] = p
        return p

    # ---- before the upstream call --------------------------------------------------------------
    async def scan_input(self, ctx: RequestContext, policy: GuardsConfig, body: dict[str, Any]) -> None:
        """``check_input`` off the event loop when the text is long (about 2 ms per 1,000 tokens: a large
        document would stall every other request on the loop)."""
        if policy.input.action != "off" and \
                sum(len(t) for _, t in scanned_texts(body, policy.input.scan)) > OFFLOAD_CHARS:
            await asyncio.to_thread(self.check_input, ctx, policy, body)
        else:
            self.check_input(ctx, policy, body)

    @staticmethod
    def check_schemas(policy: GuardsConfig, body: dict[str, Any], dialect: str) -> None:
        """A request schema the guards will validate against must be a valid JSON schema: a broken tool
        ``parameters`` / ``input_schema`` or ``response_format`` schema is the caller's 400 before any upstream
        call, not a 422 after a paid one. (Schemas set in the route's config were checked at load.)"""
        if policy.tools.action != "off":
            for name, schema in declared_tools(body, dialect).items():
                if schema is None or name in policy.tools.schemas:
                    continue
                problem = schema_problem(schema)
                if problem is not None:
                    problem = problem.removeprefix("schema is invalid: ")
                    field = "parameters" if dialect == "openai" else "input_schema"
                    raise InvalidRequest(f"tools: the {field} of tool {name!r} is not a usable JSON schema "
                                         f"({problem})", param="tools")
        if dialect == "openai" and policy.json_output.action != "off":
            wanted = expected_json(body)
            problem = schema_problem(wanted[1]) if wanted is not None and wanted[1] is not None else None
            if problem is not None:
                problem = problem.removeprefix("schema is invalid: ")
                raise InvalidRequest(f"response_format.json_schema.schema is not a usable JSON schema ({problem})",
                                     param="response_format.json_schema.schema")

    def check_input(self, ctx: RequestContext, policy: GuardsConfig, body: dict[str, Any]) -> None:
        try:
            verdict = self.input.check(policy.input, body)
        except PromptInjectionDetected as e:
            ctx.guards.append({"guard": "input", "action": "block", "message": e.message})
            raise
        if verdict is None:
            return
        ctx.guards.append(verdict)
        if verdict["action"] == "flag":
            ctx.flags.append("guard:input")

    @staticmethod
    def protect(policy: GuardsConfig, body: dict[str, Any], dialect: str) -> tuple[dict[str, Any], Protection]:
        return protect(body, dialect, policy)

    @staticmethod
    def needs_whole_answer(ctx: RequestContext, policy: GuardsConfig, body: dict[str, Any], prot: Protection) -> bool:
        """A stream whose answer may have to be held back whole: a call to an irreversible tool in a risky
        conversation can only be withheld if nothing of it was sent, and JSON that must be valid (json:
        block, with the repair retry) can only be repaired before it is sent. Such streams are read whole
        from the upstream, checked, then streamed to the client."""
        jp = policy.json_output
        if jp.action == "block" and jp.repair and ctx.dialect == "openai" and expected_json(body) is not None:
            return True
        tp = policy.tools
        if not tp.irreversible or not body.get("tools"):
            return False
        if not set(tp.irreversible) & set(declared_tools(body, ctx.dialect)):
            return False
        has_untrusted, flagged = conversation_risk(body, ctx.dialect, input_flagged(ctx))
        return should_hold(tp, has_untrusted or prot.has_untrusted, flagged)

    @staticmethod
    def stream_guard(policy: GuardsConfig, prot: Protection, body: dict[str, Any], dialect: str) -> StreamGuard | None:
        g = StreamGuard(policy, prot, body, dialect)
        return g if g.active else None

    # ---- after it ------------------------------------------------------------------------------
    @staticmethod
    def check_answer(ctx: RequestContext, policy: GuardsConfig, prot: Protection, body: dict[str, Any],
                     answer: dict[str, Any]) -> AnswerCheck:
        """Run the output guards on a whole answer in the client's dialect (raises OutputBlocked)."""
        return check_answer(answer, ctx.dialect, body, prot, policy, input_flagged=input_flagged(ctx))

    @staticmethod
    def record(ctx: RequestContext, check: AnswerCheck) -> None:
        record_verdicts(ctx, check.verdicts)

    async def save_holds(self, ctx: RequestContext, holds: list[Hold]) -> None:
        if not holds:
            return
        now = ctx.now()
        records = [{"id": h.approval_id, "created_at": now, "request_id": ctx.request_id,
                    "tenant": ctx.key.tenant if ctx.key else None, "user": ctx.user, "alias": ctx.alias,
                    "tool": h.tool, "call_id": h.call_id, "arguments": h.arguments, "reason": h.reason}
                   for h in holds]
        await asyncio.to_thread(self.store.insert_approvals, records)

    def count(self, ctx: RequestContext, model: str) -> None:
        """Metrics for every verdict of a finished request (``model``: the alias as a bounded label)."""
        m = self.metrics
        for v in ctx.guards:
            guard = str(v.get("guard"))
            m.child(m.guard_verdicts, model, guard, str(v.get("action"))).inc()
            for r in v.get("reasons") or ():
                m.child(m.guard_rules, guard, str(r.get("rule", "-"))).inc()
            for f in v.get("findings") or ():
                m.child(m.guard_rules, guard, str(f.get("kind", "-"))).inc()
            if guard == "leak":
                m.child(m.guard_rules, "leak", "canary" if v.get("score") == 1.0 else "fuzzy").inc()
