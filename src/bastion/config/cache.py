"""Response cache settings: globally under ``cache:``, and per alias under ``models.<alias>.cache``."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SemanticCacheConfig(_Strict):
    enabled: bool = False
    threshold: float | None = Field(None, gt=0, le=1, description="cosine similarity to accept; default: tuned")


class AliasCacheConfig(_Strict):
    enabled: bool | None = Field(None, description="default: cache.enabled")
    ttl_s: float | None = Field(None, gt=0, description="default: cache.ttl_s")
    semantic: SemanticCacheConfig = SemanticCacheConfig()
    only_deterministic: bool | None = Field(
        None, description="store only temperature-0 or seeded requests (default: cache.only_deterministic)"
    )


class CacheConfig(_Strict):
    enabled: bool = Field(False, description="cache answers of every alias (each alias can override)")
    url: str = Field("memory://", description="memory:// (in-process LRU); Redis comes with replicas")
    ttl_s: float = Field(3600.0, gt=0)
    max_ttl_s: float = Field(86_400.0 * 30, gt=0, description="largest TTL a client may ask for")
    max_entries: int = Field(50_000, ge=1)
    max_bytes: int = Field(256 * 1024 * 1024, ge=1024, description="total size of stored answers")
    only_deterministic: bool = Field(True, description="store only temperature-0 or seeded requests")
    stale_if_error_s: float = Field(
        0.0, ge=0, description="serve an entry expired less than this long ago when every upstream fails"
    )
