"""The SQLite schema of the request log and the key table."""

from __future__ import annotations

SCHEMA_VERSION = 4

# Columns of the request log, in insert order. JSON columns hold orjson-encoded text.
REQUEST_COLUMNS: tuple[str, ...] = (
    "id",
    "received_at",
    "first_byte_at",
    "done_at",
    "tenant",
    "user",
    "session",
    "key_id",
    "endpoint",
    "dialect",
    "alias",
    "deployment",
    "provider",
    "upstream_model",
    "served_model",
    "system_fingerprint",
    "stream",
    "params",
    "request",
    "response",
    "status",
    "error_code",
    "error_message",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "ttft_ms",
    "latency_ms",
    "attempts",
    "cost_nusd",
    "cost",
    "prompt_version",
    "flags",
    "cache_status",
    "cache",
    "saved_nusd",
    "guards",
)

# Columns added after version 1, with their SQL types: added to older databases on open.
ADDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cost_nusd", "INTEGER"),  # cost in nano-USD (1e-9 USD), exact integer so that SUM() is exact
    ("cost", "TEXT"),  # JSON: {"usd": "0.000123", "price_version": ..., per-dimension breakdown}
    ("prompt_version", "TEXT"),
    ("flags", "TEXT"),  # JSON list: soft budgets exceeded, degraded, ...
    ("cache_status", "TEXT"),  # hit | semantic-hit | stale | miss | bypass
    ("cache", "TEXT"),  # JSON: the matched entry (its request id, age, similarity) and what the hit saved
    ("saved_nusd", "INTEGER"),  # what a cache hit saved: the original call's cost, nano-USD
    ("guards", "TEXT"),  # JSON list of guard verdicts: guard, score, threshold, action, reasons with spans
)

JSON_COLUMNS = frozenset({"params", "request", "response", "attempts", "cost", "flags", "cache", "guards"})

DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id TEXT PRIMARY KEY,
    received_at REAL NOT NULL,
    first_byte_at REAL,
    done_at REAL,
    tenant TEXT,
    user TEXT,
    session TEXT,
    key_id TEXT,
    endpoint TEXT NOT NULL,
    dialect TEXT NOT NULL,
    alias TEXT,
    deployment TEXT,
    provider TEXT,
    upstream_model TEXT,
    served_model TEXT,
    system_fingerprint TEXT,
    stream INTEGER NOT NULL DEFAULT 0,
    params TEXT,
    request TEXT,
    response TEXT,
    status INTEGER NOT NULL,
    error_code TEXT,
    error_message TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    total_tokens INTEGER,
    ttft_ms REAL,
    latency_ms REAL,
    attempts TEXT,
    cost_nusd INTEGER,
    cost TEXT,
    prompt_version TEXT,
    flags TEXT,
    cache_status TEXT,
    cache TEXT,
    saved_nusd INTEGER,
    guards TEXT
);
CREATE INDEX IF NOT EXISTS requests_received ON requests (received_at);
CREATE INDEX IF NOT EXISTS requests_tenant ON requests (tenant, received_at);
CREATE INDEX IF NOT EXISTS requests_user ON requests (tenant, user, received_at);
CREATE INDEX IF NOT EXISTS requests_session ON requests (session);
CREATE TABLE IF NOT EXISTS alerts (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    subject TEXT NOT NULL,
    message TEXT NOT NULL,
    data TEXT,
    deliveries TEXT,
    delivered_at REAL
);
CREATE INDEX IF NOT EXISTS alerts_created ON alerts (created_at);
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    user TEXT,
    key_sha256 TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked_at REAL
);
"""

# Tool calls held for human approval (guards.tools.irreversible): one row per held call.
APPROVALS_DDL = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    request_id TEXT NOT NULL,
    tenant TEXT,
    user TEXT,
    alias TEXT,
    tool TEXT NOT NULL,
    call_id TEXT,
    arguments TEXT,
    reason TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'pending',
    decided_at REAL,
    decided_by TEXT,
    note TEXT
);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created_at);
"""
