"""The configuration model: one YAML file (``bastion.yaml``) validated into these types."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .cache import AliasCacheConfig, CacheConfig
from .guards import GuardsConfig
from .metering import AlertsConfig, BudgetConfig, LimitConfig, PriceOverride
from .problems import Loc, raise_problems
from .reliability import (
    BreakerConfig,
    FallbackConfig,
    HedgeConfig,
    RetryConfig,
    RoutingDefaults,
    Strategy,
    TimeoutsConfig,
)

ProviderType = Literal["openai", "anthropic", "azure", "sim"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0, description="requests larger than this get a 413")
    require_key: bool = Field(True, description="reject requests without a valid virtual key")
    admin_key_env: str | None = Field(
        None, description="env var holding the bearer token of the /admin API (unset: the admin API is off)"
    )
    metrics_key_env: str | None = Field(
        None, description="env var holding a bearer token that GET /metrics requires (unset: /metrics is open)"
    )
    max_json_depth: int = Field(64, ge=2, le=250, description="deepest nesting of a request body (400 beyond)")
    max_json_elements: int = Field(
        250_000, ge=100, description="array items and object members in a request body, in all (400 beyond)"
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="a client must send its request line and headers within this (else 408, closed)"
    )
    body_timeout_s: float = Field(30.0, gt=0, description="a client must send its whole body within this (408)")


class StoreConfig(_Strict):
    url: str = "sqlite:///.bastion/bastion.db"
    flush_interval_ms: int = Field(200, ge=1, le=60_000, description="a crash loses at most this window")
    batch_size: int = Field(500, ge=1, le=100_000)
    queue_size: int = Field(20_000, ge=1, description="records held in memory before spilling to disk")
    spill_path: str | None = None
    log_bodies: bool = Field(True, description="store full request and response bodies")
    redact_keys: tuple[str, ...] = Field(
        (), description="JSON keys whose values are replaced by '[redacted]' in stored bodies"
    )
    commit_before_answer: bool = Field(
        False, description="send an answer's last byte only once its log record is committed (or spilled to "
        "disk): then even kill -9 loses no answered request's record; costs one group commit per request",
    )
    on_write_failure: Literal["refuse", "serve"] = Field(
        "refuse",
        description="when neither the store nor the spill file can be written: refuse new requests with a 503 "
        "so that every answered request keeps its record (refuse), or keep serving and count lost records (serve)",
    )

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if not v.startswith("sqlite:///"):
            raise ValueError("store.url must look like sqlite:///path/to/bastion.db (PostgreSQL comes later)")
        return v

    @property
    def sqlite_path(self) -> str:
        return self.url[len("sqlite:///") :]


class StateConfig(_Strict):
    url: str = "memory://"

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, v: str) -> str:
        if v != "memory://" and not v.startswith(("redis://", "rediss://")):
            raise ValueError("state.url must be memory:// (one process) or redis://host:port/db or "
                             "rediss://host:port/db (shared by replicas)")
        return v


class ProviderConfig(_Strict):
    type: ProviderType
    base_url: str | None = None
    api_key_env: str | None = Field(None, description="name of the environment variable holding the key")
    api_version: str | None = Field(None, description="Azure OpenAI api-version; Anthropic anthropic-version")
    headers: dict[str, str] = Field(default_factory=dict)
    connect_timeout_s: float = Field(10.0, gt=0)
    read_timeout_s: float = Field(600.0, gt=0, description="longest silence from the upstream")
    max_connections: int = Field(1000, ge=1)

    @model_validator(mode="after")
    def _needs(self) -> ProviderConfig:
        if self.type in ("azure", "sim") and not self.base_url:
            raise_problems("ProviderConfig", [(("base_url",), f"a provider of type {self.type!r} needs base_url")], None)
        if self.base_url and not self.base_url.startswith(("http://", "https://")):
            raise_problems("ProviderConfig", [(("base_url",), "base_url must start with http:// or https://")],
                           self.base_url)
        return self


class DeploymentConfig(_Strict):
    provider: str
    model: str = Field(description="the exact upstream model id (or Azure deployment name) this alias is pinned to")
    name: str | None = Field(None, description="defaults to provider/model")
    weight: float = Field(1.0, gt=0)
    rpm: int | None = Field(None, ge=1, description="the provider's requests-per-minute limit for this deployment")
    tpm: int | None = Field(None, ge=1, description="the provider's tokens-per-minute limit for this deployment")
    price: PriceOverride | None = Field(None, description="USD per million tokens; default: the price table")

    @property
    def id(self) -> str:
        return self.name or f"{self.provider}/{self.model}"


class ModelConfig(_Strict):
    kind: Literal["chat", "embedding"] = "chat"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    description: str | None = None
    strategy: Strategy | None = Field(None, description="load balancing; default: routing.strategy")
    timeouts: TimeoutsConfig | None = None
    retry: RetryConfig | None = None
    breaker: BreakerConfig | None = None
    hedge: HedgeConfig | None = None
    fallback: FallbackConfig = FallbackConfig()
    cache: AliasCacheConfig = AliasCacheConfig()
    guards: GuardsConfig | None = Field(None, description="default: the top-level guards")


class PromptsConfig(_Strict):
    """Prompts as files in the user's repository (docs/prompts.md)."""

    dir: str = Field("prompts", description="folder of prompt YAML files, relative to the working directory")
    lock: str | None = Field(None, description="the lock file (versions and labels); default <dir>/prompts.lock.yaml")
    reload_interval_s: float = Field(2.0, ge=0, description="how often the gateway checks the files for changes")


