"""The request-log writer cannot die: a record that cannot be encoded is stored reduced and flagged, the
rest of its batch is stored whole, and storage failures are retried (finding 1 of the hardening issue)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bastion.store import LogWriter, SQLiteStore


def _record(i: int, **kw: Any) -> dict[str, Any]:
    return {"id": f"req_{i:06d}", "received_at": 1_700_000_000 + i, "endpoint": "chat", "dialect": "openai",
            "status": 200, "request": {"i": i}, "attempts": [], **kw}


def _deep(n: int) -> dict[str, Any]:
    d: dict[str, Any] = {"x": 1}
    for _ in range(n):
        d = {"a": d}
    return d


def test_unencodable_records_are_reduced_not_dropped(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=0.01, batch_size=100)
    w.start()
    bad = [
        _record(1, request={"metadata": _deep(300)}),          # deeper than orjson writes
        _record(2, response={"text": "\ud800 lone surrogate"}),  # not UTF-8
        _record(3, params={"seed": 1 << 70}),                   # past 64 bits
        _record(4, user="bob\ud800", request={"x": object()}),   # not JSON at all, bad text column
    ]
    for i in range(10):
        w.submit(_record(100 + i))
    for r in bad:
        w.submit(r)
    for i in range(10):
        w.submit(_record(200 + i))
    w.close()
    assert w.alive is False and w.errors == 0
    assert store.count_requests() == 24
    for r in bad:
        row = store.get_request(r["id"])
        assert row is not None, r["id"]
        assert "log_reduced" in row["flags"]
    assert store.get_request("req_000001")["request"] == {"unstorable": store.get_request("req_000001")["request"]["unstorable"]}
    assert "Recursion" in store.get_request("req_000001")["request"]["unstorable"]
    assert store.get_request("req_000105")["request"] == {"i": 105}


def test_unencodable_record_in_the_spill_path_is_reduced_too(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "b.db"))
    w = LogWriter(store, flush_interval_s=60, batch_size=100, queue_size=1)
    w.submit(_record(1))
    w.submit(_record(2, request={"metadata": _deep(300)}))  # the queue is full: this one spills
    assert w.spilled == 1
    w.start()
    w.close()
    assert store.count_requests() == 2
    assert "log_reduced" in store.get_request("req_000002")["flags"]


def test_an_exception_inside_the_writer_thread_does_not_kill_it(tmp_path: Path) -> None:
    class Buggy(SQLiteStore):
        calls = 0

        def write_rows(self, rows: Any) -> None:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("a bug in the store")
            super().write_rows(rows)

    store = Buggy(str(tmp_path / "b.db"))
    events: list[str] = []
    w = LogWriter(store, flush_interval_s=0.01, batch_size=10, on_event=lambda e, n: events.append(e))
    w.start()
    for i in range(50):
        w.submit(_record(i))
    w.flush()
    assert w.alive
    w.close()
    assert store.count_requests() == 50
    assert "store_failure" in events


def test_store_and_spill_both_failing_hold_records_and_recover(tmp_path: Path) -> None:
    """Neither the store nor the spill file takes writes: the writer holds the records, says it is
    degraded (refuse mode: not accepting), and writes them all once the store works again."""

    class Down(SQLiteStore):
        down = True

        def write_rows(self, rows: Any) -> None:
            if self.down:
                raise OSError(28, "No space left on device")
            super().write_rows(rows)

    store = Down(str(tmp_path / "b.db"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spill = blocker / "spill.jsonl"  # its parent is a file: every attempt to write the spill file fails
    events: list[str] = []
    w = LogWriter(store, flush_interval_s=0.01, batch_size=10, spill_path=str(spill),
                  on_event=lambda e, n: events.append(e))
    w.start()
    for i in range(40):
        w.submit(_record(i))
    import time
    deadline = time.monotonic() + 10
    while not w.degraded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert w.degraded and not w.accepting
    assert w.pending == 40 and w.lost == 0
    store.down = False
    deadline = time.monotonic() + 15
    while w.degraded and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not w.degraded and w.accepting
    w.close()
    assert store.count_requests() == 40
    assert events.count("degraded") == 1 and events.count("recovered") == 1


def test_serve_mode_counts_what_it_cannot_hold(tmp_path: Path) -> None:
    class Down(SQLiteStore):
        def write_rows(self, rows: Any) -> None:
            raise OSError(28, "No space left on device")

    store = Down(str(tmp_path / "b.db"))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    spill = blocker / "spill.jsonl"
    w = LogWriter(store, flush_interval_s=60, batch_size=5, queue_size=5, spill_path=str(spill),
                  on_write_failure="serve")
    for i in range(5):
        w.submit(_record(i))
    w._flush_all()  # fails: degraded, the five are back in the queue
    assert w.degraded and w.accepting  # serve mode keeps taking requests
    for i in range(5, 12):
        w.submit(_record(i))
    assert w.pending == 5 and w.lost == 7
