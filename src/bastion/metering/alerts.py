"""Spend alerts: budget thresholds, spend rate and outlier users; recorded, logged and sent to webhooks.

Each alert has a dedup key (e.g. budget × subject × period × threshold) claimed once through ``state/``
with compare-and-set, so it fires once however many requests (or replicas) cross the line. It is written
to the ``alerts`` table, logged, and POSTed to every configured webhook, retried with backoff until a 2xx
(each delivery attempt is recorded on the alert). Receivers should dedupe on ``x-bastion-alert-id``: a
delivery whose 2xx was lost in transit is sent again.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import os
import statistics
import time
import uuid
from collections import defaultdict, deque
from decimal import Decimal
from typing import Any

import aiohttp
import orjson

from bastion.background import Background
from bastion.config.metering import AlertsConfig, BudgetConfig, WebhookConfig
from bastion.state import State
from bastion.store.sqlite import SQLiteStore

from .budgets import from_nano
from .subjects import Subject, applies, describe

log = logging.getLogger("bastion.alerts")

_DEDUP_TTL_S = 40 * 86_400


class Alerts:
    def __init__(self, config: AlertsConfig, state: State, store: SQLiteStore) -> None:
        self.config = config
        self.state = state
        self.store = store
        self._claimed: set[str] = set()  # dedup keys this process already saw claimed
        self.background = Background()  # webhook deliveries, spend-rate checks, alert firing
        self._spend: deque[tuple[float, str, str, Decimal]] = deque()  # (t, tenant, user, usd) for outliers
        self._session: aiohttp.ClientSession | None = None
        self._outlier_task: asyncio.Task[None] | None = None
        self.fired = 0
        self.wants_costs = bool(config.spend_rate) or config.outliers.enabled

    async def start(self) -> None:
        if self.config.outliers.enabled:
            self._outlier_task = asyncio.get_running_loop().create_task(self._outlier_loop())

    async def stop(self, timeout: float = 5.0) -> None:
        if self._outlier_task is not None:
            self._outlier_task.cancel()
        await self.background.drain(timeout)  # let deliveries in progress finish (bounded)
        if self._session is not None:
            await self._session.close()

    # ---- triggers ----------------------------------------------------------------------------
    def on_budget_spend(self, b: BudgetConfig, who: str, spent: int, limit: int, period: str) -> None:
        if limit <= 0:
            return
        for threshold in b.alert_at:
            if spent >= threshold * limit:
                dedup = f"alert:budget:{b.name}:{who}:{period}:{threshold:g}"
                if dedup in self._claimed:
                    continue
                if len(self._claimed) > 100_000:  # a local shortcut only; the state's CAS decides
                    self._claimed.clear()
                self._claimed.add(dedup)
                pct = f"{threshold * 100:g}%"
                self.background.spawn(self.fire(
                    dedup, "budget", "critical" if threshold >= 1 else "warning", who,
                    f"budget {b.name!r} of {describe(who)} reached {pct}: "
                    f"${from_nano(spent).normalize():f} of ${b.limit_usd:f} ({b.period} {period})",
                    {"budget": b.name, "threshold": threshold, "spent_usd": str(from_nano(spent)),
                     "limit_usd": str(b.limit_usd), "period": period, "mode": b.mode},
                ))

    def on_over_reservation(self, deployment: str, alias: str | None, request_id: str, reserved_usd: Decimal,
                            actual_usd: Decimal) -> None:
        """A request settled above its budget reservation: its upstream answered beyond ``max_tokens``
        (or the prompt was under-counted). Once per deployment per hour."""
        hour = int(time.time() // 3600)
        ratio = f"{actual_usd / reserved_usd:.1f}x " if reserved_usd > 0 else ""
        self.background.spawn(self.fire(
            f"alert:over_reservation:{deployment}:{hour}", "over_reservation", "warning", f"deployment:{deployment}",
            f"deployment {deployment!r} answered request {request_id} for ${actual_usd.normalize():f}, {ratio}the "
            f"${reserved_usd.normalize():f} its budgets reserved (the worst case for its prompt and max_tokens): "
            "the upstream ignored max_tokens, or its prices or token counts differ from Bastion's",
            {"deployment": deployment, "alias": alias, "request_id": request_id,
             "reserved_usd": str(reserved_usd), "actual_usd": str(actual_usd)},
        ))

    def on_cost(self, subject: Subject, usd: Decimal) -> None:
        """A request was settled at ``usd``: feed the spend-rate rules and the outlier window."""
        if usd <= 0:
            return
        now = time.time()
        if subject.user is not None and self.config.outliers.enabled:
            self._spend.append((now, subject.tenant, subject.user, usd))
        for i, rule in enumerate(self.config.spend_rate):
            who = applies(rule, subject)
            if who is not None:
                self.background.spawn(self._spend_rate(i, rule.usd_per_hour, who, usd, now))

    async def _spend_rate(self, i: int, per_hour: Decimal, who: str, usd: Decimal, now: float) -> None:
        total = await self.state.window_add(f"sr:{i}:{who}", float(usd), 3600)
        if Decimal(str(total)) > per_hour:
            hour = int(now // 3600)
            await self.fire(f"alert:rate:{i}:{who}:{hour}", "spend_rate", "warning", who,
                            f"{who.replace(':', ' ', 1)} spent ${Decimal(str(total)):.4f} in the last hour, above "
                            f"the alert rate of ${per_hour:f}/hour (alerts.spend_rate.{i})",
                            {"usd_last_hour": f"{total:.9f}", "usd_per_hour": str(per_hour)})

    async def _outlier_loop(self) -> None:
        cfg = self.config.outliers
        while True:
            await asyncio.sleep(cfg.check_every_s)
            try:
                await self.check_outliers()
            except Exception:  # never let the checker die silently
                log.exception("outlier check failed")

    async def check_outliers(self) -> None:
        cfg = self.config.outliers
        now = time.time()
        while self._spend and self._spend[0][0] < now - cfg.window_s:
            self._spend.popleft()
        per_tenant: dict[str, dict[str, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
        for _, tenant, user, usd in self._spend:
            per_tenant[tenant][user] += usd
        window = int(now // cfg.window_s)
        for tenant, users in per_tenant.items():
            if len(users) < cfg.min_users:
                continue
            median = statistics.median(users.values())
            for user, spent in users.items():
                if spent >= cfg.min_usd and spent > median * Decimal(str(cfg.factor)):
                    who = f"user:{tenant}/{user}"
                    await self.fire(f"alert:outlier:{who}:{window}", "outlier", "warning", who,
                                    f"user {user!r} of tenant {tenant!r} spent ${spent:.4f} in the last "
                                    f"{cfg.window_s} s, {spent / median:.1f}x the tenant's median user (${median:.4f})",
                                    {"spent_usd": str(spent), "tenant_median_usd": str(median),
                                     "users": len(users), "window_s": cfg.window_s})

    # ---- firing and delivery -----------------------------------------------------------------
    async def fire(self, dedup: str, kind: str, severity: str, subject: str, message: str,
                   data: dict[str, Any]) -> dict[str, Any] | None:
        if not await self.state.compare_and_set(dedup, None, "1", ttl_s=_DEDUP_TTL_S):
            return None  # already fired (here or on another replica)
        alert = {"id": "alert_" + uuid.uuid4().hex, "created_at": time.time(), "kind": kind, "severity": severity,
                 "subject": subject, "message": message, "data": data}
        self.fired += 1
        log.warning("alert %s [%s] %s", alert["id"], kind, message)
        try:
            await asyncio.to_thread(self.store.insert_alert, alert)
        except Exception:  # a full or failing disk must not stop the alert from going out
            log.exception("alert %s could not be recorded in the store; delivering it anyway", alert["id"])
        if self.config.webhooks:
            self.background.spawn(self._deliver_all(alert))
        return alert

    async def _deliver_all(self, alert: dict[str, Any]) -> None:
        results = await asyncio.gather(*(self._deliver(alert, hook) for hook in self.config.webhooks))
        done = time.time() if all(r["ok"] for r in results) else None
        await asyncio.to_thread(self.store.record_delivery, alert["id"], list(results), done)

    async def _deliver(self, alert: dict[str, Any], hook: WebhookConfig) -> dict[str, Any]:
        body = orjson.dumps(alert)
        headers = {"content-type": "application/json", "x-bastion-alert-id": alert["id"]}
        secret = os.environ.get(hook.secret_env) if hook.secret_env else None
        if secret:
            headers["x-bastion-signature"] = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        attempts: list[dict[str, Any]] = []
        for n in range(hook.max_attempts):
            if n:
                await asyncio.sleep(min(30.0, 0.5 * 2 ** (n - 1)))
            started = time.time()
            try:
                async with self._session.post(hook.url, data=body, headers=headers,
                                              timeout=aiohttp.ClientTimeout(total=hook.timeout_s)) as resp:
                    attempts.append({"at": started, "status": resp.status})
                    if 200 <= resp.status < 300:
                        return {"url": hook.url, "ok": True, "attempts": attempts}
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                attempts.append({"at": started, "error": f"{type(e).__name__}: {e}"[:200]})
        log.error("alert %s: webhook %s failed %d times", alert["id"], hook.url, len(attempts))
        return {"url": hook.url, "ok": False, "attempts": attempts}