class TenantConfig(_Strict):
    description: str | None = None
    guards: GuardsConfig | None = Field(None, description="laid over the alias's guards for this tenant")


class StaticKeyConfig(_Strict):
    """A key defined in config rather than created with ``bastion keys create``."""

    name: str
    tenant: str
    user: str | None = None
    key_env: str | None = Field(None, description="environment variable holding the plaintext key")
    key_sha256: str | None = Field(None, description="hex sha256 of the key")

    @model_validator(mode="after")
    def _one_source(self) -> StaticKeyConfig:
        if (self.key_env is None) == (self.key_sha256 is None):
            raise ValueError("give exactly one of key_env or key_sha256")
        return self


class BastionConfig(_Strict):
    server: ServerConfig = ServerConfig()
    store: StoreConfig = StoreConfig()
    state: StateConfig = StateConfig()
    routing: RoutingDefaults = RoutingDefaults()
    cache: CacheConfig = CacheConfig()
    guards: GuardsConfig = GuardsConfig()
    prompts: PromptsConfig = PromptsConfig()
    providers: dict[str, ProviderConfig] = Field(default_factory=dict)
    models: dict[str, ModelConfig] = Field(default_factory=dict)
    tenants: dict[str, TenantConfig] = Field(default_factory=lambda: {"default": TenantConfig()})
    keys: tuple[StaticKeyConfig, ...] = ()
    limits: tuple[LimitConfig, ...] = ()
    budgets: tuple[BudgetConfig, ...] = ()
    alerts: AlertsConfig = AlertsConfig()

    @model_validator(mode="after")
    def _references(self) -> BastionConfig:
        """Names that must refer to something defined elsewhere in the file; each problem at its own key."""
        problems: list[tuple[Loc, str]] = []
        models = ", ".join(sorted(self.models)) or "none defined"
        tenants = ", ".join(sorted(self.tenants)) or "none defined"
        for alias, m in self.models.items():
            seen: set[str] = set()
            for i, d in enumerate(m.deployments):
                if d.provider not in self.providers:
                    known = ", ".join(sorted(self.providers)) or "none defined"
                    problems.append((("models", alias, "deployments", i, "provider"),
                                     f"unknown provider {d.provider!r} (known: {known})"))
                if d.id in seen:
                    problems.append((("models", alias, "deployments", i),
                                     f"duplicate deployment {d.id!r}; give it a name"))
                seen.add(d.id)
            fb = m.fallback
            for field in ("models", "on_context_overflow", "on_content_filter"):
                for j, target in enumerate(getattr(fb, field)):
                    at: Loc = ("models", alias, "fallback", field, j)
                    other = self.models.get(target)
                    if target == alias:
                        problems.append((at, "an alias cannot fall back to itself"))
                    elif other is None:
                        problems.append((at, f"unknown model alias {target!r} (known: {models})"))
                    elif other.kind != m.kind:
                        problems.append((at, f"{target!r} is a {other.kind} model, {alias!r} is {m.kind}"))
        guards: list[tuple[Loc, GuardsConfig | None]] = [(("guards",), self.guards)]
        guards += [(("models", a, "guards"), m.guards) for a, m in self.models.items()]
        guards += [(("tenants", t, "guards"), c.guards) for t, c in self.tenants.items()]
        for loc, g in guards:
            for j, target in enumerate(g.refusal.fallback if g is not None else ()):
                if target not in self.models:
                    problems.append(((*loc, "refusal", "fallback", j), f"unknown model alias {target!r} (known: {models})"))
        for i, k in enumerate(self.keys):
            if k.tenant not in self.tenants:
                problems.append((("keys", i, "tenant"), f"unknown tenant {k.tenant!r} (known: {tenants})"))
        for section, rules in (("limits", self.limits), ("budgets", self.budgets)):
            for i, r in enumerate(rules):
                for key in ("tenant", "match"):
                    t = getattr(r, key)
                    if t is not None and (key == "tenant" or r.scope == "tenant") and t not in self.tenants:
                        problems.append(((section, i, key), f"unknown tenant {t!r} (known: {tenants})"))
        first: dict[str, int] = {}
        for i, b in enumerate(self.budgets):
            if b.name in first:
                problems.append((("budgets", i, "name"), f"the name {b.name!r} is used twice (first: budgets.{first[b.name]})"))
            first.setdefault(b.name, i)
        raise_problems("BastionConfig", problems, None)
        return self
