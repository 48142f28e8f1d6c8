"""The metering stage: before a call, quotas and budget reservations; after it, the exact cost, settlement,
and the spend alerts.

``admit`` runs after the route is known (so that the worst case can be priced) and before any upstream
attempt; ``settle`` runs exactly once when the request is over, whatever happened to it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bastion.config.model import BastionConfig
from bastion.routing import Deployment, Route
from bastion.state import State
from bastion.store.sqlite import SQLiteStore

from .alerts import Alerts
from .budgets import BudgetHold, Budgets, to_nano
from .prices import Cost, Price, PriceTable, Usage, cost, worst_case
from .quotas import QuotaHold, Quotas
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
    worst_usd: Decimal = Decimal(0)


class Meter:
    def __init__(self, config: BastionConfig, state: State, store: SQLiteStore) -> None:
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
    async def admit(self, subject: Subject, route: Route, body: dict[str, Any], dialect: str) -> Admission | None:
        if not self.active:
            return None
        deps = route.deployments
        model = deps[0].model
        if route.kind == "embedding":
            inp = body.get("input")
            est_in = count_chat([{"role": "user", "content": inp if isinstance(inp, str) else str(inp)}], model)
        elif dialect == "anthropic":
            est_in = count_messages_request(body, model)
        else:
            est_in = count_chat(body.get("messages") or [], model, tools=body.get("tools"))
        out = body.get("max_completion_tokens") or body.get("max_tokens")
        n = body.get("n") if isinstance(body.get("n"), int) and body.get("n", 1) > 0 else 1
        max_out = (int(out) if isinstance(out, int) else max(self._max_output(d) for d in deps)) * n
        if route.kind == "embedding":
            max_out = 0
        quota = await self.quotas.admit(subject, est_in + max_out)
        worst = Decimal(0)
        if self.budgets.budgets:
            prices = [p for d in deps if (p := self.price_of(d)) is not None]
            worst = max((worst_case(est_in, max_out, p) for p in prices), default=Decimal(0))
            try:
                budget = await self.budgets.reserve(subject, worst)
            except BaseException:
                await self.quotas.release(quota, None)
                raise
        else:
            budget = BudgetHold()
        return Admission(subject, est_in + max_out, quota, budget, dict(quota.headers), worst)

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
                       model: str) -> dict[str, int] | None:
        """OpenAI-shaped usage counted with the offline tokenizer, for an answer that reported none."""
        try:
            if dialect == "anthropic":
                prompt = count_messages_request(body, model)
                text = "".join(b.get("text") or "" for b in response.get("content") or [] if isinstance(b, dict))
            else:
                prompt = count_chat(body.get("messages") or [], model, tools=body.get("tools"))
                text = "".join(((c.get("message") or {}).get("content") or "") for c in response.get("choices") or []
                               if isinstance(c, dict) and isinstance((c.get("message") or {}).get("content"), str))
        except (TypeError, ValueError, AttributeError):
            return None
        completion = count_text(text, model) if text else 0
        return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}

    async def settle(self, adm: Admission, usd: Decimal, tokens: int | None) -> None:
        await self.quotas.release(adm.quota, tokens)
        await self.budgets.settle(adm.budget, usd)


__all__ = ["Admission", "Meter", "to_nano"]
