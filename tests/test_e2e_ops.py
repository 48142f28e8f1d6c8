"""End to end: health, readiness and Prometheus metrics of a running gateway."""

from __future__ import annotations

import re

import httpx
import openai
import pytest


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if m:
            labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
            out.append((labels, float(m.group(2))))
    return out


def test_healthz_and_readyz(stack):
    r = httpx.get(stack.base + "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = httpx.get(stack.base + "/readyz")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["log_writer"] is True


def test_metrics(stack, oai):
    oai.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "m [[sim:tokens=5]]"}])
    list(oai.chat.completions.create(model="compat", stream=True,
                                     messages=[{"role": "user", "content": "m [[sim:tokens=5]]"}]))
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model="sim-small", messages=[{"role": "user", "content": "[[sim:fault=429]]"}])

    r = httpx.get(stack.base + "/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    text = r.text
    for name in ("bastion_requests_total", "bastion_request_duration_seconds_bucket",
                 "bastion_time_to_first_token_seconds_bucket", "bastion_tokens_total"):
        assert _samples(text, name), f"{name} missing"

    reqs = _samples(text, "bastion_requests_total")
    assert any(lb["model"] == "sim-small" and lb["status"] == "200" and v >= 1 for lb, v in reqs)
    assert any(lb["model"] == "sim-small" and lb["status"] == "429" and v >= 1 for lb, v in reqs)
    assert any(lb["model"] == "compat" and lb["status"] == "200" for lb, _ in reqs)

    durations = _samples(text, "bastion_request_duration_seconds_count")
    assert any(lb["model"] == "compat" and lb["stream"] == "true" and v >= 1 for lb, v in durations)
    ttft = _samples(text, "bastion_time_to_first_token_seconds_count")
    assert any(lb["model"] == "compat" and v >= 1 for lb, v in ttft)

    tokens = _samples(text, "bastion_tokens_total")
    assert any(lb["model"] == "sim-small" and lb["kind"] == "completion" and v >= 5 for lb, v in tokens)
    assert any(lb["model"] == "compat" and lb["kind"] == "prompt" and v > 0 for lb, v in tokens)

    errors = _samples(text, "bastion_errors_total")
    assert any(lb["model"] == "sim-small" and v >= 1 for lb, v in errors)


def test_metrics_need_no_key_and_health_is_not_logged_as_model_traffic(stack):
    assert httpx.get(stack.base + "/metrics").status_code == 200
    assert stack.rows("endpoint NOT IN ('chat', 'messages', 'embeddings')") == []
