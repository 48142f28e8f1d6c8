"""A bounded LRU of the input guard's per-text findings, keyed by a hash of the text, so a conversation's
earlier turns (sent again with every new turn) and repeated system or RAG texts are not scanned twice.

What is cached is what does not depend on the policy: the rules' reasons and score and the classifier's
probability for one text. The policy (action, threshold) is applied to them afresh on every request, so a
cached text gets exactly the verdict a fresh scan would give."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

DEFAULT_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class TextScan:
    """The policy-free result of scanning one text: rule reasons (without ``where``), their best score,
    and the classifier's probability (None when the classifier did not run or the text is blank)."""

    reasons: tuple[dict[str, Any], ...]
    score: float
    probability: float | None


class ScanCache:
    """At most ``max_entries`` scans (a 16-byte digest and a few small dicts each); thread-safe, because a
    long input is checked in a worker thread."""

    def __init__(self, max_entries: int = DEFAULT_ENTRIES) -> None:
        self.max_entries = max_entries
        self._d: OrderedDict[bytes, TextScan] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(text: str, classifier: bool) -> bytes:
        h = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16,
                            person=b"clf" if classifier else b"rules")
        return h.digest()

    def get(self, key: bytes) -> TextScan | None:
        with self._lock:
            hit = self._d.get(key)
            if hit is None:
                self.misses += 1
                return None
            self._d.move_to_end(key)
            self.hits += 1
            return hit

    def put(self, key: bytes, scan: TextScan) -> None:
        with self._lock:
            self._d[key] = scan
            self._d.move_to_end(key)
            while len(self._d) > self.max_entries:
                self._d.popitem(last=False)

    def __len__(self) -> int:
        return len(self._d)
