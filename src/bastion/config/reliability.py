"""Reliability settings: timeouts, retries, circuit breakers, hedging, fallbacks and degraded answers.

Defaults live under ``routing:`` at the top of ``bastion.yaml``; a model alias may override any field of
``timeouts``, ``retry``, ``breaker`` and ``hedge`` (fields it leaves out keep the ``routing:`` value).
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from .problems import Loc, raise_problems

Strategy = Literal["weighted", "least_outstanding", "lowest_latency"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def over(self, base: Self | None) -> Self:
        """This object's explicitly set fields laid over ``base`` (the routing-wide defaults)."""
        if base is None:
            return self
        return base.model_copy(update={k: getattr(self, k) for k in self.model_fields_set})


class TimeoutsConfig(_Strict):
    connect_s: float | None = Field(None, gt=0, description="TCP+TLS connect; default: the provider's connect_timeout_s")
    first_token_s: float | None = Field(
        None, gt=0, description="attempt start to first token (streams) or to the response (non-streaming); "
        "unset: stream_first_token_s for streams, response_s for whole answers"
    )
    stream_first_token_s: float = Field(
        30.0, gt=0, description="a stream's first token must come within this when first_token_s is unset")
    response_s: float = Field(
        300.0, gt=0, description="a whole (non-streaming) answer must come within this when first_token_s is unset")
    chunk_gap_s: float | None = Field(None, gt=0, description="longest silence between stream chunks; default: the provider's read_timeout_s")
    total_s: float | None = Field(600.0, gt=0, description="the whole request, every attempt and backoff included")
    max_override_s: float = Field(
        600.0, gt=0, description="largest value a client may ask for with the x-bastion-timeout-* headers"
    )
    min_override_s: float = Field(
        1.0, gt=0, description="smallest value a client may ask for with the x-bastion-timeout-* headers"
    )

    @model_validator(mode="after")
    def _override_bounds(self) -> TimeoutsConfig:
        if self.min_override_s > self.max_override_s:
            raise ValueError(f"min_override_s ({self.min_override_s:g}) is above max_override_s "
                             f"({self.max_override_s:g}): no x-bastion-timeout-* value could be accepted")
        return self


class RetryConfig(_Strict):
    max_attempts: int = Field(3, ge=1, le=10, description="attempts per request over the whole fallback chain")
    backoff_base_ms: float = Field(100.0, ge=0)
    backoff_max_ms: float = Field(2000.0, ge=0)
    max_retry_after_s: float = Field(
        10.0, ge=0, description="an upstream Retry-After longer than this is not waited for: move on instead"
    )
    budget_ratio: float = Field(
        0.2, ge=0, le=10, description="retries allowed per deployment, as a fraction of its requests in the window"
    )
    budget_min_per_s: float = Field(2.0, ge=0, description="retries always allowed per second per deployment")
    budget_window_s: float = Field(10.0, gt=0, le=3600)


class BreakerConfig(_Strict):
    enabled: bool = True
    consecutive_failures: int = Field(5, ge=1, description="open after this many failures in a row")
    failure_rate: float = Field(0.5, gt=0, le=1, description="... or when this fraction of attempts failed")
    window_s: float = Field(30.0, gt=0, le=3600, description="the window the failure rate is measured over")
    min_requests: int = Field(20, ge=1, description="attempts needed in the window before the rate counts")
    open_s: float = Field(10.0, gt=0, description="how long an open breaker rejects before a probe is let through")
    probe_timeout_s: float = Field(30.0, gt=0, description="a probe that has not finished by then frees the slot")
    max_ejection_percent: float = Field(
        50.0, ge=0, le=100,
        description="most of an alias's deployments that may be open at once, in percent (rounded down)",
    )


class HedgeConfig(_Strict):
    enabled: bool = False
    delay_ms: float | None = Field(None, gt=0, description="fixed hedge delay; default: the observed percentile")
    percentile: float = Field(95.0, gt=0, lt=100, description="of the alias's recent time to first token")
    min_delay_ms: float = Field(20.0, ge=0)
    min_samples: int = Field(20, ge=1, description="observations needed before the percentile is trusted")
    max_extra: int = Field(1, ge=1, le=3, description="extra attempts a request may hedge with")
    budget_ratio: float = Field(0.1, ge=0, le=1, description="hedges allowed, as a fraction of the alias's requests")
    budget_min_per_s: float = Field(0.5, ge=0, description="hedges always allowed per second (low traffic)")
    streaming: bool = True
    with_tools: bool = Field(False, description="hedge requests that carry tools (their calls may have effects)")
    max_tokens: int | None = Field(
        4096, ge=1, description="requests that may generate more tokens than this are not hedged (cost)"
    )


class DegradedConfig(_Strict):
    """A static answer served when every attempt failed (instead of an error)."""

    content: str = Field(min_length=1)
    finish_reason: Literal["stop", "length"] = "stop"


class RoutingDefaults(_Strict):
    strategy: Strategy = "weighted"
    timeouts: TimeoutsConfig = TimeoutsConfig()
    retry: RetryConfig = RetryConfig()
    breaker: BreakerConfig = BreakerConfig()
    hedge: HedgeConfig = HedgeConfig()


class FallbackConfig(_Strict):
    """Where a request goes when this alias's own deployments cannot answer it."""

    models: tuple[str, ...] = Field((), description="aliases tried, in order, after this alias's deployments")
    on_context_overflow: tuple[str, ...] = Field((), description="longer-context aliases for prompts too long")
    on_content_filter: tuple[str, ...] = Field((), description="aliases tried when an upstream filters the request")
    degraded: DegradedConfig | None = None

    @model_validator(mode="after")
    def _no_dupes(self) -> FallbackConfig:
        problems: list[tuple[Loc, str]] = []
        for name in ("models", "on_context_overflow", "on_content_filter"):
            seq = getattr(self, name)
            problems += [((name, i), f"{name} lists the alias {alias!r} twice")
                         for i, alias in enumerate(seq) if alias in seq[:i]]
        raise_problems("FallbackConfig", problems, None)
        return self
