"""The batched request-log writer: off the hot path, never drops, never blocks the event loop.

Records are appended to an in-memory queue by the request handlers. A writer thread commits them in
batches every ``flush_interval`` (or as soon as ``batch_size`` are waiting). When the queue is full, or a
write fails, records spill to an append-only JSON-lines file that the writer ingests later (also at the
next start, after a crash). A crash therefore loses at most the records of the last flush window; a
graceful shutdown (``close``) commits everything.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .sqlite import SQLiteStore

log = logging.getLogger("bastion.store")


class LogWriter:
    def __init__(
        self,
        store: SQLiteStore,
        *,
        flush_interval_s: float = 0.2,
        batch_size: int = 500,
        queue_size: int = 20_000,
        spill_path: str | None = None,
        on_flush: Callable[[int, int], None] | None = None,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.spill_path = Path(spill_path or f"{store.path}.spill.jsonl")
        self._on_flush = on_flush
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._spill_lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None
        self.written = 0
        self.spilled = 0
        self.failures = 0

    # ---- producer side (event loop) ----------------------------------------------------------
    def submit(self, record: dict[str, Any]) -> None:
        with self._cond:
            if len(self._queue) < self.queue_size:
                self._queue.append(record)
                if len(self._queue) >= self.batch_size:
                    self._cond.notify()
                return
        self._spill([record])

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._ingest_spill()
        self._thread = threading.Thread(target=self._run, name="bastion-log-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit everything queued, then stop the thread."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._flush_all()
        self._ingest_spill()

    def flush(self) -> None:
        """Commit everything queued now (blocking; for tests and the CLI)."""
        self._flush_all()

    # ---- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._stop and len(self._queue) < self.batch_size:
                    self._cond.wait(self.flush_interval_s)
                stop = self._stop
            self._flush_all()
            if self.spill_path.exists() and len(self._queue) < self.batch_size:
                self._ingest_spill()
            if stop:
                return

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with self._cond:
            while self._queue and len(batch) < self.batch_size:
                batch.append(self._queue.popleft())
        return batch

    def _flush_all(self) -> None:
        while True:
            batch = self._take()
            if not batch:
                return
            self._write(batch)

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        try:
            self.store.write_requests(batch)
        except Exception:
            self.failures += 1
            log.exception("request log write failed; spilling %d records to %s", len(batch), self.spill_path)
            self._spill(batch)
            return False
        self.written += len(batch)
        if self._on_flush is not None:
            self._on_flush(len(batch), len(self._queue))
        return True

    # ---- spill file --------------------------------------------------------------------------
    def _spill(self, records: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(r) + b"\n" for r in records)
        with self._spill_lock:
            self.spill_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.spill_path, "ab") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            self.spilled += len(records)

    def _ingest_spill(self) -> None:
        ingesting = self.spill_path.with_name(self.spill_path.name + ".ingesting")
        with self._spill_lock:
            if not ingesting.exists():
                if not self.spill_path.exists():
                    return
                os.replace(self.spill_path, ingesting)
        records: list[dict[str, Any]] = []
        with open(ingesting, "rb") as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    records.append(orjson.loads(line))
                except orjson.JSONDecodeError:
                    log.error("skipping a torn line in %s (a crash mid-spill)", ingesting)
        for i in range(0, len(records), self.batch_size):
            try:
                self.store.write_requests(records[i : i + self.batch_size])
            except Exception:
                log.exception("could not ingest spilled records; will retry later")
                return
            self.written += len(records[i : i + self.batch_size])
        with contextlib.suppress(FileNotFoundError):
            ingesting.unlink()
