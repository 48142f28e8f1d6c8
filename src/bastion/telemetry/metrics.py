"""Prometheus metrics of the gateway, on a registry of its own (one per app instance)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)


MAX_CODES = 100  # distinct error-code label values
MAX_CHILDREN = 20_000  # bound children kept by ``child`` (label values are bounded; this is a backstop)


class Metrics:
    def __init__(self) -> None:
        self._codes: set[str] = set()
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "bastion_requests", "Requests answered, by endpoint, alias, deployment and HTTP status",
            ["endpoint", "model", "deployment", "status"], registry=r,
        )
        self.errors = Counter(
            "bastion_errors", "Requests that ended in an error, by stable error code",
            ["endpoint", "model", "code"], registry=r,
        )
        self.latency = Histogram(
            "bastion_request_duration_seconds", "Total time from request received to last byte sent",
            ["endpoint", "model", "stream"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "bastion_time_to_first_token_seconds", "Time from request received to the first upstream token",
            ["endpoint", "model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "bastion_tokens", "Tokens reported by upstreams", ["model", "kind"], registry=r,
        )
        self.attempts = Counter(
            "bastion_upstream_attempts", "Upstream attempts by deployment and outcome",
            ["deployment", "outcome"], registry=r,
        )
        self.retries = Counter(
            "bastion_retries", "Attempts that re-tried a deployment already tried for the request",
            ["model", "deployment"], registry=r,
        )
        self.fallbacks = Counter(
            "bastion_fallbacks", "Moves to another deployment or alias after a failed attempt, by reason",
            ["model", "to_model", "reason"], registry=r,
        )
        self.skips = Counter(
            "bastion_deployment_skips", "Deployments passed over without a call, by reason",
            ["deployment", "reason"], registry=r,
        )
        self.hedges = Counter(
            "bastion_hedges", "Hedged attempts: started, and whether the hedge or the original answered first",
            ["model", "outcome"], registry=r,
        )
        self.breaker_changes = Counter(
            "bastion_breaker_transitions", "Circuit breaker state changes", ["deployment", "state"], registry=r,
        )
        self.breaker_state = Gauge(
            "bastion_breaker_state", "Circuit breaker state: 0 closed, 1 half-open, 2 open", ["deployment"], registry=r,
        )
        self.degraded = Counter(
            "bastion_degraded_answers", "Requests answered with the configured degraded answer", ["model"], registry=r,
        )
        self.cache_lookups = Counter(
            "bastion_cache_lookups", "Response-cache lookups by result (hit, semantic-hit, stale, miss)",
            ["model", "result"], registry=r,
        )
        self.cache_saved_tokens = Counter(
            "bastion_cache_saved_tokens", "Upstream tokens not spent thanks to cache hits", ["model"], registry=r,
        )
        self.cache_saved_usd = Counter(
            "bastion_cache_saved_usd", "Money not spent thanks to cache hits (USD)", ["model"], registry=r,
        )
        self.cache_entries = Gauge("bastion_cache_entries", "Entries in the response cache", registry=r)
        self.guard_verdicts = Counter(
            "bastion_guard_verdicts", "Guard verdicts by guard and action (pass, flag, log, block)",
            ["model", "guard", "action"], registry=r,
        )
        self.guard_rules = Counter(
            "bastion_guard_rule_hits", "Guard rules that fired", ["guard", "rule"], registry=r,
        )
        self.inflight = Gauge("bastion_inflight_requests", "Requests being served now", registry=r)
        self.log_written = Counter("bastion_log_records_written", "Request-log records committed", registry=r)
        self.log_queue = Gauge("bastion_log_queue_depth", "Request-log records waiting to be committed", registry=r)
        self.log_events = Counter(
            "bastion_log_events", "Request-log trouble: store_failure, spill_failure, reduced (stored with unencodable "
            "parts replaced), degraded, recovered, writer_error", ["event"], registry=r,
        )
        self.log_lost = Counter(
            "bastion_log_records_lost", "Request-log records that no storage took (on_write_failure: serve)", registry=r,
        )
        self.log_degraded = Gauge(
            "bastion_log_degraded", "1 while neither the store nor the spill file can be written", registry=r,
        )
        self.over_reservation = Counter(
            "bastion_budget_over_reservation", "Requests that settled above their budget reservation (an upstream "
            "that ignored max_tokens), by alias and deployment", ["model", "deployment"], registry=r,
        )

    def on_breaker(self, deployment: str, state: str) -> None:
        self.breaker_changes.labels(deployment, state).inc()
        self.breaker_state.labels(deployment).set({"closed": 0, "half_open": 1, "open": 2}[state])

    def child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, bound once and kept: the per-request path skips prometheus_client's
        label validation and lock (the values are bounded: configured aliases and deployments, capped codes)."""
        key = (metric, labels)
        c = self._children.get(key)
        if c is None:
            c = metric.labels(*labels)
            if len(self._children) < MAX_CHILDREN:
                self._children[key] = c
        return c

    def code_label(self, code: str) -> str:
        """An error code as a label value: codes are ours, but a few are an upstream's own words, so the set
        is capped (the first ``MAX_CODES`` distinct codes keep their name, later ones count as ``other``)."""
        if code in self._codes:
            return code
        if len(self._codes) < MAX_CODES and len(code) <= 64:
            self._codes.add(code)
            return code
        return "other"

    def on_log_event(self, event: str, n: int) -> None:
        if event == "lost":
            self.log_lost.inc(n)
            return
        self.log_events.labels(event).inc(n)
        if event in ("degraded", "recovered"):
            self.log_degraded.set(1 if event == "degraded" else 0)

    def on_flush(self, written: int, pending: int) -> None:
        self.log_written.inc(written)
        self.log_queue.set(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)
