"""Finding: ``x-bastion-user`` or the body's ``user`` overrode the user a key is bound to (+2,207 % over a
per-user budget by naming other users), and requests naming no user escaped per-user budgets entirely.
Now a key bound to a user always charges that user: naming another one (header, ``user``, Anthropic's
``metadata.user_id``) is a 403 that names the bound user. A request that names no user is charged to its
tenant's anonymous user (``-``) under per-user rules, so leaving the user out escapes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator

import anthropic
import openai
import pytest

from tests.procs import Proc
from tests.security.budget_stack import Stack, config, spent_nusd

BUDGETS = """
budgets:
  - {name: per-user, scope: user, tenant: ub, limit_usd: "0.30", period: day}
limits:
  - {scope: user, tenant: lim, rpm: 3, window_s: 86400}
"""
MSGS = [{"role": "user", "content": "[[sim:tokens=10]] spend a little"}]


@pytest.fixture(scope="module")
def stack(sim: Proc, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    d = tmp_path_factory.mktemp("binding")
    st = Stack(sim, None, config(d / "bastion.yaml", sim.url, d / "b.db", BUDGETS, ("ub", "lim")), d / "b.db")
    st.key("ub", "alice")
    st.key("ub")
    st.key("lim")
    st.start()
    yield st
    assert st.gateway is not None
    st.gateway.stop()


def _oai(st: Stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=st.base + "/v1", api_key=key, max_retries=0, timeout=30)


def _spend(client: openai.OpenAI, most: int = 30, **extra: object) -> tuple[int, str]:
    """Requests until one is refused: (how many were answered, the refusal's message)."""
    for n in range(most):
        try:
            client.chat.completions.create(model="priced", max_tokens=10, messages=MSGS, **extra)  # type: ignore[arg-type]
        except openai.RateLimitError as e:
            return n, e.body["message"]  # type: ignore[index]
    return most, ""


def test_a_bound_key_cannot_act_as_another_user(stack: Stack) -> None:
    alice = _oai(stack, stack.key("ub", "alice"))
    for extra in ({"extra_headers": {"x-bastion-user": "bob"}}, {"user": "bob"}):
        with pytest.raises(openai.PermissionDeniedError) as ei:
            alice.chat.completions.create(model="priced", max_tokens=5, messages=MSGS, **extra)  # type: ignore[arg-type]
        err = ei.value.body
        assert err["code"] == "permission_denied"  # type: ignore[index]
        assert "'alice'" in err["message"] and "'bob'" in err["message"]  # type: ignore[index]
    claude = anthropic.Anthropic(base_url=stack.base, api_key=stack.key("ub", "alice"), max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError) as ai:
        claude.messages.create(model="priced", max_tokens=5, messages=MSGS, metadata={"user_id": "bob"})
    assert "bound to user 'alice'" in ai.value.message
    # naming the bound user itself is fine, and the log says who was charged
    raw = alice.chat.completions.with_raw_response.create(model="priced", max_tokens=5, messages=MSGS, user="alice",
                                                           extra_headers={"x-bastion-user": "alice"})
    row = stack.wait_rows("id = ?", (raw.headers["x-bastion-request-id"],), 1)[0]
    assert row["user"] == "alice"
    assert not stack.rows("user = 'bob'")  # nothing was ever charged to bob


def test_a_bound_user_cannot_dodge_a_spent_per_user_budget(stack: Stack) -> None:
    alice = _oai(stack, stack.key("ub", "alice"))
    answered, message = _spend(alice)
    assert answered > 0 and "per-user" in message and "ub/alice" in message
    for other in ("bob", "carol", "dave"):
        with pytest.raises(openai.PermissionDeniedError):
            alice.chat.completions.create(model="priced", max_tokens=10, messages=MSGS,
                                          extra_headers={"x-bastion-user": other})
    stack.wait_rows("tenant = 'ub' AND user = 'alice' AND status = 200", (), answered)
    assert spent_nusd(stack.rows("tenant = 'ub' AND user = 'alice'")) <= 300_000_000
    assert spent_nusd(stack.rows("key_id IN (SELECT key_id FROM requests WHERE user = 'alice')")) <= 300_000_000


def test_requests_without_a_user_share_the_anonymous_users_budget(stack: Stack) -> None:
    service = _oai(stack, stack.key("ub"))  # a key of tenant ub bound to no user
    answered, message = _spend(service)
    assert answered > 0
    assert "per-user" in message and "anonymous user of tenant 'ub'" in message
    rows = stack.wait_rows("tenant = 'ub' AND user IS NULL AND status = 200", (), answered)
    assert len(rows) == answered and spent_nusd(rows) <= 300_000_000
    # an unbound key may still name its users: each named user has a budget of their own
    assert _spend(service, 2, extra_headers={"x-bastion-user": "erin"}) == (2, "")


def test_requests_without_a_user_count_against_per_user_quotas(stack: Stack) -> None:
    client = _oai(stack, stack.key("lim"))
    answered, message = _spend(client, 10)
    assert answered == 3 and "anonymous user of tenant 'lim'" in message and "limits.0" in message
    refused = stack.wait_rows("tenant = 'lim' AND status = 429", (), 1)
    assert json.loads(refused[0]["attempts"]) == []
