"""Bound metric children kept by Metrics.child: the same child every time, counting into the same series
as ``.labels(...)``, and the cache bounded."""

from __future__ import annotations

from bastion.telemetry import metrics as metrics_mod
from bastion.telemetry.metrics import Metrics


def _sample(m: Metrics, name: str, labels: dict[str, str]) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_child_is_bound_once_and_counts_into_the_labelled_series() -> None:
    m = Metrics()
    a = m.child(m.requests, "chat", "gpt", "dep", "200")
    assert m.child(m.requests, "chat", "gpt", "dep", "200") is a
    a.inc()
    m.requests.labels("chat", "gpt", "dep", "200").inc()
    m.child(m.requests, "chat", "gpt", "dep", "500").inc(3)
    m.child(m.latency, "chat", "gpt", "false").observe(0.2)
    labels = {"endpoint": "chat", "model": "gpt", "deployment": "dep"}
    assert _sample(m, "bastion_requests_total", {**labels, "status": "200"}) == 2
    assert _sample(m, "bastion_requests_total", {**labels, "status": "500"}) == 3
    assert _sample(m, "bastion_request_duration_seconds_count",
                   {"endpoint": "chat", "model": "gpt", "stream": "false"}) == 1
    assert b'bastion_requests_total{deployment="dep",endpoint="chat",model="gpt",status="200"} 2.0' in m.render()


def test_child_cache_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(metrics_mod, "MAX_CHILDREN", 5)
    m = Metrics()
    for i in range(20):
        m.child(m.attempts, f"dep{i}", "ok").inc()
    assert len(m._children) == 5
    assert _sample(m, "bastion_upstream_attempts_total", {"deployment": "dep19", "outcome": "ok"}) == 1
