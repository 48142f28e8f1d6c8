"""Provider rate limits per deployment (requests and tokens per minute), kept in ``state/`` windows.

A deployment at its limit is skipped, not called: the provider would answer 429 anyway.
"""

from __future__ import annotations

from bastion.state import State

_MINUTE = 60.0


class DeploymentLimits:
    def __init__(self, state: State) -> None:
        self.state = state

    async def admit(self, dep: str, rpm: int | None, tpm: int | None, tokens: int) -> bool:
        """Count one request of about ``tokens`` tokens against ``dep``'s minute, or refuse it."""
        if rpm is None and tpm is None:
            return True
        # Each window is checked and added in one atomic step (window_add_if), so replicas sharing the state
        # never admit more than the limit between them; a request the token window refuses is given back.
        st = self.state
        if rpm is not None and await st.window_add_if(f"rl:{dep}:req", 1, _MINUTE, rpm) is None:
            return False
        if tpm is not None and await st.window_add_if(f"rl:{dep}:tok", tokens, _MINUTE, tpm) is None:
            if rpm is not None:
                await st.window_add(f"rl:{dep}:req", -1, _MINUTE)
            return False
        return True

    async def settle(self, dep: str, tpm: int | None, estimated: int, actual: int) -> None:
        """Correct the token window once the real usage is known."""
        if tpm is not None and actual != estimated:
            await self.state.window_add(f"rl:{dep}:tok", actual - estimated, _MINUTE)
