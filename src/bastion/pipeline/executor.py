"""The attempt loop: walk a route's fallback chain until one deployment answers.

For each candidate it checks the circuit breaker, the provider rate limit and (for a re-try of a
deployment already tried) the retry budget and the backoff; it runs the attempt under the connect,
first-token, chunk-gap and total timeouts; and, when the alias hedges, it starts a second attempt on
another deployment if the first has no first token by the hedge delay, keeping whichever answers first.

An attempt is finished, for the purpose of this loop, once it has its first token (streams) or its whole
answer (non-streaming): nothing has reached the client before that, so a failure up to there can be
re-tried safely. After it, a stream's failure goes to the client as an error event (``relay.py``).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from bastion.background import Background
from bastion.errors import BastionError, UpstreamError, UpstreamTimeout, UpstreamUnavailable
from bastion.providers import SSEEvent, iter_sse_batches
from bastion.routing import Breakers, Budget, Candidate, DeploymentLimits, Failure, Gate, Route, Router
from bastion.routing.breaker import pools_of
from bastion.routing.classify import backoff_s, classify, counts_against_breaker, retry_after_s
from bastion.state import MemoryState, State
from bastion.telemetry import Metrics

from .context import Attempt, RequestContext
from .deadlines import AttemptTimeouts, Deadlines, request_deadlines
from .first_token import read_to_first_token

MakeRequest = Callable[[Candidate], tuple[str, bytes]]

HEDGE_MEDIAN_FLOOR = 1.5  # an observed-percentile hedge delay is at least 1.5 × the median first-token time
_DEADLINE_SLACK_S = 0.005  # a deadline this close is spent: timers may fire a hair before the time they serve


@dataclass(slots=True)
class Ready:
    """An attempt that has its first token (streams) or its whole answer (non-streaming)."""

    cand: Candidate
    attempt: Attempt
    probe: bool
    est_tokens: int
    resp: aiohttp.ClientResponse | None = None
    events: AsyncIterator[list[SSEEvent]] | None = None
    first: list[SSEEvent] = field(default_factory=list)
    raw: bytes = b""
    data: dict[str, Any] = field(default_factory=dict)
    timeouts: AttemptTimeouts | None = None  # the limits the stream runs under (whose a mid-stream timeout is)


@dataclass(slots=True)
class Pick:
    cand: Candidate
    probe: bool
    backoff_ms: float | None = None


class AttemptFailed(Exception):
    def __init__(self, error: BastionError, cand: Candidate, kind: Failure, *, caller_limited: bool = False) -> None:
        super().__init__(error.message)
        self.error = error
        self.cand = cand
        self.kind = kind
        self.retry_after = retry_after_s(error.headers)
        self.caller_limited = caller_limited  # timed out under the client's own shorter limit


class Exhausted(Exception):
    """No candidate answered: ``error`` is what the client gets unless a degraded answer is configured."""

    def __init__(self, error: BastionError) -> None:
        super().__init__(error.message)
        self.error = error


class Executor:
    def __init__(self, router: Router, state: State, metrics: Metrics, *, rng: random.Random | None = None) -> None:
        self.router = router
        self.metrics = metrics
        self.breakers = Breakers(state, on_change=metrics.on_breaker, pools=pools_of(router.routes.values()))
        self.retry_budget = Budget(state, "rb")
        self.hedge_budget = Budget(state, "hb")
        self.limits = DeploymentLimits(state)
        self._rng = rng or random.Random()
        # Breaker and limit updates from synchronous code: at once when the state is in-process (its
        # coroutines never suspend), else as tasks.
        self.background = Background(inline=isinstance(state, MemoryState))

    # ---- the loop ----------------------------------------------------------------------------
    async def run(self, ctx: RequestContext, route: Route, make: MakeRequest, *, stream: bool, body: dict[str, Any]) -> Ready:
        policy = route.policy
        dl = request_deadlines(ctx, policy.timeouts)
        retry = policy.retry
        queue: deque[Candidate] = deque(self.router.chain(route))
        failures: list[AttemptFailed] = []
        tried: dict[str, int] = {}
        last_failure: dict[str, AttemptFailed] = {}
        rerouted = False
        est = _estimate_tokens(body) if any(c.deployment.tpm is not None for c in queue) else 0
        hedge_delay = self._hedge_delay(ctx, route, body, stream)
        if hedge_delay is not None:
            await self.hedge_budget.note_request(route.alias, policy.retry.budget_window_s)
        while queue and _sent(ctx) < retry.max_attempts and dl.remaining() > 0:
            pick = await self._next(ctx, route, queue, tried, last_failure, dl, est)
            if pick is None:
                break
            cand = pick.cand
            kind = "first" if _sent(ctx) == 0 else ("retry" if tried.get(cand.deployment.id, 0) else "fallback")
            if kind == "fallback" and failures:
                self.metrics.fallbacks.labels(route.alias, cand.route.alias, failures[-1].error.code).inc()
            tried[cand.deployment.id] = tried.get(cand.deployment.id, 0) + 1
            if hedge_delay is not None and _sent(ctx) + 1 < retry.max_attempts and queue:
                outcome = await self._hedged(ctx, route, pick, kind, queue, tried, make, stream, dl, hedge_delay, est)
            else:
                outcome = await self._attempt_or_failure(ctx, pick, kind, make, stream, dl, est)
            if isinstance(outcome, Ready):
                filtered = None if stream or rerouted else _filtered_answer(outcome, policy.fallback.on_content_filter)
                if filtered is None:
                    return outcome
                outcome = [filtered]
            for f in outcome:
                failures.append(f)
                last_failure[f.cand.deployment.id] = f
                if f.kind is Failure.FATAL:
                    raise Exhausted(f.error)
                if f.kind in (Failure.CONTEXT_OVERFLOW, Failure.CONTENT_FILTER):
                    fb = policy.fallback
                    targets = fb.on_context_overflow if f.kind is Failure.CONTEXT_OVERFLOW else fb.on_content_filter
                    if not targets or rerouted:
                        raise Exhausted(f.error)
                    rerouted = True
                    queue = deque(self.router.chain_of(targets))
                    self.metrics.fallbacks.labels(route.alias, targets[0], f.kind.value).inc()
                elif f.kind is Failure.RETRYABLE and not f.caller_limited:
                    # may be re-tried once the others have had their turn (not under the caller's own
                    # limit, which it would miss again, spending the retry budget every tenant shares)
                    queue.append(f.cand)
        raise Exhausted(self._summary(ctx, failures, dl))

    async def _next(
        self, ctx: RequestContext, route: Route, queue: deque[Candidate], tried: dict[str, int],
        last_failure: dict[str, AttemptFailed], dl: Deadlines, est: int, *, hedge: bool = False,
    ) -> Pick | None:
        """The next candidate allowed to take an attempt; a hedge takes only a deployment not yet tried."""
        retry = route.policy.retry
        if hedge:
            fresh = [c for c in queue if not tried.get(c.deployment.id)]
            for c in fresh:
                queue.remove(c)
            held = list(queue)
            queue.clear()
            queue.extend(fresh)
            try:
                return await self._next(ctx, route, queue, tried, last_failure, dl, est)
            finally:
                queue.extend(held)
        while queue:
            cand = queue.popleft()
            dep = cand.deployment
            n = tried.get(dep.id, 0)
            backoff = 0.0
            if n:
                lf = last_failure.get(dep.id)
                wait = backoff_s(n, retry.backoff_base_ms, retry.backoff_max_ms, self._rng)
                if lf is not None and lf.retry_after is not None:
                    if lf.retry_after > retry.max_retry_after_s:
                        self._skip(ctx, cand, "retry_after_too_long")
                        continue
                    wait = max(wait, lf.retry_after)
                if dl.remaining() <= wait:
                    self._skip(ctx, cand, "deadline")
                    continue
                if not await self.retry_budget.spend(
                    dep.id, ratio=retry.budget_ratio, floor_per_s=retry.budget_min_per_s, window_s=retry.budget_window_s
                ):
                    self._skip(ctx, cand, "retry_budget")
                    continue
                if wait > 0:
                    await asyncio.sleep(wait)
                backoff = wait
                self.metrics.retries.labels(route.alias, dep.id).inc()
            gate = await self.breakers.gate(dep.id, cand.route.policy.breaker, cand.route.alias)
            if gate is Gate.OPEN:
                self._skip(ctx, cand, "breaker_open")
                continue
            if not await self.limits.admit(dep.id, dep.rpm, dep.tpm, est):
                if gate is Gate.PROBE:
                    await self.breakers.release_probe(dep.id)
                self._skip(ctx, cand, "rate_limited")
                continue
            if not n:
                await self.retry_budget.note_request(dep.id, retry.budget_window_s)
            return Pick(cand, gate is Gate.PROBE, backoff * 1000 if backoff else None)
        return None

    def _skip(self, ctx: RequestContext, cand: Candidate, reason: str) -> None:
        dep = cand.deployment.id
        now = ctx.now()
        ctx.attempts.append(Attempt(dep, now, ended_at=now, outcome="skipped", alias=cand.route.alias, error_code=reason,
                                    kind="skipped", error=_SKIP_TEXT[reason].format(dep=dep)))
        self.metrics.skips.labels(dep, reason).inc()

    # ---- hedging -----------------------------------------------------------------------------
    def _hedge_delay(self, ctx: RequestContext, route: Route, body: dict[str, Any], stream: bool) -> float | None:
        h = route.policy.hedge
        if not h.enabled or ctx.options.get("hedge") == "off" or len(route.deployments) + len(
                route.policy.fallback.models) < 2:
            return None
        if (stream and not h.streaming) or (body.get("tools") and not h.with_tools):
            return None
        if h.max_tokens is not None:
            mt = body.get("max_tokens") or body.get("max_completion_tokens")
            n = v if isinstance(v := body.get("n"), int) else 1
            if isinstance(mt, int) and mt * max(1, n) > h.max_tokens:
                return None
        if h.delay_ms is not None:
            return max(h.delay_ms, h.min_delay_ms) / 1000
        stats = self.router.stats
        p = stats.ttft_percentile(route.alias, h.percentile, h.min_samples)
        if p is None:
            return None
        # The window holds answered attempts only (a slow original that loses its hedge is never
        # recorded), so its high percentile drifts down toward the median; the floor keeps the delay
        # clear of ordinary jitter so that hedges go to requests that are really slow.
        median = stats.ttft_percentile(route.alias, 50, h.min_samples) or 0.0
        return max(p, HEDGE_MEDIAN_FLOOR * median, h.min_delay_ms / 1000)

    async def _hedged(
        self, ctx: RequestContext, route: Route, pick: Pick, kind: str, queue: deque[Candidate],
        tried: dict[str, int], make: MakeRequest, stream: bool, dl: Deadlines, delay: float, est: int,
    ) -> Ready | list[AttemptFailed]:
        h = route.policy.hedge
        tasks: dict[asyncio.Task[Any], Candidate] = {
            asyncio.ensure_future(self._attempt_or_failure(ctx, pick, kind, make, stream, dl, est, single=True)):
                pick.cand
        }
        hedges = 0
        hedged: set[asyncio.Task[Any]] = set()
        failures: list[AttemptFailed] = []
        try:
            while tasks:
                can_hedge = hedges < h.max_extra and _sent(ctx) < route.policy.retry.max_attempts
                done, _ = await asyncio.wait(tasks, timeout=delay if can_hedge else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    hedges += 1
                    if not await self.hedge_budget.spend(route.alias, ratio=h.budget_ratio, floor_per_s=h.budget_min_per_s,
                                                         window_s=route.policy.retry.budget_window_s):
                        self.metrics.hedges.labels(route.alias, "budget_exhausted").inc()
                        continue
                    other = await self._next(ctx, route, queue, tried, {}, dl, est, hedge=True)
                    if other is None:
                        continue
                    tried[other.cand.deployment.id] = 1
                    t = asyncio.ensure_future(
                        self._attempt_or_failure(ctx, other, "hedge", make, stream, dl, est, single=True))
                    tasks[t] = other.cand
                    hedged.add(t)
                    self.metrics.hedges.labels(route.alias, "started").inc()
                    continue
                for t in done:
                    tasks.pop(t)
                    result = t.result()
                    if isinstance(result, Ready):
                        if hedged:
                            self.metrics.hedges.labels(route.alias, "won" if t in hedged else "lost").inc()
                        return result
                    failures.append(result)
            return failures
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)

    # ---- one attempt -------------------------------------------------------------------------
    async def _attempt_or_failure(
        self, ctx: RequestContext, pick: Pick, kind: str, make: MakeRequest, stream: bool,
        dl: Deadlines, est: int, *, single: bool = False,
    ) -> Any:
        try:
            ready = await self._attempt(ctx, pick, kind, make, stream, dl, est)
        except AttemptFailed as f:
            return f if single else [f]
        return ready

    async def _attempt(
        self, ctx: RequestContext, pick: Pick, kind: str, make: MakeRequest, stream: bool, dl: Deadlines, est: int,
    ) -> Ready:
        cand, probe = pick.cand, pick.probe
        dep = cand.deployment
        url, payload = make(cand)
        attempt = Attempt(dep.id, ctx.now(), kind=kind, alias=cand.route.alias, backoff_ms=pick.backoff_ms)
        ctx.attempts.append(attempt)
        t = dl.for_attempt(cand.route.policy.timeouts, dep.provider.config, stream=stream)
        stats = self.router.stats
        stats.begin(dep.id)
        resp: aiohttp.ClientResponse | None = None
        limit: str | None = None  # the timeout that ended the attempt, when one did
        try:
            async with asyncio.timeout_at(t.first_token_at) as scope:  # noqa: SIM117
                try:
                    resp = await dep.provider.post(url, payload, deployment=dep.id, timeout=t.client)
                    attempt.status = resp.status
                    if stream:
                        events = iter_sse_batches(resp)
                        first = await read_to_first_token(events, dep.provider.dialect, dep.id)
                        ready = Ready(cand, attempt, probe, est, resp=resp, events=events, first=first, timeouts=t)
                    else:
                        raw = await resp.read()
                        ready = Ready(cand, attempt, probe, est, resp=None, raw=raw, data=_parse_body(raw, dep.id))
                        resp.release()
                except TimeoutError as e:
                    if scope.expired():
                        raise
                    limit = t.before_first_token(e)
                    raise UpstreamTimeout(t.read_message(dep.id, limit)) from None
                except aiohttp.ClientError as e:
                    raise UpstreamUnavailable(
                        f"deployment {dep.id!r} dropped the connection before the first token ({type(e).__name__})"
                    ) from None
        except TimeoutError:
            err: BastionError = UpstreamTimeout(t.expired_message(dep.id))
            caller = t.before_first_token(None) in t.caller
            raise self._failed(ctx, cand, attempt, probe, resp, err, caller_limited=caller) from None
        except BastionError as e:
            caller = limit is not None and limit in t.caller
            raise self._failed(ctx, cand, attempt, probe, resp, e, caller_limited=caller) from None
        except asyncio.CancelledError:
            attempt.ended_at, attempt.outcome = ctx.now(), "cancelled"
            attempt.error = "another attempt answered first (hedge)"
            if resp is not None:
                resp.close()
            stats.end(dep.id)
            if probe:
                self.background.spawn(self.breakers.release_probe(dep.id))
            raise
        attempt.first_byte_at = ctx.now()
        stats.observe_ttft(cand.route.alias, dep.id, attempt.first_byte_at - attempt.started_at)
        if not stream:
            attempt.ended_at, attempt.outcome = attempt.first_byte_at, "ok"
            stats.end(dep.id)
            await self.breakers.record(dep.id, cand.route.policy.breaker, ok=True, probe=probe)
        return ready

    def _failed(
        self, ctx: RequestContext, cand: Candidate, attempt: Attempt, probe: bool, resp: aiohttp.ClientResponse | None,
        err: BastionError, *, caller_limited: bool = False,
    ) -> AttemptFailed:
        """Book a failed attempt. One that ran out of the caller's own shorter limit (``caller_limited``)
        says nothing about the deployment: no breaker, failure-rate window or latency estimate sees it."""
        dep = cand.deployment
        attempt.ended_at = ctx.now()
        attempt.outcome = "timeout" if isinstance(err, UpstreamTimeout) else "error"
        attempt.error, attempt.error_code = err.message, err.code
        if isinstance(err, UpstreamError) and err.upstream_status is not None:
            attempt.status = err.upstream_status
        if resp is not None:
            resp.close()
        self.router.stats.end(dep.id)
        if not caller_limited:
            self.router.stats.observe_failure(dep.id, attempt.ended_at - attempt.started_at)
        kind = classify(err)
        if counts_against_breaker(err, kind, caller_limited=caller_limited):
            self.background.spawn(self.breakers.record(dep.id, cand.route.policy.breaker, ok=False, probe=probe))
        elif probe:
            self.background.spawn(self.breakers.release_probe(dep.id))
        return AttemptFailed(err, cand, kind, caller_limited=caller_limited)

    # ---- after a stream ----------------------------------------------------------------------
    def stream_finished(self, ready: Ready, usage_tokens: int) -> None:
        """Account for a streamed attempt once its stream is over (called from the request's finish).

        A stream the client abandoned says nothing about the deployment: it neither opens nor closes
        the breaker (a probe's slot is just freed). Nor does one cut by the caller's own limit: a
        chunk-gap or total timeout its ``x-bastion-timeout-*`` header made shorter than the alias's."""
        dep = ready.cand.deployment
        self.router.stats.end(dep.id)
        outcome = ready.attempt.outcome
        breaker = ready.cand.route.policy.breaker
        t = ready.timeouts
        if outcome == "error" and ready.attempt.error_code == "upstream_timeout" and t is not None and t.caller:
            outcome = "caller_limited" if t.mid_stream() in t.caller else outcome
        if outcome in ("ok", "error", "timeout"):
            self.background.spawn(self.breakers.record(dep.id, breaker, ok=outcome == "ok", probe=ready.probe))
        elif ready.probe:
            self.background.spawn(self.breakers.release_probe(dep.id))
        if dep.tpm is not None:
            self.background.spawn(self.limits.settle(dep.id, dep.tpm, ready.est_tokens, usage_tokens))

    def settle_tokens(self, dep: Any, estimated: int, actual: int) -> None:
        self.background.spawn(self.limits.settle(dep.id, dep.tpm, estimated, actual))

    # ---- when nothing answered ---------------------------------------------------------------
    def _summary(self, ctx: RequestContext, failures: list[AttemptFailed], dl: Deadlines) -> BastionError:
        skipped = [a for a in ctx.attempts if not a.sent]
        if dl.remaining() <= _DEADLINE_SLACK_S:  # timers may fire a hair before the deadline they serve
            trail = "; ".join(f"{a.deployment}: {a.error}" for a in ctx.attempts if a.outcome != "ok")
            if failures:
                return UpstreamTimeout(
                    f"the request's total timeout ran out after {len(failures)} attempt(s) ({trail})")
            return UpstreamTimeout("the request's total timeout ran out before any attempt could be made"
                                   + (f" ({trail})" if trail else ""))
        if not failures:
            if skipped and all(a.error_code == "breaker_open" for a in skipped):
                names = ", ".join(sorted({a.deployment for a in skipped}))
                return UpstreamError(
                    f"every deployment of this model ({names}) is failing and its circuit breaker is open; "
                    "try again in a few seconds", status=503, code="circuit_open", headers={"retry-after": "1"})
            if skipped and all(a.error_code == "rate_limited" for a in skipped):
                return UpstreamError(
                    "every deployment of this model is at its configured requests-per-minute limit",
                    status=429, code="deployment_rate_limited", headers={"retry-after": "1"})
            reasons = "; ".join(a.error or "" for a in skipped) or "no deployment could be tried"
            return UpstreamError(f"no attempt could be made: {reasons}", status=503, code="upstream_unavailable")
        last = failures[-1].error
        if len(failures) == 1 and not skipped:
            return last  # one attempt, one failure: the client sees exactly what went wrong
        trail = "; ".join(f"{a.deployment}: {a.error}" for a in ctx.attempts if a.outcome != "ok")
        n = len(failures)
        head = "the only attempt failed" if n == 1 else f"all {n} attempts failed"
        if all(f.caller_limited for f in failures):
            return UpstreamTimeout(f"{head} within this request's own x-bastion-timeout-* limits, shorter than the "
                                   f"model's configured timeouts; send a longer limit, or none ({trail})")
        if all(f.error.code == "upstream_rate_limited" for f in failures):
            return UpstreamError(f"{head}, rate limited upstream ({trail})", status=429,
                                 code="upstream_rate_limited", headers=last.headers)
        return UpstreamError(f"{head}; no deployment of this model could answer ({trail})", status=503,
                             code="upstreams_failed", headers={"retry-after": "1"})


def _filtered_answer(ready: Ready, targets: tuple[str, ...]) -> AttemptFailed | None:
    """A 200 answer the upstream's content filter cut (``finish_reason: content_filter``, Anthropic
    ``stop_reason: refusal``), when the alias re-routes such refusals."""
    if not targets:
        return None
    data = ready.data
    choices = found if isinstance(found := data.get("choices"), list) else []
    reasons = {c.get("finish_reason") for c in choices if isinstance(c, dict)} | {data.get("stop_reason")}
    if not reasons & {"content_filter", "refusal"}:
        return None
    ready.attempt.outcome, ready.attempt.error_code = "error", "content_filter"
    ready.attempt.error = "the upstream's content filter refused the answer (finish_reason content_filter)"
    err = UpstreamError(ready.attempt.error, status=400, code="content_filter", upstream_status=400)
    return AttemptFailed(err, ready.cand, Failure.CONTENT_FILTER)


def _estimate_tokens(body: dict[str, Any]) -> int:
    """A cheap upper-side guess of a request's tokens for TPM windows (settled with the real usage)."""
    prompt = body.get("messages") or body.get("input") or ""
    size = len(orjson.dumps(prompt)) if not isinstance(prompt, str) else len(prompt)
    out = body.get("max_tokens") or body.get("max_completion_tokens") or 0
    return size // 4 + (out if isinstance(out, int) else 0)


def _sent(ctx: RequestContext) -> int:
    return sum(1 for a in ctx.attempts if a.outcome != "skipped")


def _parse_body(raw: bytes, dep: str) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamUnavailable(
            f"deployment {dep!r} answered with malformed JSON ({len(raw)} bytes)", code="upstream_malformed"
        ) from None
    if not isinstance(data, dict):
        raise UpstreamUnavailable(f"deployment {dep!r} answered with a non-object JSON body")
    return data


_SKIP_TEXT = {
    "breaker_open": "circuit breaker of {dep!r} is open",
    "rate_limited": "{dep!r} is at its requests-per-minute limit",
    "retry_budget": "retry budget of {dep!r} is spent",
    "retry_after_too_long": "{dep!r} asked to wait longer than retry.max_retry_after_s",
    "deadline": "not enough time left before the total timeout to retry {dep!r}",
}

__all__ = ["AttemptFailed", "Exhausted", "Executor", "Ready"]
