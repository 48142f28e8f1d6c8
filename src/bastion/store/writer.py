"""The batched request-log writer: off the hot path, never drops silently, never blocks the event loop, and
cannot die.

Records are appended to an in-memory queue by the request handlers. A writer thread commits them in
batches every ``flush_interval`` (or as soon as ``batch_size`` are waiting). When the queue is full, or a
write fails, records spill to an append-only JSON-lines file (fsynced) that the writer ingests later (also
at the next start, after a crash). A crash therefore loses at most the records of the last flush window; a
graceful shutdown (``close``) commits everything.

What can go wrong, and what happens:
- a record that cannot be encoded (JSON too deep, lone surrogates, huge integers) is reduced to what can
  be stored and flagged ``log_reduced`` (``reduce.py``); it is never dropped and never stops a batch;
- the store cannot be written (disk full, I/O error, locked): the batch spills to the file;
- neither the store nor the spill file can be written: the writer is *degraded*. It keeps the records in
  memory and retries with backoff until one of them takes writes again. With ``on_write_failure: refuse``
  the gateway refuses new requests meanwhile (``accepting`` is False), so the records held are those of
  requests already in flight; with ``serve`` it keeps serving and, once ``queue_size`` records wait in
  memory, further records are counted as lost (``lost``) rather than grow memory without bound;
- an unexpected error inside the thread is logged and counted, and the loop goes on.
Every one of these is reported through ``on_event`` (metrics and alerts hang there).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from .reduce import minimal_record, reduce_record
from .sqlite import SQLiteStore

log = logging.getLogger("bastion.store")

# (event, count): store_failure | spill_failure | reduced | lost | degraded | recovered | writer_error
OnEvent = Callable[[str, int], None]

_RETRY_MIN_S, _RETRY_MAX_S = 0.2, 5.0
REFUSED = "log_unavailable"  # the error code of requests refused because the log could not be written


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
        on_write_failure: str = "refuse",
        on_event: OnEvent | None = None,
    ) -> None:
        self.store = store
        self.flush_interval_s = flush_interval_s
        self.batch_size = batch_size
        self.queue_size = queue_size
        self.spill_path = Path(spill_path or f"{store.path}.spill.jsonl")
        self.on_write_failure = on_write_failure
        self._on_flush = on_flush
        self._on_event = on_event
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._spill_lock = threading.Lock()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._waiters: dict[str, Callable[[], object]] = {}  # request id -> on_stored
        self.degraded = False  # neither the store nor the spill file takes writes right now
        self.written = 0
        self.spilled = 0
        self.failures = 0
        self.reduced = 0
        self.lost = 0
        self.errors = 0

    # ---- producer side (event loop) ----------------------------------------------------------
    def submit(self, record: dict[str, Any], on_stored: Callable[[], object] | None = None) -> None:
        """Queue a record. ``on_stored`` (called from the writer thread) fires once it is committed or
        spilled, or once it is counted as lost; with a waiter queued the writer commits at once."""
        with self._cond:
            if on_stored is not None:
                self._waiters[str(record.get("id"))] = on_stored
                self._cond.notify()
            if len(self._queue) < self.queue_size or (
                    self.degraded and self.on_write_failure == "refuse" and record.get("error_code") != REFUSED):
                # refuse: the gateway stops taking requests while degraded, so what arrives now belongs to
                # requests already answered: held in memory until the disk takes writes again (the rows of
                # the refusals themselves are held only while there is room: a flood of them must not grow
                # memory without bound)
                self._queue.append(record)
                if len(self._queue) >= self.batch_size:
                    self._cond.notify()
                return
            degraded = self.degraded
        if degraded:  # serve: memory is bounded; the spill file is known to fail
            self._lose(1)
            self._stored([record])
            return
        if self._spill([record]):
            self._stored([record])
        else:
            with self._cond:
                self._queue.append(record)  # the spill just failed: hold it; the writer retries

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def accepting(self) -> bool:
        """False while degraded under ``on_write_failure: refuse``: new requests get a 503."""
        return not (self.degraded and self.on_write_failure == "refuse")

    @property
    def pending(self) -> int:
        return len(self._queue)

    # ---- lifecycle ---------------------------------------------------------------------------
    def start(self) -> None:
        self._ingest_spill()
        self._thread = threading.Thread(target=self._run, name="bastion-log-writer", daemon=True)
        self._thread.start()

    def close(self, timeout: float | None = 30.0) -> None:
        """Commit everything queued, then stop the thread. Records that no storage takes by then are
        written to stderr as a last resort (one JSON line each, prefixed), and counted as lost."""
        with self._cond:
            self._stop = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        self._flush_all()
        self._ingest_spill()
        if self._queue:
            self._dump_to_stderr()

    def flush(self) -> None:
        """Commit everything queued now (blocking; for tests and the CLI)."""
        self._flush_all()

    # ---- writer thread -----------------------------------------------------------------------
    def _run(self) -> None:
        backoff = _RETRY_MIN_S
        while True:
            try:
                with self._cond:
                    wait = backoff if self.degraded else self.flush_interval_s
                    if not self._stop and (self.degraded or (len(self._queue) < self.batch_size and not self._waiters)):
                        self._cond.wait(wait)
                    stop = self._stop
                if self._flush_all():
                    backoff = _RETRY_MIN_S
                    if self.spill_path.exists() and len(self._queue) < self.batch_size:
                        self._ingest_spill()
                else:
                    backoff = min(_RETRY_MAX_S, backoff * 2)
                if stop:
                    return
            except Exception:  # the thread must outlive any bug: log it, count it, keep writing
                self.errors += 1
                self._event("writer_error", 1)
                log.exception("request log writer: unexpected error; continuing")
                time.sleep(backoff)

    def _take(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        with self._cond:
            while self._queue and len(batch) < self.batch_size:
                batch.append(self._queue.popleft())
        return batch

    def _flush_all(self) -> bool:
        """Write everything queued; False if storage failed (what was taken is back at the queue's head)."""
        while True:
            batch = self._take()
            if not batch:
                return True
            if not self._write(batch):
                with self._cond:
                    self._queue.extendleft(reversed(batch))
                return False

    def _rows(self, batch: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], list[dict[str, Any]]]:
        """Encode each record, reducing the ones that do not encode (returned too, for the spill)."""
        rows: list[tuple[Any, ...]] = []
        out: list[dict[str, Any]] = []
        for r in batch:
            try:
                rows.append(self.store.encode_request(r))
                out.append(r)
                continue
            except Exception as e:  # any value a client or upstream sent
                reason = f"{type(e).__name__}: {e}"[:200]
            self.reduced += 1
            self._event("reduced", 1)
            log.warning("request %s: stored reduced (%s)", r.get("id"), reason)
            r = reduce_record(r, reason)
            try:
                rows.append(self.store.encode_request(r))
            except Exception as e:
                r = minimal_record(r, f"{reason}; then {type(e).__name__}")
                rows.append(self.store.encode_request(r))
            out.append(r)
        return rows, out

    def _write(self, batch: list[dict[str, Any]]) -> bool:
        rows, batch = self._rows(batch)
        try:
            self.store.write_rows(rows)
        except Exception:  # disk full, I/O error, locked, schema trouble
            self.failures += 1
            self._event("store_failure", 1)
            log.exception("request log write failed; spilling %d records to %s", len(batch), self.spill_path)
            if not self._spill(batch):
                return False
        else:
            self.written += len(batch)
            if self._on_flush is not None:
                self._on_flush(len(batch), len(self._queue))
        self._set_degraded(False)
        self._stored(batch)
        return True

    def _stored(self, records: list[dict[str, Any]]) -> None:
        if not self._waiters:
            return
        for r in records:
            with self._cond:
                cb = self._waiters.pop(str(r.get("id")), None)
            if cb is not None:
                try:
                    cb()
                except Exception:  # e.g. the event loop is closed: nobody is waiting any more
                    log.debug("on_stored callback failed", exc_info=True)

    # ---- spill file --------------------------------------------------------------------------
    def _encode_line(self, r: dict[str, Any]) -> bytes:
        try:
            return orjson.dumps(r) + b"\n"
        except Exception as e:
            self.reduced += 1
            self._event("reduced", 1)
            reduced = reduce_record(r, f"{type(e).__name__}: {e}"[:200])
            try:
                return orjson.dumps(reduced) + b"\n"
            except Exception:
                return orjson.dumps(minimal_record(reduced, type(e).__name__)) + b"\n"

    def _spill(self, records: list[dict[str, Any]]) -> bool:
        """Append records to the spill file (fsynced); False, and degraded, if the file cannot be written."""
        data = b"".join(self._encode_line(r) for r in records)
        try:
            with self._spill_lock:
                self.spill_path.parent.mkdir(parents=True, exist_ok=True)
                with open(self.spill_path, "ab") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:
            self._event("spill_failure", 1)
            log.error("cannot write the spill file %s (%s): holding %d records in memory", self.spill_path, e,
                      len(records))
            self._set_degraded(True)
            return False
        self.spilled += len(records)
        return True

    def _ingest_spill(self) -> None:
        ingesting = self.spill_path.with_name(self.spill_path.name + ".ingesting")
        with self._spill_lock:
            if not ingesting.exists():
                if not self.spill_path.exists():
                    return
                try:
                    os.replace(self.spill_path, ingesting)
                except OSError:
                    log.exception("cannot move the spill file aside for ingestion; will retry later")
                    return
        records: list[dict[str, Any]] = []
        try:
            with open(ingesting, "rb") as f:
                for line in f:
                    line = line.strip()
                    if not line:
                        continue
                    try:
                        records.append(orjson.loads(line))
                    except orjson.JSONDecodeError:
                        log.error("skipping a torn line in %s (a crash mid-spill)", ingesting)
        except OSError:
            log.exception("cannot read %s; will retry later", ingesting)
            return
        for i in range(0, len(records), self.batch_size):
            chunk = [r for r in records[i : i + self.batch_size] if isinstance(r, dict)]
            rows, _ = self._rows(chunk)
            try:
                self.store.write_rows(rows)
            except Exception:
                log.exception("could not ingest spilled records; will retry later")
                return
            self.written += len(rows)
        with contextlib.suppress(FileNotFoundError):
            ingesting.unlink()

    # ---- trouble -----------------------------------------------------------------------------
    def _set_degraded(self, on: bool) -> None:
        if on == self.degraded:
            return
        self.degraded = on
        if on:
            log.error("request log degraded: neither %s nor %s can be written (on_write_failure: %s)",
                      self.store.path, self.spill_path, self.on_write_failure)
        else:
            log.warning("request log recovered: writes go through again")
        self._event("degraded" if on else "recovered", 1)

    def _lose(self, n: int) -> None:
        self.lost += n
        self._event("lost", n)

    def _event(self, kind: str, n: int) -> None:
        if self._on_event is not None:
            try:
                self._on_event(kind, n)
            except Exception:  # a metrics or alert hook must not stop the writer
                log.exception("request log event hook failed")

    def _dump_to_stderr(self) -> None:
        records = list(self._queue)
        self._queue.clear()
        for r in records:
            sys.stderr.buffer.write(b"BASTION-UNWRITTEN-RECORD " + self._encode_line(r))
        sys.stderr.flush()
        log.error("request log: %d records could not be stored at shutdown; written to stderr", len(records))
        self._lose(len(records))
        self._stored(records)
