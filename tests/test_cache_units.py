"""Units of the cache: canonical keys, version invalidation, LRU and TTL."""

from __future__ import annotations

import asyncio

from hypothesis import given
from hypothesis import strategies as st

from bastion.cache.keys import cache_key
from bastion.cache.store import Entry, MemoryCacheStore


def _key(body: dict, **kw) -> str:
    args = {"tenant": "t", "alias": "a", "versions": ("m-2024",), "prompt_version": None, "dialect": "openai"} | kw
    return cache_key(body=body, **args).key


BASE = {"model": "a", "temperature": 0, "messages": [{"role": "user", "content": "hi"}]}


def test_key_changes_with_everything_that_changes_the_answer() -> None:
    k = _key(BASE)
    assert _key(BASE, tenant="u") != k
    assert _key(BASE, alias="b") != k
    assert _key(BASE, versions=("m-2025",)) != k  # pinned model version changed: old entries unreachable
    assert _key(BASE, prompt_version="p2") != k  # prompt version changed
    for change in ({"temperature": 0.5}, {"seed": 1}, {"max_tokens": 5}, {"stop": "x"},
                   {"tools": [{"type": "function", "function": {"name": "f"}}]},
                   {"response_format": {"type": "json_object"}},
                   {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]}):
        assert _key(BASE | change) != k, change


def test_key_ignores_what_cannot_change_the_answer() -> None:
    k = _key(BASE)
    for same in ({"stream": True}, {"stream_options": {"include_usage": True}}, {"user": "bob"},
                 {"metadata": {"x": 1}}, {"temperature": 0.0}, {"top_p": 1}, {"n": 1}, {"presence_penalty": 0}):
        assert _key(BASE | same) == k, same
    assert _key(BASE | {"max_completion_tokens": 9}) == _key(BASE | {"max_tokens": 9})
    assert _key(BASE | {"stop": "x"}) == _key(BASE | {"stop": ["x"]})
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    assert _key(BASE | parts) == k


@given(st.dictionaries(st.sampled_from(["temperature", "seed", "top_p", "max_tokens"]),
                       st.integers(min_value=0, max_value=5), min_size=1))
def test_key_order_never_matters(params: dict) -> None:
    body = BASE | params
    assert _key(dict(reversed(list(body.items())))) == _key(body)


def test_anthropic_and_openai_forms_of_one_request_share_a_key() -> None:
    anth = {"model": "a", "max_tokens": 10, "temperature": 0, "system": "be brief",
            "messages": [{"role": "user", "content": "hi"}]}
    oai = {"model": "a", "max_tokens": 10, "temperature": 0,
           "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]}
    assert _key(anth, dialect="anthropic") == _key(oai)


def test_semantic_context_is_everything_but_the_last_user_turn() -> None:
    a = cache_key(tenant="t", alias="a", versions=(), prompt_version=None, dialect="openai",
                  body=BASE | {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "one"}]})
    b = cache_key(tenant="t", alias="a", versions=(), prompt_version=None, dialect="openai",
                  body=BASE | {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "two"}]})
    assert a.context == b.context and a.key != b.key and a.last_user == "one"
    c = cache_key(tenant="u", alias="a", versions=(), prompt_version=None, dialect="openai",
                  body=BASE | {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "one"}]})
    assert c.context != a.context  # the tenant is part of the partition


def _entry(key: str, tenant: str = "t", size: int = 100, ttl: float = 100, now: float = 0) -> Entry:
    return Entry(key=key, tenant=tenant, alias="a", kind="chat", response={"k": key}, created_at=now,
                 expires_at=now + ttl, request_id="r", size=size)


def test_lru_eviction_by_count_and_bytes() -> None:
    clock = [0.0]
    store = MemoryCacheStore(max_entries=3, max_bytes=1000, clock=lambda: clock[0])

    async def go() -> None:
        for k in "abc":
            await store.put(_entry(k))
        assert await store.get("a") is not None  # a is now the most recently used
        assert await store.put(_entry("d")) == ["b"]  # least recently used goes
        assert await store.get("b") is None
        assert await store.put(_entry("big", size=950)) == ["c", "a", "d"]  # bytes cap
        assert (await store.stats())["entries"] == 1 and store.bytes == 950

    asyncio.run(go())


def test_ttl_and_stale_window() -> None:
    clock = [0.0]
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000, clock=lambda: clock[0])

    async def go() -> None:
        await store.put(_entry("a", ttl=10))
        clock[0] = 9.9
        assert (await store.get("a"))[1] is True
        clock[0] = 10.5
        assert await store.get("a") is None
        assert (await store.get("a", allow_stale_s=5))[1] is False  # stale, only for error fallback
        clock[0] = 16
        assert await store.get("a", allow_stale_s=5) is None

    asyncio.run(go())


def test_purge_by_tenant_and_alias() -> None:
    store = MemoryCacheStore(max_entries=10, max_bytes=10_000)

    async def go() -> None:
        for k, t in (("a", "x"), ("b", "x"), ("c", "y")):
            await store.put(_entry(k, tenant=t))
        assert {e.key for e in await store.purge(tenant="x")} == {"a", "b"}
        assert (await store.stats())["entries_per_tenant"] == {"y": 1}

    asyncio.run(go())
