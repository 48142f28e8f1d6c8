"""Make any request record storable: what cannot be encoded is replaced by a marker, and the row flagged.

A record is built from what clients and upstreams sent, so it can hold what no encoder takes: JSON nested
past orjson's 254 levels, lone surrogates in text, integers past 64 bits, objects that are not JSON at all.
The log must never lose a row over that, nor stop. ``reduce_record`` keeps every column that encodes on its
own, replaces each one that does not with ``{"unstorable": reason}`` (text columns: a cleaned string),
and adds the flag ``log_reduced`` so that a reader knows the row is not whole.
"""

from __future__ import annotations

from typing import Any

import orjson

from .schema import JSON_COLUMNS, REQUEST_COLUMNS

REDUCED_FLAG = "log_reduced"


def _clean_text(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return text.encode("utf-8", "replace").decode("utf-8")


def _json_ok(value: Any) -> str | None:
    """None if ``value`` encodes as JSON, else why not."""
    try:
        orjson.dumps(value)
    except (TypeError, ValueError, OverflowError, RecursionError) as e:
        return f"{type(e).__name__}: {e}"[:200]
    return None


def reduce_record(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """A copy of ``record`` in which every value encodes, flagged ``log_reduced`` (with the reason)."""
    out: dict[str, Any] = {}
    for col in REQUEST_COLUMNS:
        value = record.get(col)
        if value is None:
            out[col] = None
        elif col in JSON_COLUMNS:
            why = _json_ok(value)
            out[col] = value if why is None else {"unstorable": why}
        elif isinstance(value, bool | int | float):
            out[col] = value if not isinstance(value, int) or -(1 << 63) <= value < (1 << 63) else str(value)
        else:
            out[col] = _clean_text(value)
    flags = out.get("flags")
    flags = list(flags) if isinstance(flags, list) else []
    if REDUCED_FLAG not in flags:
        flags.append(REDUCED_FLAG)
    out["flags"] = flags
    cost = out.get("cost")
    note = {"log_reduced": reason[:200]}
    out["cost"] = {**cost, **note} if isinstance(cost, dict) else note if cost is None else cost
    return out


def minimal_record(record: dict[str, Any], reason: str) -> dict[str, Any]:
    """The last resort: the row's identity, status and error as plain values, nothing else."""
    keep = ("id", "received_at", "done_at", "status", "endpoint", "dialect")
    out: dict[str, Any] = {}
    for col in keep:
        v = record.get(col)
        out[col] = v if isinstance(v, int | float) and not isinstance(v, bool) else (
            None if v is None else _clean_text(v)[:200])
    out["id"] = out.get("id") or "req_unknown"
    out["flags"] = [REDUCED_FLAG]
    out["error_message"] = f"the record could not be stored whole: {reason}"[:500]
    return out
