"""Cost controls: quotas and rate limits, budgets, spend alerts, and per-deployment price overrides."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .problems import Loc, raise_problems

Scope = Literal["tenant", "user", "key"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _usd(v: object) -> Decimal:
    # A YAML float becomes its shortest repr (10.5 -> "10.5"), i.e. exactly what was written.
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ValueError(f"not an amount of money: {v!r}") from None
    if not d.is_finite() or d < 0:
        raise ValueError("an amount of money must be a finite number >= 0")
    return d


class _Scoped(_Strict):
    scope: Scope
    match: str | None = Field(None, description="one tenant / user / key (id or name); omitted: each one separately")
    tenant: str | None = Field(None, description="only requests of this tenant (e.g. each user of tenant acme)")


class LimitConfig(_Scoped):
    """A quota: requests and tokens per fixed window, and requests in flight, per tenant/user/key."""

    rpm: int | None = Field(None, ge=1, description="requests per window")
    tpm: int | None = Field(None, ge=1, description="tokens (prompt estimate + max_tokens, settled) per window")
    concurrent: int | None = Field(None, ge=1, description="requests in flight at once")
    window_s: int = Field(60, ge=1, le=86_400, description="the fixed window of rpm/tpm (60: per minute)")

    @model_validator(mode="after")
    def _something(self) -> LimitConfig:
        if self.rpm is None and self.tpm is None and self.concurrent is None:
            raise ValueError("a limit needs at least one of rpm, tpm, concurrent")
        return self


class BudgetConfig(_Scoped):
    name: str = Field(min_length=1)
    limit_usd: Decimal
    period: Literal["day", "month", "rolling"] = "month"
    window_s: int | None = Field(None, ge=60, description="the rolling window (period: rolling)")
    mode: Literal["hard", "soft"] = "hard"
    alert_at: tuple[float, ...] = Field((0.5, 0.8, 1.0), description="fractions of the limit that raise an alert")

    _money = field_validator("limit_usd", mode="before")(classmethod(lambda cls, v: _usd(v)))

    @model_validator(mode="after")
    def _window(self) -> BudgetConfig:
        problems: list[tuple[Loc, str]] = []
        if (self.period == "rolling") != (self.window_s is not None):
            key = "window_s" if self.window_s is not None else "period"
            problems.append(((key,), "window_s is required with period: rolling, and only then"))
        problems += [(("alert_at", i), "alert_at values are fractions of the limit, in (0, 10]")
                     for i, a in enumerate(self.alert_at) if not 0 < a <= 10]
        raise_problems("BudgetConfig", problems, None)
        return self


class WebhookConfig(_Strict):
    url: str
    secret_env: str | None = Field(None, description="env var with an HMAC-SHA256 secret for x-bastion-signature")
    timeout_s: float = Field(5.0, gt=0)
    max_attempts: int = Field(6, ge=1, le=20)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError("a webhook url must start with http:// or https://")
        return v


class SpendRateConfig(_Scoped):
    usd_per_hour: Decimal

    _money = field_validator("usd_per_hour", mode="before")(classmethod(lambda cls, v: _usd(v)))


class OutlierConfig(_Strict):
    enabled: bool = True
    window_s: int = Field(3600, ge=60)
    factor: float = Field(5.0, gt=1, description="a user spending more than factor × the tenant's median user")
    min_users: int = Field(5, ge=2, description="users with spend in the window needed to judge")
    min_usd: Decimal = Field(Decimal("1"), description="ignore users below this spend in the window")
    check_every_s: float = Field(30.0, gt=0)

    _money = field_validator("min_usd", mode="before")(classmethod(lambda cls, v: _usd(v)))


class AlertsConfig(_Strict):
    webhooks: tuple[WebhookConfig, ...] = ()
    spend_rate: tuple[SpendRateConfig, ...] = ()
    outliers: OutlierConfig = OutlierConfig()


class PriceOverride(_Strict):
    """USD per million tokens for a deployment (self-hosted models, negotiated prices)."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None

    _money = field_validator("input", "output", "cached_input", "cache_write", "reasoning", mode="before")(
        classmethod(lambda cls, v: None if v is None else _usd(v))
    )
