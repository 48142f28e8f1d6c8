"""The batched log writer: nothing acknowledged is lost, whether the queue overflows or the disk fails."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from bastion.store import LogWriter, SQLiteStore


def _record(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"req_{i:06d}", "received_at": 1_700_000_000 + i, "endpoint": "chat", "dialect": "openai",
            "status": 200, "request": {"i": i}, "attempts": [], **kw}


def test_close_commits_everything_queued(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=60, batch_size=10_000)
    w.start()
    for i in range(1234):
        w.submit(_record(i))
    w.close()
    assert store.count_requests() == 1234
    assert store.get_request("req_000007")["request"] == {"i": 7}


def test_full_queue_spills_to_disk_and_is_ingested(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=60, batch_size=50, queue_size=10)
    # not started: the queue fills at 10, the rest must spill rather than be dropped or block
    for i in range(500):
        w.submit(_record(i))
    assert w.pending == 10
    assert w.spilled == 490
    assert w.spill_path.exists()
    w.start()
    w.close()
    assert store.count_requests() == 500
    assert not w.spill_path.exists()


def test_failed_write_spills_and_is_retried(tmp_path: Path) -> None:
    class Flaky(SQLiteStore):
        failures = 2

        def write_rows(self, rows: Any) -> None:
            if self.failures:
                self.failures -= 1
                raise OSError("disk I/O error (simulated)")
            super().write_rows(rows)

    store = Flaky(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=60, batch_size=100)
    w.start()
    for i in range(300):
        w.submit(_record(i))
    w.close()
    assert w.failures >= 1
    assert store.count_requests() == 300


def test_leftover_spill_from_a_crash_is_ingested_at_start(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=60)
    w._spill([_record(i) for i in range(20)])
    with open(w.spill_path, "ab") as f:
        f.write(b'{"id": "torn')  # a crash in the middle of a spill write
    w2 = LogWriter(store, flush_interval_s=60)
    w2.start()
    w2.close()
    assert store.count_requests() == 20


def test_concurrent_producers(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=0.01, batch_size=64, queue_size=200)
    w.start()

    def produce(base: int) -> None:
        for i in range(1000):
            w.submit(_record(base + i))

    threads = [threading.Thread(target=produce, args=(k * 10_000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    w.close()
    assert store.count_requests() == 4000


def test_query_filters(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    store.write_requests([_record(i, tenant="acme" if i % 2 else "globex", status=200 if i % 3 else 502)
                          for i in range(30)])
    acme = store.query_requests(filters={"tenant": "acme"}, limit=100)
    assert len(acme) == 15 and all(r["tenant"] == "acme" for r in acme)
    errors = store.query_requests(errors_only=True, limit=100)
    assert len(errors) == 10 and all(r["status"] == 502 for r in errors)
    newest = store.query_requests(limit=1)
    assert newest[0]["id"] == "req_000029"
