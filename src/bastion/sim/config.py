"""The simulator's configuration: a YAML file (or the defaults) validated into these models.

``SimConfig`` is the whole file; ``Deployment`` is the effective, flattened setting of one profile
(the defaults with that profile's overrides applied), which is what request handlers read.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

DEFAULT_PROFILE = "default"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OutputTokens(_Model):
    """Generated answer length in tokens, drawn uniformly in [min, max] when not forced."""

    min: int = Field(8, ge=0)
    max: int = Field(48, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> OutputTokens:
        if self.max < self.min:
            raise ValueError("output_tokens.max must be >= output_tokens.min")
        return self


class Latency(_Model):
    """Delay before a response starts (non-stream: before the body; stream: time to first token).

    With probability ``slow_rate`` a request's sampled delay is multiplied by ``slow_factor`` (a heavy
    tail on top of the distribution; drawn from its own per-profile RNG).
    """

    distribution: Literal["fixed", "uniform", "lognormal"] = "fixed"
    median_ms: float = Field(0.0, ge=0)
    p99_ms: float = Field(0.0, ge=0)
    slow_rate: float = Field(0.0, ge=0, le=1)
    slow_factor: float = Field(10.0, ge=1)

    def sample_ms(self, rng: random.Random) -> float:
        m = self.median_ms
        if m <= 0 and self.p99_ms <= 0:
            return 0.0
        p = max(self.p99_ms, m)
        if self.distribution == "fixed" or p == m:
            return m
        if self.distribution == "uniform":
            # uniform on [a, b] with median m and 99th percentile p: b - a = (p - m) / 0.49
            width = (p - m) / 0.49
            return max(0.0, m - width / 2 + rng.random() * width)
        if m <= 0:
            m = 0.01
        sigma = (math.log(p) - math.log(m)) / 2.3263478740408408  # z(0.99)
        return rng.lognormvariate(math.log(m), sigma)


class Faults(_Model):
    """Probabilities (0..1) of each injected fault, checked in this order with one draw per request."""

    rate_429: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0)
    rate_500: float = Field(0.0, ge=0, le=1)
    rate_503: float = Field(0.0, ge=0, le=1)
    rate_timeout: float = Field(0.0, ge=0, le=1)
    hang_s: float = Field(300.0, ge=0)
    rate_drop: float = Field(0.0, ge=0, le=1)
    rate_truncate: float = Field(0.0, ge=0, le=1)
    rate_malformed: float = Field(0.0, ge=0, le=1)
    rate_content_filter: float = Field(0.0, ge=0, le=1)

    @model_validator(mode="after")
    def _sum_at_most_one(self) -> Faults:
        if sum(r for _, r in self.rates()) > 1.0 + 1e-9:
            raise ValueError("the fault rates must add up to at most 1")
        return self

    def rates(self) -> list[tuple[str, float]]:
        return [
            ("429", self.rate_429),
            ("500", self.rate_500),
            ("503", self.rate_503),
            ("timeout", self.rate_timeout),
            ("drop", self.rate_drop),
            ("truncate", self.rate_truncate),
            ("malformed", self.rate_malformed),
            ("content_filter", self.rate_content_filter),
        ]


class Profile(_Model):
    """A named upstream "deployment" served under ``/p/{name}/``; unset fields inherit the defaults.

    ``faults`` and ``latency`` are merged field by field over the defaults. ``context_window``: None
    inherits the default, 0 means unlimited.
    """

    latency: dict[str, Any] | None = None
    tokens_per_second: float | None = Field(None, ge=0)
    faults: dict[str, Any] | None = None
    model_version: str | None = None
    system_fingerprint: str | None = None
    output_tokens: dict[str, Any] | None = None
    context_window: int | None = Field(None, ge=0)


class SimConfig(_Model):
    seed: int = 42
    model_version: str = "2026-11-01"
    system_fingerprint: str = "fp_sim_0001"
    models: list[str] = Field(default_factory=lambda: ["sim-small", "sim-large", "sim-embed"])
    output_tokens: OutputTokens = Field(default_factory=OutputTokens)
    latency: Latency = Field(default_factory=Latency)
    tokens_per_second: float = Field(0.0, ge=0, description="0 = as fast as possible")
    faults: Faults = Field(default_factory=Faults)
    embedding_dimensions: int = Field(384, ge=1, le=8192)
    context_window: int | None = Field(None, ge=0, description="prompt + max_tokens limit; None/0 = unlimited")
    profiles: dict[str, Profile] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _profiles_resolve(self) -> SimConfig:
        for name in self.profiles:
            self.deployment(name)  # raises a ValueError naming the bad field
        return self

    def deployment(self, profile: str = DEFAULT_PROFILE) -> Deployment:
        """The effective settings for ``profile`` (unknown names get the defaults)."""
        p = self.profiles.get(profile)
        if p is None:
            return Deployment(
                profile, self.seed, self.model_version, self.system_fingerprint, self.output_tokens,
                self.latency, self.tokens_per_second, self.faults, self.context_window or None,
            )
        return Deployment(
            profile,
            self.seed,
            self.model_version if p.model_version is None else p.model_version,
            self.system_fingerprint if p.system_fingerprint is None else p.system_fingerprint,
            _overlay(self.output_tokens, p.output_tokens),
            _overlay(self.latency, p.latency),
            self.tokens_per_second if p.tokens_per_second is None else p.tokens_per_second,
            _overlay(self.faults, p.faults),
            (self.context_window if p.context_window is None else p.context_window) or None,
        )

    def merged(self, patch: dict[str, Any]) -> SimConfig:
        """A new config with ``patch`` deep-merged in (``{"profile": name, ...}`` targets a profile)."""
        patch = dict(patch)
        profile = patch.pop("profile", None)
        data = self.model_dump()
        if profile is None or profile == DEFAULT_PROFILE:
            _deep_merge(data, patch)
        else:
            target = data["profiles"].setdefault(str(profile), {})
            _deep_merge(target, patch)
        return SimConfig.model_validate(data)


@dataclass(frozen=True, slots=True)
class Deployment:
    profile: str
    seed: int
    model_version: str
    system_fingerprint: str
    output_tokens: OutputTokens
    latency: Latency
    tokens_per_second: float
    faults: Faults
    context_window: int | None  # None = unlimited

    def reported_model(self, requested: str) -> str:
        return f"{requested}-{self.model_version}" if self.model_version else requested


def _overlay(base: BaseModel, override: dict[str, Any] | None) -> Any:
    if not override:
        return base
    data = base.model_dump()
    data.update(override)
    return type(base).model_validate(data)


def _deep_merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None and key in target and isinstance(target[key], dict):
            target.pop(key)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_merge(target[key], value)
        else:
            target[key] = value


def load_config(path: str | Path | None = None, **overrides: Any) -> SimConfig:
    """Read a YAML config file (or use the defaults) and apply non-None keyword overrides."""
    data: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        if loaded is not None:
            if not isinstance(loaded, dict):
                raise ValueError(f"{path}: the simulator config must be a mapping")
            data = loaded
    data.update({k: v for k, v in overrides.items() if v is not None})
    return SimConfig.model_validate(data)
