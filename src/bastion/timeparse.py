"""Relative and absolute times as users type them: ``30m``, ``2h``, ``7d`` or an ISO time."""

from __future__ import annotations

import re
import time
from datetime import datetime

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str) -> float:
    """Epoch seconds for ``value``; a duration means that long ago. Raises ValueError with a hint."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if m:
        return time.time() - float(m.group(1)) * _UNITS[m.group(2)]
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        raise ValueError(f"give a duration like 30m, 2h, 7d or an ISO time, not {value!r}") from None
