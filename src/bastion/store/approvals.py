"""Tool calls held for approval: the rows behind ``GET /v1/approvals/{id}``, ``/admin/approvals`` and
``bastion approvals``. A held call is pending until a person approves or rejects it, exactly once."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

STATUSES = ("pending", "approved", "rejected")


def _row(row: sqlite3.Row) -> dict[str, Any]:
    out = dict(row)
    out["arguments"] = orjson.loads(out["arguments"]) if out.get("arguments") else None
    return out


class ApprovalsMixin:
    """Approval rows on the store's connection (``self._conn()``)."""

    def _conn(self) -> sqlite3.Connection:  # provided by the store
        raise NotImplementedError

    def insert_approvals(self, records: list[dict[str, Any]]) -> None:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(
                "INSERT INTO approvals (id, created_at, request_id, tenant, user, alias, tool, call_id, arguments, "
                "reason) VALUES (:id, :created_at, :request_id, :tenant, :user, :alias, :tool, :call_id, "
                ":arguments, :reason)",
                [{**r, "arguments": orjson.dumps(r.get("arguments")).decode()} for r in records])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def get_approval(self, approval_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM approvals WHERE id = ?", (approval_id,)).fetchone()
        return _row(row) if row else None

    def list_approvals(self, *, status: str | None = None, tenant: str | None = None,
                       limit: int = 100) -> list[dict[str, Any]]:
        where, args = ["1=1"], []
        if status is not None:
            where.append("status = ?")
            args.append(status)
        if tenant is not None:
            where.append("tenant = ?")
            args.append(tenant)
        rows = self._conn().execute(
            f"SELECT * FROM approvals WHERE {' AND '.join(where)} ORDER BY created_at DESC LIMIT ?",
            (*args, int(limit)))
        return [_row(r) for r in rows]

    def decide_approval(self, approval_id: str, decision: str, by: str | None, note: str | None = None) -> bool:
        """Approve or reject a pending call; False when it is unknown or already decided."""
        if decision not in ("approved", "rejected"):
            raise ValueError("decision must be approved or rejected")
        cur = self._conn().execute(
            "UPDATE approvals SET status = ?, decided_at = ?, decided_by = ?, note = ? "
            "WHERE id = ? AND status = 'pending'", (decision, time.time(), by, note, approval_id))
        return cur.rowcount == 1
