"""The metering stage: before a call, quotas and budget reservations; after it, the exact cost, settlement,
and the spend alerts.

``admit`` runs after the route is known and the body to send upstream is final (so that the worst case is
priced on the whole prompt the upstream will bill, guard additions included) and before any upstream
attempt; ``extend`` reserves more for an extra call of the same request (a JSON repair, a refusal
fallback); ``settle`` runs exactly once when the request is over, whatever happened to it. At start the
counters are rebuilt from the request log (``rebuild.py``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import orjson

from bastion.config.model import BastionConfig
from bastion.routing import Deployment, Route
from bastion.state import State
from bastion.store.sqlite import SQLiteStore

from .alerts import Alerts
from .budgets import BudgetHold, Budgets, to_nano
from .prices import Cost, Price, PriceTable, Usage, cost, worst_case
from .quotas import QuotaHold, Quotas
from .rebuild import rebuild
from .subjects import Subject
from .tokens import count_chat, count_messages_request, count_text, warm

DEFAULT_MAX_OUTPUT = 4096  # worst case for a request without max_tokens, when the model's limit is unknown


@dataclass(slots=True)
class Admission:
    subject: Subject
    est_tokens: int
    quota: QuotaHold
    budget: BudgetHold
    headers: dict[str, str] = field(default_factory=dict)
    worst_usd: Decimal = Decimal(0)  # what the budgets hold for this request (extra calls included)
    prompt_tokens: int = 0  # the prompt as sent upstream, counted offline (what a cut stream is billed for)


class Meter:
    def __init__(self, config: BastionConfig, state: State, store: SQLiteStore) -> None:
        self.state = state
        self.store = store
        self.prices = PriceTable.load_default()
        self.alerts = Alerts(config.alerts, state, store)
        self.quotas = Quotas(config.limits, state)
        self.budgets = Budgets(config.budgets, state, on_spend=self.alerts.on_budget_spend)
        self._overrides: dict[str, Price] = {}
        self._price_cache: dict[tuple[str, str | None], Price | None] = {}
        for m in config.models.values():
            for d in m.deployments:
                if d.price is not None:
                    self._overrides[d.id] = Price.from_mapping(d.price.model_dump(exclude_none=True))
        self.active = bool(config.limits or config.budgets)

    async def start(self) -> None:
        await asyncio.to_thread(warm)  # load the BPE files now, not on the first request's event loop
        await rebuild(self.state, self.store, self.budgets, self.quotas)
        await self.alerts.start()

    async def stop(self) -> None:
        await self.alerts.stop()

    # ---- prices ------------------------------------------------------------------------------
    def price_of(self, dep: Deployment, served_model: str | None = None) -> Price | None:
        key = (dep.id, served_model)
        try:
            return self._price_cache[key]
        except KeyError:
            pass
        p = self._overrides.get(dep.id)
        if p is None:
            p = self.prices.lookup(dep.model) or (self.prices.lookup(served_model) if served_model else None)
        if len(self._price_cache) < 10_000:
            self._price_cache[key] = p
        return p

    def _max_output(self, dep: Deployment) -> int:
        entry = self.prices.entry(dep.model)
        limit = entry.max_output if entry is not None else None
        return int(limit) if limit else DEFAULT_MAX_OUTPUT

    # ---- before ------------------------------------------------------------------------------
    def _estimate(self, route: Route, body: dict[str, Any], dialect: str) -> tuple[int, int]:
        """(prompt tokens, most output tokens) of ``body`` as it will be sent upstream."""
        deps = route.deployments
        model = deps[0].model
        if route.kind == "embedding":
            inp = body.get("input")
            est_in = count_chat([{"role": "user", "content": inp if isinstance(inp, str) else str(inp)}], model)
            return est_in, 0
        if dialect == "anthropic":
            est_in = count_messages_request(body, model)
        else:
            est_in = count_chat(body.get("messages") or [], model, tools=body.get("tools"))
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        n = v if isinstance(v := body.get("n"), int) and v > 0 else 1
        return est_in, (int(out) if isinstance(out, int) else max(self._max_output(d) for d in deps)) * n

    def _worst(self, route: Route, est_in: int, max_out: int) -> Decimal:
        prices = [p for d in route.deployments if (p := self.price_of(d)) is not None]
        return max((worst_case(est_in, max_out, p) for p in prices), default=Decimal(0))

    async def admit(self, subject: Subject, route: Route, body: dict[str, Any], dialect: str) -> Admission | None:
        """Count the request against the quotas and reserve its worst case in the budgets, or raise 429.
        ``body`` is the body as sent upstream (canary and protective text included)."""
        if not self.active:
            return None
        est_in, max_out = self._estimate(route, body, dialect)
        quota = await self.quotas.admit(subject, est_in + max_out)
        worst = Decimal(0)
        if self.budgets.budgets:
            worst = self._worst(route, est_in, max_out)
            try:
                budget = await self.budgets.reserve(subject, worst)
            except BaseException:
                await self.quotas.release(quota, None)
                raise
        else:
            budget = BudgetHold()
        return Admission(subject, est_in + max_out, quota, budget, dict(quota.headers), worst, est_in)

    async def extend(self, adm: Admission | None, route: Route, body: dict[str, Any], dialect: str) -> None:
        """Reserve the worst case of one more upstream call of the same request (``body`` on ``route``) in
        the budgets the request already holds, or raise BudgetExceeded (nothing reserved)."""
        if adm is None or not adm.budget.reservations:
            return
        est_in, max_out = self._estimate(route, body, dialect)
        worst = self._worst(route, est_in, max_out)
        await self.budgets.extend(adm.budget, worst)
        adm.worst_usd += worst

    @staticmethod
    def over_reservation(adm: Admission | None, usd: Decimal) -> bool:
        """Whether a request settles above what its budgets reserved (an upstream that ignored max_tokens)."""
        return adm is not None and bool(adm.budget.reservations) and to_nano(usd) > adm.budget.reserved

    # ---- after -------------------------------------------------------------------------------
    def cost_of(self, dep: Deployment | None, served_model: str | None, dialect: str,
                raw_usage: dict[str, Any] | None) -> tuple[Cost | None, Price | None]:
        if dep is None or not raw_usage:
            return None, None
        price = self.price_of(dep, served_model)
        if price is None:
            return None, None
        usage = Usage.from_anthropic(raw_usage) if dialect == "anthropic" else Usage.from_openai(raw_usage)
        return cost(usage, price), price

    def estimate_usage(self, dialect: str, body: dict[str, Any], response: dict[str, Any],
                       model: str, prompt_tokens: int | None = None) -> dict[str, int] | None:
        """OpenAI-shaped usage counted with the offline tokenizer, for an answer that reported none (or a
        stream cut before its usage arrived): the prompt (``prompt_tokens`` when it was already counted on
        the body sent upstream, else ``body``) and the answer's text, tool calls and thinking."""
        try:
            if prompt_tokens is None:
                prompt_tokens = count_messages_request(body, model) if dialect == "anthropic" else \
                    count_chat(body.get("messages") or [], model, tools=body.get("tools"))
            completion = sum(count_text(t, model) for t in _answer_texts(dialect, response) if t)
        except (TypeError, ValueError, AttributeError):
            return None
        return {"prompt_tokens": prompt_tokens, "completion_tokens": completion,
                "total_tokens": prompt_tokens + completion}

    async def settle(self, adm: Admission, usd: Decimal, tokens: int | None) -> None:
        await self.quotas.release(adm.quota, tokens)
        await self.budgets.settle(adm.budget, usd)


def _answer_texts(dialect: str, response: dict[str, Any]) -> list[str]:
    """The generated parts of an answer, as text: content, refusals, tool names and arguments, thinking."""
    out: list[str] = []
    if dialect == "anthropic":
        for b in response.get("content") or []:
            if not isinstance(b, dict):
                continue
            if b.get("type") == "tool_use":
                inp = b.get("input")
                unparsed = inp.get("_unparsed") if isinstance(inp, dict) else None
                out += [str(b.get("name") or ""), unparsed if isinstance(unparsed, str) else
                        orjson.dumps(inp if inp is not None else {}).decode()]
            else:
                out += [v for k in ("text", "thinking") if isinstance(v := b.get(k), str)]
        return out
    for c in response.get("choices") or []:
        msg = c.get("message") if isinstance(c, dict) else None
        if not isinstance(msg, dict):
            continue
        out += [v for k in ("content", "refusal") if isinstance(v := msg.get(k), str)]
        for call in msg.get("tool_calls") or []:
            fn = call.get("function") if isinstance(call, dict) else None
            if isinstance(fn, dict):
                out += [v for k in ("name", "arguments") if isinstance(v := fn.get(k), str)]
    return out


__all__ = ["Admission", "Meter", "to_nano"]
