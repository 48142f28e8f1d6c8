"""The request context: what flows through the pipeline, and becomes one row of the request log."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from bastion.errors import BastionError
from bastion.keys import KeyInfo
from bastion.scrub import scrub

# Parameters worth their own place in the log (the full request is stored too).
SAMPLING_PARAMS = (
    "temperature", "top_p", "top_k", "max_tokens", "max_completion_tokens", "seed", "n", "stop",
    "stop_sequences", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "response_format",
    "tool_choice", "parallel_tool_calls", "reasoning_effort", "logit_bias", "dimensions", "encoding_format",
)


def new_request_id() -> str:
    return "req_" + uuid.uuid4().hex


@dataclass(slots=True)
class Attempt:
    deployment: str
    started_at: float
    first_byte_at: float | None = None
    ended_at: float | None = None
    # ok | error | timeout | cancelled (lost a hedge race) | client_closed | skipped (never sent)
    outcome: str = "pending"
    status: int | None = None
    error: str | None = None
    kind: str = "first"  # first | retry | fallback | hedge
    alias: str | None = None
    error_code: str | None = None
    backoff_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment,
            "alias": self.alias,
            "kind": self.kind,
            "started_at": self.started_at,
            "first_byte_at": self.first_byte_at,
            "ended_at": self.ended_at,
            "outcome": self.outcome,
            "status": self.status,
            "error_code": self.error_code,
            "error": self.error,
            "backoff_ms": self.backoff_ms,
        }

    @property
    def sent(self) -> bool:
        return self.outcome != "skipped"


@dataclass(slots=True)
class RequestContext:
    endpoint: str  # chat | messages | embeddings
    dialect: str  # openai | anthropic
    request_id: str = field(default_factory=new_request_id)
    received_at: float = field(default_factory=time.time)
    t0: float = field(default_factory=time.perf_counter)
    key: KeyInfo | None = None
    user: str | None = None
    session: str | None = None
    alias: str | None = None
    body: dict[str, Any] | None = None
    stream: bool = False
    deployment: str | None = None
    provider: str | None = None
    upstream_model: str | None = None
    served_model: str | None = None
    system_fingerprint: str | None = None
    first_byte_at: float | None = None
    done_at: float | None = None
    status: int = 200
    error_code: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    usage: dict[str, int] = field(default_factory=dict)
    response: Any = None
    attempts: list[Attempt] = field(default_factory=list)
    options: dict[str, str] = field(default_factory=dict)  # x-bastion-* request headers (timeouts, hedge)
    degraded: bool = False
    served_alias: str | None = None  # the alias that answered (a fallback alias, or the requested one)
    open_stream: Any = None  # the executor's Ready while its stream is being relayed
    admission: Any = None  # metering's quota and budget holds, settled when the request is over
    admission_headers: dict[str, str] | None = None  # x-ratelimit-* of the quotas that apply
    cost_usd: Decimal | None = None
    cost_detail: dict[str, Any] | None = None
    flags: list[str] = field(default_factory=list)
    prompt_version: str | None = None
    cache_key: Any = None  # (CacheKey, Decision) when the alias caches
    cache_status: str | None = None
    cache_info: dict[str, Any] | None = None
    saved_usd: Decimal | None = None
    guards: list[dict[str, Any]] = field(default_factory=list)
    stored: Any = None  # store.commit_before_answer: a future done once the log record is committed
    # (deployment, served model, usage) of earlier answers in this request (a JSON repair, a refusal
    # fallback): priced with the final one
    prior_usage: list[tuple[str | None, str | None, dict[str, int]]] = field(default_factory=list)

    def now(self) -> float:
        """Wall-clock time derived from the monotonic clock (consistent within the request)."""
        return self.received_at + (time.perf_counter() - self.t0)

    def mark_first_byte_at(self, t: float | None) -> None:
        if self.first_byte_at is None and t is not None:
            self.first_byte_at = t

    def mark_first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = self.now()

    def fail(self, err: BastionError) -> None:
        self.status = err.status
        self.error_code = err.code
        self.error_message = err.message

    @property
    def ttft_ms(self) -> float | None:
        return None if self.first_byte_at is None else (self.first_byte_at - self.received_at) * 1000

    @property
    def latency_ms(self) -> float | None:
        return None if self.done_at is None else (self.done_at - self.received_at) * 1000

    def to_record(self, *, log_bodies: bool = True, redact_keys: tuple[str, ...] = ()) -> dict[str, Any]:
        body = self.body if isinstance(self.body, dict) else None
        params = {k: body[k] for k in SAMPLING_PARAMS if body is not None and k in body}
        request = response = None
        if log_bodies:
            request = _redact(body, redact_keys) if redact_keys else body
            response = _redact(self.response, redact_keys) if redact_keys else self.response
        return {
            "id": self.request_id,
            "received_at": self.received_at,
            "first_byte_at": self.first_byte_at,
            "done_at": self.done_at,
            "tenant": self.key.tenant if self.key else None,
            "user": self.user,
            "session": self.session,
            "key_id": self.key.key_id if self.key else None,
            "endpoint": self.endpoint,
            "dialect": self.dialect,
            "alias": self.alias,
            "deployment": self.deployment,
            "provider": self.provider,
            "upstream_model": self.upstream_model,
            "served_model": self.served_model,
            "system_fingerprint": self.system_fingerprint,
            "stream": self.stream,
            "params": params,
            "request": request,
            "response": response,
            "status": self.status,
            "error_code": self.error_code,
            "error_message": scrub(self.error_message) if self.error_message else None,
            "finish_reason": self.finish_reason,
            "prompt_tokens": self.usage.get("prompt_tokens"),
            "completion_tokens": self.usage.get("completion_tokens"),
            "total_tokens": self.usage.get("total_tokens"),
            "ttft_ms": self.ttft_ms,
            "latency_ms": self.latency_ms,
            "attempts": [_scrubbed(a.as_dict()) for a in self.attempts],
            "cost_nusd": None if self.cost_usd is None else int(self.cost_usd * 1_000_000_000),
            "cost": self.cost_detail,
            "prompt_version": self.prompt_version,
            "flags": self.flags or None,
            "cache_status": self.cache_status,
            "cache": self.cache_info,
            "saved_nusd": None if self.saved_usd is None else int(self.saved_usd * 1_000_000_000),
            "guards": self.guards or None,
        }


def _scrubbed(attempt: dict[str, Any]) -> dict[str, Any]:
    """Last line of defence: an attempt's error never carries a provider key into the log (bastion.scrub)."""
    if attempt["error"]:
        attempt["error"] = scrub(attempt["error"])
    return attempt


def _redact(value: Any, keys: tuple[str, ...]) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in keys else _redact(v, keys)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact(v, keys) for v in value]
    return value
