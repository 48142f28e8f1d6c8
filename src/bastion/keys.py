"""Virtual keys: bound to a tenant (and optionally a user), stored only as sha256 hashes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any

from .config.model import BastionConfig
from .errors import AuthenticationFailed
from .store.sqlite import SQLiteStore

KEY_PREFIX = "bk-"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key_id: str
    name: str
    tenant: str
    user: str | None


ANONYMOUS = KeyInfo(key_id="anonymous", name="anonymous", tenant="default", user=None)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def create_key(store: SQLiteStore, *, name: str, tenant: str, user: str | None = None) -> tuple[str, dict[str, Any]]:
    """Create a key; returns the plaintext (shown once) and the stored record (without the plaintext)."""
    key = new_key()
    record = {
        "id": "key_" + uuid.uuid4().hex[:16],
        "name": name,
        "tenant": tenant,
        "user": user,
        "key_sha256": hash_key(key),
        "prefix": key[:10],
        "created_at": time.time(),
    }
    store.insert_key(record)
    return key, record


class KeyRing:
    """Resolves a presented key to its tenant/user. Static keys come from config; the rest from the store.

    Store look-ups run in a thread and are cached for ``ttl_s`` (so a revoke takes effect within it).
    """

    def __init__(self, config: BastionConfig, store: SQLiteStore, *, ttl_s: float = 5.0) -> None:
        self.require_key = config.server.require_key
        self.store = store
        self.ttl_s = ttl_s
        self._static: dict[str, KeyInfo] = {}
        for k in config.keys:
            digest = k.key_sha256
            if k.key_env:
                plain = os.environ.get(k.key_env)
                if not plain:
                    continue
                digest = hash_key(plain)
            assert digest is not None
            self._static[digest.lower()] = KeyInfo(f"static:{k.name}", k.name, k.tenant, k.user)
        self._cache: dict[str, tuple[float, KeyInfo | None]] = {}

    async def authenticate(self, presented: str | None) -> KeyInfo:
        if not presented:
            if not self.require_key:
                return ANONYMOUS
            raise AuthenticationFailed(
                "No API key given. Send your Bastion key as 'Authorization: Bearer <key>' or 'x-api-key: <key>' "
                "(create one with `bastion keys create --tenant NAME`)."
            )
        digest = hash_key(presented)
        info = self._static.get(digest)
        if info is not None:
            return info
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is None or hit[0] < now:
            row = await asyncio.to_thread(self.store.find_key, digest)
            found = None
            if row is not None and row["revoked_at"] is None:
                found = KeyInfo(row["id"], row["name"], row["tenant"], row["user"])
            if len(self._cache) > 100_000:
                self._cache.clear()
            self._cache[digest] = (now + self.ttl_s, found)
            hit = self._cache[digest]
        if hit[1] is None:
            if not self.require_key:
                return ANONYMOUS
            shown = presented[:6] + "…" if len(presented) > 8 else "…"
            raise AuthenticationFailed(
                f"Invalid API key ({shown}): it is unknown or revoked. Check the key, or create one with "
                "`bastion keys create --tenant NAME`."
            )
        return hit[1]
