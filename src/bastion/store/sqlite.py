"""SQLite (WAL) backend of the request log and key table.

All methods are blocking; the gateway calls them only from the log writer thread or through
``asyncio.to_thread``. Each thread gets its own connection.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import orjson

from .approvals import ApprovalsMixin
from .schema import ADDED_COLUMNS, APPROVALS_DDL, DDL, JSON_COLUMNS, REQUEST_COLUMNS, SCHEMA_VERSION

_INSERT = (
    f"INSERT OR REPLACE INTO requests ({', '.join(REQUEST_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in REQUEST_COLUMNS)})"
)

FILTERABLE = ("tenant", "user", "session", "alias", "deployment", "status", "endpoint", "key_id")

# Dimensions ``bastion costs --by`` groups on, and their SQL.
COST_DIMENSIONS = {
    "tenant": "tenant", "user": "user", "session": "session", "key": "key_id", "model": "alias",
    "deployment": "deployment", "prompt_version": "prompt_version",
    "day": "strftime('%Y-%m-%d', received_at, 'unixepoch')",
}


def _encode(col: str, value: Any) -> Any:
    if col in JSON_COLUMNS and value is not None:
        return orjson.dumps(value).decode()
    if isinstance(value, bool):
        return int(value)
    return value


def _where(
    filters: dict[str, Any] | None, since: float | None, until: float | None
) -> tuple[list[str], list[Any]]:
    """SQL conditions and arguments for equality filters (FILTERABLE columns) and a received_at range."""
    where: list[str] = []
    args: list[Any] = []
    for k, v in (filters or {}).items():
        if v is None:
            continue
        if k not in FILTERABLE:
            raise ValueError(f"cannot filter on {k!r}; filterable: {', '.join(FILTERABLE)}")
        where.append(f"{k} = ?")
        args.append(v)
    if since is not None:
        where.append("received_at >= ?")
        args.append(since)
    if until is not None:
        where.append("received_at < ?")
        args.append(until)
    return where, args


class SQLiteStore(ApprovalsMixin):
    def __init__(self, path: str) -> None:
        self.path = path
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        conn = self._conn()
        conn.executescript(DDL)
        conn.executescript(APPROVALS_DDL)
        have = {row[1] for row in conn.execute("PRAGMA table_info(requests)")}
        for name, sql_type in ADDED_COLUMNS:
            if name not in have:  # a log written by an older version: add the column, keep the rows
                conn.execute(f"ALTER TABLE requests ADD COLUMN {name} {sql_type}")
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
        )
        conn.commit()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # ---- request log -------------------------------------------------------------------------
    @staticmethod
    def encode_request(record: dict[str, Any]) -> tuple[Any, ...]:
        """One request record as a row (raises if a value cannot be encoded: see LogWriter's reduce)."""
        return tuple(_encode(c, record.get(c)) for c in REQUEST_COLUMNS)

    def write_requests(self, records: Sequence[dict[str, Any]]) -> None:
        if records:
            self.write_rows([self.encode_request(r) for r in records])

    def write_rows(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """Insert encoded rows in one transaction."""
        if not rows:
            return
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            self._abandon(conn)
            raise

    def _abandon(self, conn: sqlite3.Connection) -> None:
        """After a failed write (disk full, I/O error): roll back, and if even that fails, drop the
        connection so that the next write starts on a fresh one instead of inside a dead transaction."""
        try:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
        except sqlite3.Error:
            try:
                conn.close()
            except sqlite3.Error:
                pass
            self._local.conn = None

    @staticmethod
    def _row(row: sqlite3.Row) -> dict[str, Any]:
        out = dict(row)
        for c in JSON_COLUMNS:
            if out.get(c) is not None:
                out[c] = orjson.loads(out[c])
        out["stream"] = bool(out.get("stream"))
        return out

    def get_request(self, request_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM requests WHERE id = ?", (request_id,)).fetchone()
        return self._row(row) if row else None

    def query_requests(
        self,
        *,
        filters: dict[str, Any] | None = None,
        since: float | None = None,
        until: float | None = None,
        errors_only: bool = False,
        limit: int = 100,
        newest_first: bool = True,
        guard: str | None = None,
        flag: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest (or oldest) rows matching the filters; ``guard``: rows where that guard did something
        (a verdict whose action is not ``pass``); ``flag``: rows carrying that flag."""
        where, args = _where(filters, since, until)
        if errors_only:
            where.append("status >= 400")
        if guard is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(requests.guards) WHERE json_extract(value, '$.guard') = ? "
                         "AND coalesce(json_extract(value, '$.action'), '') <> 'pass')")
            args.append(guard)
        if flag is not None:
            where.append("EXISTS (SELECT 1 FROM json_each(requests.flags) WHERE value = ?)")
            args.append(flag)
        sql = "SELECT * FROM requests"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY received_at {'DESC' if newest_first else 'ASC'} LIMIT ?"
        args.append(int(limit))
        return [self._row(r) for r in self._conn().execute(sql, args)]

    def count_requests(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM requests").fetchone()[0])

    # ---- costs -------------------------------------------------------------------------------
    def cost_rows(
        self, *, by: Sequence[str], filters: dict[str, Any] | None = None, since: float | None = None,
        until: float | None = None,
    ) -> list[dict[str, Any]]:
        """Spend grouped by ``by`` (columns of COST_DIMENSIONS): requests, tokens and exact nano-USD sums."""
        dims = []
        for d in by:
            if d not in COST_DIMENSIONS:
                raise ValueError(f"cannot group costs by {d!r}; choose from: {', '.join(COST_DIMENSIONS)}")
            dims.append(COST_DIMENSIONS[d])
        where, args = _where(filters, since, until)
        where = where or ["1=1"]
        select = ", ".join(f"{expr} AS {name}" for name, expr in zip(by, dims, strict=True))
        sql = (
            f"SELECT {select + ', ' if select else ''}COUNT(*) AS requests, "
            "SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END) AS errors, "
            "COALESCE(SUM(prompt_tokens), 0) AS prompt_tokens, COALESCE(SUM(completion_tokens), 0) AS completion_tokens, "
            "COALESCE(SUM(cost_nusd), 0) AS cost_nusd, "
            "SUM(CASE WHEN cache_status IN ('hit', 'semantic-hit', 'stale') THEN 1 ELSE 0 END) AS cache_hits, "
            "COALESCE(SUM(saved_nusd), 0) AS saved_nusd "
            f"FROM requests WHERE {' AND '.join(where)}"
        )
        if dims:
            sql += f" GROUP BY {', '.join(dims)} ORDER BY cost_nusd DESC"
        return [dict(r) for r in self._conn().execute(sql, args)]

    def spend_since(self, since: float, *, per_second: bool = False) -> list[dict[str, Any]]:
        """Spend (``cost_nusd``, exact) and tokens (``tokens``) of the requests received since ``since``, per
        tenant, user and key; ``per_second`` also splits them by the second they arrived (``t``, in order).
        What a restarted gateway rebuilds its budget and quota counters from."""
        t = ", CAST(received_at AS INTEGER) AS t" if per_second else ""
        sql = (f"SELECT tenant, user, key_id{t}, COALESCE(SUM(cost_nusd), 0) AS cost_nusd, "
               "COALESCE(SUM(total_tokens), 0) AS tokens FROM requests WHERE received_at >= ? "
               f"GROUP BY tenant, user, key_id{', t ORDER BY t' if per_second else ''}")
        return [dict(r) for r in self._conn().execute(sql, (since,))]

    # ---- alerts ------------------------------------------------------------------------------
    def insert_alert(self, alert: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT OR IGNORE INTO alerts (id, created_at, kind, severity, subject, message, data, deliveries) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (alert["id"], alert["created_at"], alert["kind"], alert["severity"], alert["subject"],
             alert["message"], orjson.dumps(alert.get("data")).decode(), "[]"),
        )

    def record_delivery(self, alert_id: str, deliveries: list[dict[str, Any]], delivered_at: float | None) -> None:
        self._conn().execute(
            "UPDATE alerts SET deliveries = ?, delivered_at = ? WHERE id = ?",
            (orjson.dumps(deliveries).decode(), delivered_at, alert_id),
        )

    def list_alerts(self, *, since: float | None = None, kind: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        where: list[str] = ["1=1"]
        args: list[Any] = []
        if since is not None:
            where.append("created_at >= ?")
            args.append(since)
        if kind is not None:
            where.append("kind = ?")
            args.append(kind)
        rows = self._conn().execute(
            f"SELECT * FROM alerts WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?", (*args, int(limit))
        )
        out = []
        for r in rows:
            d = dict(r)
            d["data"] = orjson.loads(d["data"]) if d["data"] else None
            d["deliveries"] = orjson.loads(d["deliveries"]) if d["deliveries"] else []
            out.append(d)
        return out

    # ---- keys --------------------------------------------------------------------------------
    def insert_key(self, record: dict[str, Any]) -> None:
        self._conn().execute(
            "INSERT INTO api_keys (id, name, tenant, user, key_sha256, prefix, created_at, revoked_at) "
            "VALUES (:id, :name, :tenant, :user, :key_sha256, :prefix, :created_at, NULL)",
            record,
        )

    def find_key(self, key_sha256: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM api_keys WHERE key_sha256 = ?", (key_sha256,)).fetchone()
        return dict(row) if row else None

    def list_keys(self, include_revoked: bool = False) -> list[dict[str, Any]]:
        sql = "SELECT * FROM api_keys"
        if not include_revoked:
            sql += " WHERE revoked_at IS NULL"
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY created_at")]

    def revoke_key(self, key_id_or_name: str) -> int:
        cur = self._conn().execute(
            "UPDATE api_keys SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
            (time.time(), key_id_or_name, key_id_or_name),
        )
        return cur.rowcount


def open_store(url: str) -> SQLiteStore:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url[len("sqlite:///") :])
    raise ValueError(f"unsupported store url {url!r}; use sqlite:///path.db")


def iter_chunks(items: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]
